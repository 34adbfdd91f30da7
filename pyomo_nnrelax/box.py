"""The input box: the region of inputs over which every bound, formulation and regularizer works.

One type, :class:`InputBox`, carries it from the edge (an argument, a CLI option, ONNX metadata,
the data's bounding box) to the core.  Two functions decide everything about it:

* :func:`as_input_box` reads what a user passed.  A sequence of ``(lo, hi)`` pairs, one per
  input, is the one way to give a box positionally; lower and upper arrays are given by name,
  ``InputBox(lower=..., upper=...)``.  The old form ``(lower_array, upper_array)`` is still
  read where it has only one reading; an input that can be read both ways (for two inputs, a
  2 x 2 array whose two readings are different boxes) raises :class:`InputBoundsError` naming
  both readings instead of guessing.
* :func:`resolve_box` decides which box applies: the one given, else the one the network
  carries (e.g. from ONNX metadata), else (training only) the data's bounding box.

>>> InputBox.from_pairs([(-2, 2), (0, 1)])
InputBox(lower=[-2.0, 0.0], upper=[2.0, 1.0])
>>> as_input_box([(-1.5, -1.0), (1.0, 1.5)], 2)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pyomo_nnrelax.errors.InputBoundsError: input_bounds: ... can be read two ways for 2 inputs: ...
>>> as_input_box([(-2, 2), (-2, 2)], 2)    # the other reading would be a single point
InputBox(lower=[-2.0, -2.0], upper=[2.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputBoundsError

PAIRS, ARRAYS = "(lo, hi) pairs", "(lower, upper) arrays"


@dataclass(frozen=True, eq=False, init=False)
class InputBox:
    """A box ``lower <= x <= upper`` over the flattened input (finite, ``lower <= upper``).

    ``lo, hi = box``, ``box[0]`` and ``box[1]`` work, so it stands wherever the
    ``(lower, upper)`` pair of 0.1 did.

    Parameters
    ----------
    lower, upper : array-like (n_inputs,)
    """

    lower: np.ndarray
    upper: np.ndarray

    def __init__(self, lower, upper) -> None:
        lo, hi = _floats(lower, "lower"), _floats(upper, "upper")
        if lo.shape != hi.shape:
            raise InputBoundsError(
                f"lower has {lo.size} entries and upper {hi.size}; they must match"
            )
        _check_values(lo, hi)
        for name, array in (("lower", lo), ("upper", hi)):
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    @classmethod
    def from_pairs(cls, pairs) -> InputBox:
        """The box of one ``(lo, hi)`` pair per input."""
        arr = _array(pairs)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputBoundsError(f"expected (lo, hi) pairs, got an array of shape {arr.shape}")
        return cls(arr[:, 0], arr[:, 1])

    @classmethod
    def uniform(cls, lo: float, hi: float, n_inputs: int) -> InputBox:
        """``[lo, hi]`` for every one of ``n_inputs`` inputs."""
        return cls(np.full(n_inputs, lo, dtype=np.float64), np.full(n_inputs, hi, dtype=np.float64))

    @classmethod
    def around(cls, X) -> InputBox:
        """The bounding box of the rows of ``X`` (n, n_inputs)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise InputBoundsError(f"need a non-empty (n, n_inputs) array, got shape {X.shape}")
        return cls(X.min(axis=0), X.max(axis=0))

    @property
    def n_inputs(self) -> int:
        return self.lower.size

    @property
    def center(self) -> np.ndarray:
        return (self.lower + self.upper) / 2.0

    def pairs(self) -> list[tuple[float, float]]:
        """One ``(lo, hi)`` pair of Python floats per input."""
        return list(zip(self.lower.tolist(), self.upper.tolist(), strict=True))

    def contains(self, X, tol: float = 0.0) -> np.ndarray:
        """Per row of ``X`` (n, n_inputs): whether it lies in the box (within ``tol``)."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return np.all((X >= self.lower - tol) & (X <= self.upper + tol), axis=1)

    def covers(self, other: InputBox) -> bool:
        """Whether ``other`` lies inside this box (bounds valid here are valid there)."""
        return bool(np.all(self.lower <= other.lower) and np.all(other.upper <= self.upper))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniform points of the box, shape (n, n_inputs)."""
        return self.lower + (self.upper - self.lower) * rng.random((n, self.n_inputs))

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.lower, self.upper))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> np.ndarray:
        return (self.lower, self.upper)[index]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, InputBox)
            and np.array_equal(self.lower, other.lower)
            and np.array_equal(self.upper, other.upper)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"InputBox(lower={self.lower.tolist()}, upper={self.upper.tolist()})"


def as_input_box(value, n_inputs: int, what: str = "input_bounds") -> InputBox:
    """Read ``value`` as the box of ``n_inputs`` inputs (see the module docstring).

    Accepts an :class:`InputBox`, ``n_inputs`` ``(lo, hi)`` pairs (shape (n_inputs, 2)), or
    ``(lower, upper)`` arrays (shape (2, n_inputs)) where that is the only reading.  Raises
    :class:`InputBoundsError` naming ``what`` when it is missing, of the wrong size, not
    finite, inverted, or readable two ways.
    """
    if value is None:
        raise InputBoundsError(
            f"no input bounds given: all {n_inputs} inputs need finite (lo, hi) bounds"
        )
    if isinstance(value, InputBox):
        if value.n_inputs != n_inputs:
            raise InputBoundsError(
                f"{what} has {value.n_inputs} inputs, the network has {n_inputs}"
            )
        return value
    arr = _array(value)
    readings = {}
    if arr.shape == (n_inputs, 2) or (n_inputs == 1 and arr.shape == (2,)):
        readings[PAIRS] = (arr.reshape(-1, 2)[:, 0], arr.reshape(-1, 2)[:, 1])
    if arr.shape == (2, n_inputs):
        readings[ARRAYS] = (arr[0], arr[1])
    if not readings:
        raise InputBoundsError(
            f"{what} has shape {arr.shape}; expected {n_inputs} (lo, hi) pairs, "
            f"i.e. shape ({n_inputs}, 2), or InputBox(lower=..., upper=...)"
        )
    try:
        return _one_reading(readings, arr)
    except InputBoundsError as exc:
        raise InputBoundsError(f"{what}: {exc}") from None


def resolve_box(given, network, data=None) -> InputBox:
    """The box that applies to ``network``: ``given`` (any form :func:`as_input_box` reads),
    else the box the network carries, else the bounding box of ``data`` (n, n_inputs) when
    given (training from data), else :class:`InputBoundsError`.

    The block, the trainer, bound tightening, the command line and sweeps all decide here.
    """
    n_inputs = network.n_inputs
    if given is not None:
        return as_input_box(given, n_inputs)
    if network.input_bounds is not None:
        return network.input_bounds
    if data is not None:
        return InputBox.around(data)
    raise InputBoundsError(
        f"no input bounds: pass input_bounds= for all {n_inputs} inputs "
        f"(inputs 0..{n_inputs - 1} lack bounds; the network, e.g. its ONNX metadata, "
        f"carries none)"
    )


def within_variable_bounds(
    box: InputBox | None, lower: Sequence[float | None], upper: Sequence[float | None], names
) -> InputBox:
    """The box of a network whose inputs are the user's own variables: ``box`` (given or
    carried by the network; None when there is neither) intersected with the variables' own
    bounds ``lower``/``upper`` (None: unbounded on that side).

    Every point the variables can take inside ``box`` stays in the result, so the bounds and
    the formulation computed over it are valid for the user's model.  An input bounded by
    neither, or whose two ranges do not meet, is an :class:`InputBoundsError` naming the
    variable (``names[i]``).

    >>> within_variable_bounds(None, [0, 0], [1, None], ["y[1]", "y[2]"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyomo_nnrelax.errors.InputBoundsError: input 1 (variable y[2]) has no upper bound: ...
    >>> within_variable_bounds(InputBox([-2, -2], [2, 2]), [0, None], [1, None], ["a", "b"])
    InputBox(lower=[0.0, -2.0], upper=[1.0, 2.0])
    """
    n = len(names)
    lo = np.array([-np.inf if v is None else float(v) for v in lower])
    hi = np.array([np.inf if v is None else float(v) for v in upper])
    if box is not None:
        lo, hi = np.maximum(lo, box.lower), np.minimum(hi, box.upper)
    for i in range(n):
        for side, value in (("lower", lo[i]), ("upper", hi[i])):
            if not np.isfinite(value):
                raise InputBoundsError(
                    f"input {i} (variable {names[i]}) has no {side} bound: give the variable "
                    "finite bounds, or pass input_bounds= (the network's box is needed for "
                    "its big-M constants)"
                )
        if lo[i] > hi[i]:
            given = "" if box is None else f" and the box [{box.lower[i]:g}, {box.upper[i]:g}]"
            raise InputBoundsError(
                f"input {i} (variable {names[i]}): its bounds [{lower[i]}, {upper[i]}]{given} "
                "do not overlap"
            )
    return InputBox(lo, hi)


def ball_ends(
    X: np.ndarray, eps: float, lower: np.ndarray | None, upper: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The ends of the L-infinity ball of radius ``eps`` around each row of ``X``, clipped
    to the box ``[lower, upper]`` (not clipped when ``lower`` is None): the region a
    verification question, a ball regularizer and a PGD attack all mean by "the ball".

    >>> ball_ends(np.array([[0.05, 0.5]]), 0.1, np.zeros(2), np.ones(2))[0]
    array([[0. , 0.4]])
    """
    lo, hi = X - eps, X + eps
    if lower is None:
        return lo, hi
    return np.clip(lo, lower, upper), np.clip(hi, lower, upper)


def expand_pairs(pairs: Sequence[tuple[float, float]], n_inputs: int) -> InputBox:
    """The box of textual ``--input-bounds``: one pair per input, or one pair for all."""
    if len(pairs) == 1:
        return InputBox.uniform(*pairs[0], n_inputs)
    if len(pairs) != n_inputs:
        raise InputBoundsError(
            f"--input-bounds gives {len(pairs)} pairs but the network has {n_inputs} inputs"
        )
    return InputBox.from_pairs(pairs)


# ---------------------------------------------------------------------- helpers
def _array(value) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputBoundsError(f"input bounds could not be read as numbers: {exc}") from None


def _floats(value, name: str) -> np.ndarray:
    arr = _array(value)
    if arr.ndim > 1:
        raise InputBoundsError(f"{name} must be one value per input, got shape {arr.shape}")
    return arr.reshape(-1).copy()


def _check_values(lo: np.ndarray, hi: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(lo) | ~np.isfinite(hi))
    if bad.size:
        raise InputBoundsError(f"input bounds are not finite for inputs {bad.tolist()}")
    inverted = np.flatnonzero(lo > hi)
    if inverted.size:
        i = int(inverted[0])
        raise InputBoundsError(
            f"input bounds are inverted (lower > upper) for inputs {inverted.tolist()}, "
            f"e.g. input {i}: [{lo[i]}, {hi[i]}]"
        )


def _one_reading(readings: dict, arr: np.ndarray) -> InputBox:
    """The box of the one reading of ``arr``; where it has two that differ, an error.

    Only a 2 x 2 array (two inputs) has two readings.  The pairs reading is taken when the
    other is not a valid box (inverted), or is a single point while the pairs reading is not:
    ``[(-2, 2), (-2, 2)]`` is two pairs, not the point (-2, 2).  Both are taken as one when
    they give the same box.  The (lower, upper) reading is never chosen over a valid pairs
    reading, and an invalid pairs reading is never replaced by the other one: both are errors
    naming the two readings (so ``[(-0.25, -0.25), (0, 0)]``, a point as pairs and a box as
    arrays, and 0.1's ``(-np.ones(2), np.ones(2))`` must say which they mean).
    """
    checked = {}
    for name, (lo, hi) in readings.items():
        try:
            _check_values(lo, hi)
            checked[name] = ((lo, hi), None)
        except InputBoundsError as exc:
            checked[name] = ((lo, hi), exc)
    items = list(checked.items())
    if len(items) == 1 or _same(items[0][1][0], items[1][1][0]):
        (lo, hi), problem = items[0][1]
        if problem is not None:
            raise problem
        return InputBox(lo, hi)
    valid = [(name, box) for name, (box, problem) in items if problem is None]
    if not valid:
        raise items[0][1][1]
    if [name for name, _ in valid] == [PAIRS]:
        return InputBox(*valid[0][1])
    if len(valid) == 2:
        proper = [(name, box) for name, box in valid if not np.array_equal(*box)]
        if [name for name, _ in proper] == [PAIRS]:
            return InputBox(*proper[0][1])
    described = "; ".join(
        f"as {name}, " + (_describe(*box) if problem is None else str(problem))
        for name, (box, problem) in items
    )
    raise InputBoundsError(
        f"{arr.tolist()} can be read two ways for {arr.shape[1]} inputs: {described}. "
        "Say which: InputBox.from_pairs(...) or InputBox(lower=..., upper=...)"
    )


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def _describe(lo: np.ndarray, hi: np.ndarray) -> str:
    return "the box " + " x ".join(f"[{a:g}, {b:g}]" for a, b in zip(lo.tolist(), hi.tolist()))
