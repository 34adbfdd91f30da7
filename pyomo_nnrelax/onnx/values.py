"""The values a graph is read into, and how a layer is closed.

Every tensor met while reading a graph is either a *constant* (a numpy array in its ONNX
dtype) or an :class:`Affine` value: an affine map of the current layer's input, stored as one
float64 array of shape ``(*sample_shape, n_in + 1)`` whose last axis holds the coefficients
and, in the final slot, the constant term.  All live Affine values are maps of the *same*
layer input, so a skip connection (Add, Sub, Sum, Concat of data) just adds or stacks arrays.

Tie tags.  An Affine also carries, per coefficient (``coef[..., :-1]``), ``src`` and ``mult``:
``src == -1`` (:data:`FIXED`) is a fixed coefficient (structure: zeros, selections, skip-path
identities, the slopes of a LeakyReLU); ``src == k >= 0`` means ``coef == mult * theta[k]`` for
the reader's global parameter ``k`` (an entry of a graph initializer used as a weight);
``src == -2`` (:data:`FREE`) a coefficient whose structure was lost (e.g. two weight tensors
composed without an activation between them), its own parameter.  ``src=None`` means all
fixed.  A closed layer's :class:`~pyomo_nnrelax.ties.WeightTie` is made from them
(:func:`layer_tie`); biases are always free.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

#: ``src`` of a fixed coefficient.
FIXED = -1


#: ``src`` of a coefficient that is its own parameter (its sharing structure was lost).
FREE = -2


@dataclass(frozen=True)
class Affine:
    """A data-dependent tensor: ``value[idx] = coef[idx, :-1] @ x + coef[idx, -1]``.

    ``x`` is the flattened input of the layer being built; ``fresh`` is True for a plain
    selection of it (the graph input, or a value right after a layer was closed).  ``src`` and
    ``mult`` (shape ``coef.shape[:-1] + (n_in,)``, or None: all fixed) are the tie tags of the
    module docstring.
    """

    coef: np.ndarray
    fresh: bool = False
    src: np.ndarray | None = None
    mult: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.src is None:
            object.__setattr__(self, "mult", None)
            return
        src = np.array(self.src, dtype=np.int64)
        mult = np.array(self.mult, dtype=np.float64)
        src[(src != FIXED) & (mult == 0.0)] = FIXED  # identically zero: nothing to train
        if not np.any(src != FIXED):
            src = mult = None
        object.__setattr__(self, "src", src)
        object.__setattr__(self, "mult", mult)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.coef.shape[:-1]

    @property
    def n_in(self) -> int:
        return self.coef.shape[-1] - 1

    @property
    def tagged(self) -> bool:
        """Whether some coefficient depends on a parameter (is not fixed)."""
        return self.src is not None

    def tags(self) -> tuple[np.ndarray, np.ndarray]:
        """``(src, mult)`` as full arrays, also when all coefficients are fixed."""
        if self.src is None:
            shape = self.coef.shape[:-1] + (self.n_in,)
            return np.full(shape, FIXED, dtype=np.int64), np.zeros(shape)
        return self.src, self.mult

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """``(matrix, offset)`` over the flattened tensor."""
        rows = self.coef.reshape(-1, self.coef.shape[-1])
        return rows[:, :-1], rows[:, -1]

    def apply(self, fn, fresh: bool = False) -> Affine:
        """The value with ``fn`` (a reshape, transpose, broadcast, index...) applied to the
        coefficient array and the tags alike; ``fn`` must keep the last axis in place."""
        if self.src is None:
            return Affine(fn(self.coef), fresh)
        return Affine(fn(self.coef), fresh, fn(self.src), fn(self.mult))

    def reshaped(self, shape: tuple[int, ...]) -> Affine:
        return self.apply(lambda a: a.reshape(*shape, a.shape[-1]), self.fresh)

    def take(self, flat_index: np.ndarray) -> Affine:
        """The entries at flat positions ``flat_index``, as a 1-D value."""
        return self.apply(lambda a: a.reshape(-1, a.shape[-1])[flat_index])


Value = np.ndarray | Affine


def identity_value(shape: tuple[int, ...]) -> Affine:
    """The affine value of a fresh layer input of the given sample shape."""
    return selection(0, shape, prod(shape))


def selection(offset: int, shape: tuple[int, ...], n_in: int) -> Affine:
    """Coordinates ``offset, offset + 1, ...`` of a layer input of width ``n_in``."""
    n = prod(shape)
    coef = np.zeros((n, n_in + 1))
    coef[np.arange(n), offset + np.arange(n)] = 1.0
    return Affine(coef.reshape(*shape, n_in + 1), fresh=True)


def constant_value(array: np.ndarray, n_in: int) -> Affine:
    """A constant (sample-shaped) as an Affine value with zero coefficients."""
    array = np.asarray(array, dtype=np.float64)
    coef = np.zeros((*array.shape, n_in + 1))
    coef[..., -1] = array
    return Affine(coef)


def scale_shift(value: Affine, scale, shift) -> Affine:
    """``scale * value + shift`` elementwise (both broadcastable to the value's sample shape)."""
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), value.shape)[..., None]
    coef = value.coef * scale
    coef[..., -1] += np.broadcast_to(shift, value.shape)
    if value.src is None:
        return Affine(coef)
    return Affine(coef, False, value.src, value.mult * scale)


def linear_sum(terms: list[tuple[float | np.ndarray, Affine]]) -> Affine:
    """``sum factor * value`` of values of one sample shape, with tags combined.

    Per coefficient: free if a term is free; else, if the only nonzero terms are multiples of
    one parameter, that parameter with the summed factor; fixed if all terms are fixed; free
    if fixed and tagged terms (or two parameters) mix.
    """
    scaled = [scale_shift(v, f, 0.0) for f, v in terms]
    coef = sum(v.coef for v in scaled)
    if not any(v.tagged for v in scaled):
        return Affine(coef)
    src = np.stack([v.tags()[0] for v in scaled])
    mult = np.stack([v.tags()[1] for v in scaled])
    value = np.stack([v.coef[..., :-1] for v in scaled])
    par = src >= 0
    n_fixed = ((src == FIXED) & (value != 0.0)).sum(axis=0)
    lo = np.where(par, src, np.iinfo(np.int64).max).min(axis=0)
    hi = np.where(par, src, -1).max(axis=0)
    one = par.any(axis=0) & (lo == hi) & (n_fixed == 0) & ~(src == FREE).any(axis=0)
    out_src = np.where(one, hi, np.where((src != FIXED).any(axis=0), FREE, FIXED))
    out_mult = np.where(one, (mult * par).sum(axis=0), (out_src == FREE).astype(np.float64))
    return Affine(coef, False, out_src, out_mult)


def concatenate(parts: list[Affine], axis: int = 0) -> Affine:
    """The values joined along sample axis ``axis`` (>= 0), tags and all."""
    coef = np.concatenate([p.coef for p in parts], axis=axis)
    if not any(p.tagged for p in parts):
        return Affine(coef)
    tags = [p.tags() for p in parts]
    src = np.concatenate([t[0] for t in tags], axis=axis)
    return Affine(coef, False, src, np.concatenate([t[1] for t in tags], axis=axis))


def expand(value: Affine, shape: tuple[int, ...]) -> Affine:
    """Broadcast a data tensor to a larger sample shape by repeating rows of its map."""
    if shape == value.shape:
        return value
    return value.apply(lambda a: np.broadcast_to(a, (*shape, a.shape[-1])).copy())


def contract_tags(
    a: np.ndarray, p: np.ndarray | None, a_mult: np.ndarray | None, value: Affine, d: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Tags of ``a @ d`` where ``d`` (K, J) are coefficients of ``value`` (rows over K).

    ``a`` (N, K) is the op's matrix; ``p`` (N, K) its parameter ids (-1 fixed, -2 free; None:
    all fixed) with ``a == a_mult * theta[p]`` where ``p >= 0``.  An output coefficient keeps a
    parameter when exactly one product term contributes to it and that term is a fixed
    factor times a parameter; it is fixed when all terms are fixed, else free.
    """
    if p is None and not value.tagged:
        return None, None
    d_src, d_mult = value.tags()
    d_src = d_src.reshape(d.shape)
    d_mult = d_mult.reshape(d.shape)
    p = np.full(a.shape, FIXED, dtype=np.int64) if p is None else p
    a_mult = np.zeros(a.shape) if a_mult is None else a_mult
    connected = ((a != 0.0) | (p != FIXED)).astype(np.float64)
    a_fix = connected * (p == FIXED)
    a_par = (p >= 0).astype(np.float64)
    d_fix = ((d_src == FIXED) & (d != 0.0)).astype(np.float64)
    n_fixed = a_fix @ d_fix
    n_par = a_par @ d_fix
    ids = (a_par * (p + 1)) @ d_fix - 1
    mult = (a_mult * a_par) @ (d * d_fix)
    n_free = np.zeros_like(n_par)
    if np.any(p == FREE):
        a_free = (p == FREE).astype(np.float64)
        n_free += a_free @ (d_fix + (d_src != FIXED))
    if value.tagged:  # terms through the value's own parameters
        d_par = (d_src >= 0).astype(np.float64)
        n_free += a_par @ d_par + connected @ (d_src == FREE).astype(np.float64)
        n_par += a_fix @ d_par
        ids += a_fix @ (d_par * (d_src + 1))
        mult += (a * a_fix) @ (d_mult * d_par)
    one = (n_par == 1) & (n_free == 0) & (n_fixed == 0)
    src = np.where(one, np.rint(ids), np.where((n_par > 0) | (n_free > 0), FREE, FIXED))
    src = src.astype(np.int64)
    return src, np.where(one, mult, (src == FREE).astype(np.float64))


def apply_matrix(
    value: Affine,
    matrix: np.ndarray,
    params: np.ndarray | None = None,
    mult: np.ndarray | None = None,
) -> Affine:
    """``matrix @ value`` over the first axis of the value's (..., K, rest) map.

    ``value`` has sample shape ``(K, *rest)``; ``matrix`` is (N, K).  ``params`` gives the
    global parameter number of each matrix entry (-1 fixed, -2 free; None: all fixed), with
    ``matrix == mult * theta[params]`` where tied.
    """
    k, rest, n_cols = value.shape[0], value.shape[1:], value.coef.shape[-1]
    if not rest and not value.tagged:
        fast = _apply_to_selection(value, matrix, params, mult)
        if fast is not None:
            return fast
    coef = (matrix @ value.coef.reshape(k, -1)).reshape(matrix.shape[0], *rest, n_cols)
    d = value.coef[..., :-1].reshape(k, -1)
    src, tag_mult = contract_tags(matrix, params, mult, value, d)
    if src is None:
        return Affine(coef)
    shape = (matrix.shape[0], *rest, n_cols - 1)
    return Affine(coef, False, src.reshape(shape), tag_mult.reshape(shape))


def _apply_to_selection(
    value: Affine, matrix: np.ndarray, params: np.ndarray | None, mult: np.ndarray | None
) -> Affine | None:
    """:func:`apply_matrix` of an untagged 1-D value in which each layer input feeds at most
    one entry (the graph input, or the outputs of a closed layer, possibly scaled), by
    indexing instead of matrix products: memory and time grow with the result, not with
    (entries x inputs) products.  None when the value is not of that kind."""
    d = value.coef[:, :-1]
    nonzero = d != 0.0
    if nonzero.sum(axis=0).max(initial=0) > 1:
        return None
    row = nonzero.argmax(axis=0)  # the entry each input feeds (0 where it feeds none)
    used = nonzero.any(axis=0)
    factor = np.where(used, d[row, np.arange(d.shape[1])], 0.0)
    coef = np.empty((matrix.shape[0], value.coef.shape[1]))
    coef[:, :-1] = matrix[:, row] * factor
    coef[:, -1] = matrix @ value.coef[:, -1]
    if params is None:
        return Affine(coef)
    src = np.where(used, params[:, row], FIXED)
    tag_mult = np.where(src >= 0, mult[:, row] * factor, (src == FREE).astype(np.float64))
    return Affine(coef, False, src, tag_mult)
