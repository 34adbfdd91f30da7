"""Weight sharing and fixed entries of a layer's matrix (convolutions, skip paths, pools).

A network read from a convolutional or residual ONNX graph is folded into layers whose
matrices have structure: one kernel value appears at many positions, padding and skip paths
hold fixed zeros and ones, and a LeakyReLU or a clip repeats rows with fixed factors. A
:class:`WeightTie` records that structure entry by entry of the layer's
:attr:`~pyomo_nnrelax.network.Layer.entries` (the matrix of a dense layer, the stored values
of a sparse one) as ``entry[k] = offset[k] + mult[k] * theta[index[k]]`` where ``index >=
0``, and ``entry[k] = fixed[k]`` where ``index == -1``. The same class ties a layer's bias
to the parameters it was read from (a convolution's bias, per channel). The trainer updates
``theta`` (its gradient is the tied sum of the matrix's gradient), so a trained network
keeps the architecture it was read with (``docs/design.md``, "Tied weights").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidNetworkError

#: ``index`` value of an entry the trainer leaves as it is.
FIXED = -1


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class WeightTie:
    """How a layer's matrix is made of shared parameters and fixed values.

    Parameters
    ----------
    index : int array, shaped like the layer's entries ((n_out, n_in) dense, (nnz,) sparse)
        Parameter of each entry, numbered 0, 1, ..., n-1; :data:`FIXED` (-1) where the entry
        is fixed.
    mult : float array, same shape
        Factor of each tied entry (e.g. a folded batch normalisation, or a LeakyReLU's
        slope); nonzero where tied, ignored where fixed.
    fixed : float array, same shape
        The value of each fixed entry (zeros of padding, ones of a skip path); ignored where
        tied.
    offset : float array, same shape, optional
        A constant added to each tied entry (a folded batch normalisation's shift of a
        bias); default zero, ignored where fixed.
    """

    index: np.ndarray
    mult: np.ndarray
    fixed: np.ndarray
    offset: np.ndarray | None = None
    # the tied entries as flat positions, their parameters and factors: what every training
    # step gathers and scatters, computed once
    _entries: np.ndarray = field(init=False, repr=False)
    _params: np.ndarray = field(init=False, repr=False)
    _factors: np.ndarray = field(init=False, repr=False)
    _offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index = np.array(self.index, dtype=np.int64, copy=True)
        mult = np.array(self.mult, dtype=np.float64, copy=True)
        fixed = np.array(self.fixed, dtype=np.float64, copy=True)
        offset = np.zeros(index.shape) if self.offset is None else self.offset
        offset = np.array(np.broadcast_to(offset, index.shape), dtype=np.float64)
        if index.ndim not in (1, 2) or mult.shape != index.shape or fixed.shape != index.shape:
            raise InvalidNetworkError(
                f"a weight tie needs 1-D or 2-D index, mult and fixed of one shape, got "
                f"{index.shape}, {mult.shape} and {fixed.shape}"
            )
        if np.any(index < FIXED):
            raise InvalidNetworkError("a weight tie's index holds values below -1")
        tied = index != FIXED
        mult[~tied], fixed[tied], offset[~tied] = 0.0, 0.0, 0.0
        if np.any(tied & ~(np.abs(mult) > 0.0)) or not np.all(np.isfinite(mult)):
            raise InvalidNetworkError("a tied weight entry has a zero or non-finite factor")
        if not (np.all(np.isfinite(fixed)) and np.all(np.isfinite(offset))):
            raise InvalidNetworkError("a weight tie's fixed values are not all finite")
        used = np.unique(index[tied])
        if used.size and not np.array_equal(used, np.arange(used.size)):
            raise InvalidNetworkError("a weight tie's parameters must be numbered 0, 1, ..., n-1")
        object.__setattr__(self, "index", _read_only(index))
        object.__setattr__(self, "mult", _read_only(mult))
        object.__setattr__(self, "fixed", _read_only(fixed))
        object.__setattr__(self, "offset", _read_only(offset))
        entries = np.flatnonzero(tied)
        object.__setattr__(self, "_entries", entries)
        object.__setattr__(self, "_params", index.reshape(-1)[entries])
        object.__setattr__(self, "_factors", mult.reshape(-1)[entries])
        object.__setattr__(self, "_offsets", offset.reshape(-1)[entries])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the entries it describes."""
        return self.index.shape

    @property
    def n_params(self) -> int:
        return int(self._params.max(initial=FIXED)) + 1

    @property
    def tied(self) -> np.ndarray:
        """Boolean mask of the entries that depend on a parameter."""
        return self.index != FIXED

    def scaled(self, factor: np.ndarray, shift: np.ndarray | float = 0.0) -> WeightTie:
        """The tie of ``factor * entries + shift`` (same parameters; ``factor`` and ``shift``
        broadcast to the entries, e.g. :func:`~pyomo_nnrelax.matrices.per_entry` of a row
        factor)."""
        factor = np.broadcast_to(np.asarray(factor, dtype=np.float64), self.shape)
        shift = np.broadcast_to(np.asarray(shift, dtype=np.float64), self.shape)
        return WeightTie(
            self.index, self.mult * factor, self.fixed * factor + shift,
            self.offset * factor + shift,
        )  # fmt: skip

    def gathered(self, rows: np.ndarray, cols: np.ndarray) -> WeightTie:
        """The tie of a dense layer's entries at ``(rows, cols)``: the tie of the sparse
        layer that stores exactly those entries."""
        parts = (a[rows, cols] for a in (self.index, self.mult, self.fixed, self.offset))
        return WeightTie(*parts)

    def scattered(self, pattern, shape: tuple[int, int]) -> WeightTie:
        """The tie of a sparse layer's entries (``pattern``, its CSR weight) over the dense
        matrix of ``shape``: entries outside the pattern are fixed zeros."""
        index = np.full(shape, FIXED, dtype=np.int64)
        mult, fixed, offset = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        rows = np.repeat(np.arange(shape[0]), np.diff(pattern.indptr))
        pairs = ((index, self.index), (mult, self.mult), (fixed, self.fixed), (offset, self.offset))
        for full, part in pairs:
            full[rows, pattern.indices] = part
        return WeightTie(index, mult, fixed, offset)

    def parameters(self, entries: np.ndarray) -> np.ndarray:
        """The parameters ``theta`` of entries that follow the tie (see :meth:`check`)."""
        theta = np.zeros(self.n_params)
        values = entries.reshape(-1)[self._entries] - self._offsets
        theta[self._params] = values / self._factors
        return theta

    def weight(self, theta: np.ndarray) -> np.ndarray:
        """The entries of parameters ``theta``."""
        out = self.fixed.copy()
        out.reshape(-1)[self._entries] = self._offsets + self._factors * theta[self._params]
        return out

    def gradient(self, grad_entries: np.ndarray) -> np.ndarray:
        """d loss / d theta from d loss / d entries (the chain rule through the tie)."""
        weights = self._factors * grad_entries.reshape(-1)[self._entries]
        return np.bincount(self._params, weights=weights, minlength=self.n_params)

    def check(self, weight: np.ndarray, where: str) -> None:
        """Raise :class:`InvalidNetworkError` unless the entries ``weight`` follow the tie:
        entries that share a parameter agree and fixed entries hold their values."""
        if weight.shape != self.shape:
            raise InvalidNetworkError(
                f"{where}: weight tie of shape {self.shape} does not match the weight's "
                f"entries {weight.shape}"
            )
        rebuilt = self.weight(self.parameters(weight))
        scale = max(1.0, float(np.max(np.abs(weight), initial=0.0)))
        if not np.allclose(rebuilt, weight, rtol=1e-9, atol=1e-12 * scale):
            raise InvalidNetworkError(
                f"{where}: the weight does not follow its tie (entries that share a parameter "
                "differ, or a fixed entry changed); build it with WeightTie.weight"
            )
