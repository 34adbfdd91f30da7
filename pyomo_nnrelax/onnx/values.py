"""The values a graph is read into: data tensors as sparse affine maps of a layer's input.

Every tensor met while reading a graph is either a *constant* (a numpy array in its ONNX
dtype) or an :class:`Affine` value: an affine map ``matrix @ x + offset`` of the current
layer's input ``x``, one row per entry of the tensor (flattened row-major).  ``matrix`` is
sparse, in CSR arrays (``indptr``, ``cols``, ``vals``), and ``offset`` dense, so memory and
time grow with the stored coefficients, not with entries x inputs.  All live values are maps
of the *same* layer input, so a skip connection (Add, Sub, Sum, Concat of data) just adds or
stacks rows.  Reshapes are free; transposes, broadcasts and indexing gather rows.

A row stores the coefficients that are nonzero or that depend on a parameter (a kernel entry
that happens to be zero is still trainable); fixed zeros are never stored.  scipy's own sums
and products drop explicit zeros, so the sums and products here are written on the entry
arrays: every coefficient of a sum (:func:`linear_sum`) or of a product with an op's matrix
(:func:`apply_matrix`) is a sum of *terms*, grouped by (row, column) with a sort, their tie
tags (which parameter of the graph each coefficient and constant term is made of) merged as
:mod:`.tags` says.

Memory.  Every allocation that grows with the stored coefficients is first estimated
(:func:`~.memory.reserve`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from math import prod

import numpy as np
from scipy import sparse

from .memory import reserve
from .tags import FIXED, constant_tags, grouped, product_tags, pruned

#: Bytes per stored coefficient gathered into a new value (positions, columns, values, tags).
ENTRY_BYTES = 64


#: Terms grouped at once by :func:`apply_matrix` (output rows are taken in chunks).
TERMS_PER_CHUNK = 1 << 16


@dataclass(frozen=True, eq=False)
class Affine:
    """A data-dependent tensor of sample shape ``shape``: entry ``e`` (flat) is
    ``vals[p] @ x[cols[p]] + offset[e]`` over positions ``p`` in ``indptr[e]:indptr[e + 1]``.

    ``n_in`` is the width of the layer input ``x``; ``fresh`` is True for a plain selection of
    it (the graph input, or a value right after a layer was closed).  ``src`` and ``mult``
    (one per stored coefficient, or None: all fixed) are the tie tags of the module docstring,
    ``offset_src`` and ``offset_mult`` (one per entry, or None) those of the constant terms.
    """

    shape: tuple[int, ...]
    indptr: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    offset: np.ndarray
    n_in: int
    src: np.ndarray | None = None
    mult: np.ndarray | None = None
    offset_src: np.ndarray | None = None
    offset_mult: np.ndarray | None = None
    fresh: bool = False

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def nnz(self) -> int:
        return self.cols.size

    @property
    def tagged(self) -> bool:
        """Whether some coefficient depends on a parameter (is not fixed)."""
        return self.src is not None

    @property
    def has_parameters(self) -> bool:
        """Whether some coefficient or constant term depends on a parameter."""
        return self.src is not None or self.offset_src is not None

    def tags(self) -> tuple[np.ndarray, np.ndarray]:
        """``(src, mult)`` as full arrays, also when all coefficients are fixed."""
        if self.src is None:
            return np.full(self.nnz, FIXED, dtype=np.int64), np.zeros(self.nnz)
        return self.src, self.mult

    def offset_tags(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offset_src, offset_mult)`` as full arrays, also when all constants are fixed."""
        if self.offset_src is None:
            return np.full(self.size, FIXED, dtype=np.int64), np.zeros(self.size)
        return self.offset_src, self.offset_mult

    def entry_rows(self) -> np.ndarray:
        """The row (flat tensor entry) of every stored coefficient."""
        return np.repeat(np.arange(self.size, dtype=np.int64), np.diff(self.indptr))

    def matrix(self) -> sparse.csr_array:
        """The coefficients as a canonical CSR array (its explicit zeros kept)."""
        csr = sparse.csr_array((self.vals, self.cols, self.indptr), shape=(self.size, self.n_in))
        csr.has_canonical_format = True
        return csr

    def all_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.vals)) and np.all(np.isfinite(self.offset)))

    def reshaped(self, shape: tuple[int, ...]) -> Affine:
        """The same entries in another sample shape (row-major order kept)."""
        assert prod(shape) == self.size, (shape, self.shape)
        return replace(self, shape=tuple(shape))

    def take(self, index: np.ndarray) -> Affine:
        """The value whose entries are this value's flat entries ``index`` (its shape is the
        new sample shape; -1 gives an entry of zero)."""
        index = np.asarray(index, dtype=np.int64)
        flat = index.reshape(-1)
        if flat.size == self.size and np.array_equal(flat, np.arange(self.size)):
            return replace(self, shape=index.shape, fresh=False)
        positions, indptr = _row_positions(self.indptr, flat)
        at, valid = np.maximum(flat, 0), flat >= 0
        offset = np.where(valid, self.offset[at], 0.0)
        tags = [None, None] if self.src is None else [self.src[positions], self.mult[positions]]
        entries = self.cols[positions], self.vals[positions], *tags
        constants = [None, None]
        if self.offset_src is not None:
            constants = [np.where(valid, self.offset_src[at], FIXED), self.offset_mult[at]]
        return _value(index.shape, self.n_in, offset, np.diff(indptr), *entries, *constants)

    def rearranged(self, fn) -> Affine:
        """The value with ``fn`` (a transpose, broadcast, index... of an array of the sample
        shape) applied to its entries."""
        return self.take(fn(np.arange(self.size, dtype=np.int64).reshape(self.shape)))


Value = np.ndarray | Affine


def _row_positions(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the entry arrays of the CSR rows ``rows`` (-1: an empty row), in order,
    and the ``indptr`` of the gathered rows."""
    valid = rows >= 0
    starts = indptr[np.where(valid, rows, 0)]
    lengths = np.where(valid, indptr[np.where(valid, rows, 0) + 1] - starts, 0)
    out = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    reserve(out[-1] * ENTRY_BYTES, f"gathering {out[-1]:,} coefficients")
    positions = np.repeat(starts - out[:-1], lengths) + np.arange(out[-1], dtype=np.int64)
    return positions, out


def _value(
    shape, n_in: int, offset, row_counts, cols, vals, src, mult, offset_src=None, offset_mult=None
) -> Affine:
    """The value with ``row_counts`` stored coefficients per row (``src`` None if all are
    fixed) and constant tags ``offset_src``, ``offset_mult`` (None: all fixed)."""
    indptr = np.zeros(row_counts.size + 1, dtype=np.int64)
    np.cumsum(row_counts, out=indptr[1:])
    if src is not None and not np.any(src != FIXED):
        src = mult = None
    constants = constant_tags(offset_src, offset_mult)
    return Affine(tuple(shape), indptr, cols, vals, offset, n_in, src, mult, *constants)


def _built(shape, n_in: int, offset, rows, cols, vals, src=None, mult=None, *constants) -> Affine:
    """The value with coefficients ``vals`` at ``(rows, cols)`` (sorted, distinct) and tags,
    fixed zeros left out; ``constants``: the constant terms' tags, if any."""
    rows, *entries = pruned(rows, cols, vals, src, mult)
    counts = np.bincount(rows, minlength=prod(shape))
    return _value(shape, n_in, offset, counts, *entries, *constants)


def identity_value(shape: tuple[int, ...]) -> Affine:
    """The affine value of a fresh layer input of the given sample shape."""
    return selection(0, shape, prod(shape))


def selection(offset: int, shape: tuple[int, ...], n_in: int) -> Affine:
    """Coordinates ``offset, offset + 1, ...`` of a layer input of width ``n_in``."""
    n = prod(shape)
    arange = np.arange(n + 1, dtype=np.int64)
    return Affine(
        tuple(shape), arange, offset + arange[:-1], np.ones(n), np.zeros(n), n_in, fresh=True
    )


def constant_value(
    array: np.ndarray, n_in: int, params: np.ndarray | None = None, factor: float = 1.0
) -> Affine:
    """A constant (sample-shaped) as an Affine value with no coefficients; ``params`` (global
    parameter numbers shaped like it) make it trainable: ``array == factor * theta[params]``."""
    array = np.asarray(array, dtype=np.float64)
    empty = np.zeros(array.size + 1, dtype=np.int64)
    value = Affine(array.shape, empty, empty[:0], np.zeros(0), array.reshape(-1).copy(), n_in)
    if params is None:
        return value
    src = np.asarray(params, dtype=np.int64).reshape(-1)
    return replace(value, offset_src=src, offset_mult=np.full(src.size, float(factor)))


def scale_shift(value: Affine, scale, shift) -> Affine:
    """``scale * value + shift`` elementwise (both broadcastable to the value's sample shape)."""
    scale = np.asarray(scale, dtype=np.float64)
    shift = np.broadcast_to(np.asarray(shift, dtype=np.float64), value.shape).reshape(-1)
    if scale.ndim == 0 and scale == 1.0:
        return replace(value, offset=value.offset + shift, fresh=False)
    scale = np.broadcast_to(scale, value.shape).reshape(-1)
    rows = value.entry_rows()
    factor = scale[rows]
    src = value.src
    mult = None if src is None else value.mult * factor
    offset = value.offset * scale + shift
    constants = [value.offset_src, None if value.offset_src is None else value.offset_mult * scale]
    entries = rows, value.cols, value.vals * factor, src, mult
    return _built(value.shape, value.n_in, offset, *entries, *constants)


def _summed_constants(values: list[Affine]) -> tuple:
    """``(offset, offset_src, offset_mult)`` of the sum of the values' constant terms, tags
    merged entry by entry (the module docstring's rule)."""
    offset = sum(v.offset for v in values)
    if all(v.offset_src is None for v in values):
        return offset, None, None
    rows = np.tile(np.arange(values[0].size, dtype=np.int64), len(values))
    src, mult = (np.concatenate(a) for a in zip(*(v.offset_tags() for v in values)))
    vals = np.concatenate([v.offset for v in values])
    *_, src, mult = grouped(1, rows, np.zeros_like(rows), vals, src, mult)
    return offset, src, mult


def linear_sum(terms: list[tuple[float | np.ndarray, Affine]]) -> Affine:
    """``sum factor * value`` of values of one sample shape (factors broadcast to it), with
    tags merged as the module docstring says.  A sum in which one value holds coefficients
    (a bias added to a map) keeps that value's coefficients as they are."""
    scaled = [scale_shift(v, f, 0.0) for f, v in terms]
    first = scaled[0]
    constants = _summed_constants(scaled)
    maps = [v for v in scaled if v.nnz]
    if len(maps) <= 1:
        base = maps[0] if maps else first
        src, mult = constant_tags(*constants[1:])
        return replace(base, offset=constants[0], offset_src=src, offset_mult=mult, fresh=False)
    tagged = any(v.tagged for v in scaled)
    parts = [
        (v.entry_rows(), v.cols, v.vals, *(v.tags() if tagged else (None, None))) for v in scaled
    ]
    joined = [None if p[0] is None else np.concatenate(p) for p in zip(*parts)]
    terms = grouped(first.n_in, *joined)
    return _built(first.shape, first.n_in, constants[0], *terms, *constants[1:])


def _joined_tags(parts: list[Affine], which: str) -> list[np.ndarray | None]:
    """The parts' coefficient tags (``which="tags"``) or constant tags (``"offset_tags"``)
    one after the other, ``[None, None]`` when none is tagged."""
    field = "src" if which == "tags" else "offset_src"
    if all(getattr(p, field) is None for p in parts):
        return [None, None]
    return [np.concatenate(a) for a in zip(*(getattr(p, which)() for p in parts))]


def _stacked(parts: list[Affine]) -> Affine:
    """The values' entries one after the other, as a 1-D value."""
    ends = np.cumsum([p.nnz for p in parts])
    indptr = np.concatenate([[0]] + [p.indptr[1:] + end - p.nnz for p, end in zip(parts, ends)])
    return Affine(
        (sum(p.size for p in parts),),
        indptr,
        np.concatenate([p.cols for p in parts]),
        np.concatenate([p.vals for p in parts]),
        np.concatenate([p.offset for p in parts]),
        parts[0].n_in,
        *_joined_tags(parts, "tags"),
        *_joined_tags(parts, "offset_tags"),
    )


def concatenate(parts: list[Affine], axis: int = 0) -> Affine:
    """The values joined along sample axis ``axis`` (>= 0), tags and all."""
    starts = np.cumsum([0] + [p.size for p in parts])
    index = [s + np.arange(p.size, dtype=np.int64).reshape(p.shape) for s, p in zip(starts, parts)]
    stacked = parts[0].reshaped((parts[0].size,)) if len(parts) == 1 else _stacked(parts)
    return stacked.take(np.concatenate(index, axis=axis))


def expand(value: Affine, shape: tuple[int, ...]) -> Affine:
    """Broadcast a data tensor to a larger sample shape by repeating rows of its map."""
    if tuple(shape) == value.shape:
        return value
    return value.rearranged(lambda a: np.broadcast_to(a, shape))


@dataclass(frozen=True, eq=False)
class OpMatrix:
    """The ``(N, K)`` matrix of an op over the first sample axis of a value, with the global
    parameter of each entry (``params``: :data:`FIXED`, or ``k >= 0`` where ``entry == mult *
    theta[k]``; None: all fixed).

    Dense (``rows`` None: ``vals``, ``params``, ``mult`` are ``(N, K)`` arrays, and an entry
    is stored where it is nonzero or tagged) or sparse (entries ``vals`` at ``(rows, cols)``,
    sorted by row; a repeated pair is summed; no fixed zeros).  ``mult`` comes with
    ``params``.
    """

    shape: tuple[int, int]
    vals: np.ndarray
    params: np.ndarray | None = None
    mult: np.ndarray | None = None
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None

    def _stored(self, start: int, stop: int) -> np.ndarray:
        """Which entries of rows ``start:stop`` of a dense matrix are stored."""
        stored = self.vals[start:stop] != 0.0
        return stored if self.params is None else stored | (self.params[start:stop] != FIXED)

    def terms_per_row(self, counts: np.ndarray) -> np.ndarray:
        """Product terms of each row with a value whose row ``k`` stores ``counts[k]``."""
        if self.rows is not None:
            weights = counts[self.cols].astype(np.float64)
            return np.bincount(self.rows, weights, minlength=self.shape[0]).astype(np.int64)
        step = max(1, TERMS_PER_CHUNK // max(self.shape[1], 1))
        blocks = range(0, self.shape[0], step)
        return np.concatenate(
            [self._stored(s, s + step).astype(np.float64) @ counts for s in blocks] or [[]]
        ).astype(np.int64)

    def block(self, start: int, stop: int) -> tuple[np.ndarray, ...]:
        """``(rows, cols, vals, params, mult)`` of the stored entries of rows ``start:stop``."""
        if self.rows is None:
            rows, cols = np.nonzero(self._stored(start, stop))
            picked = [None if a is None else a[start:stop][rows, cols] for a in self._arrays()]
            return (rows + start, cols, *picked)
        lo, hi = np.searchsorted(self.rows, [start, stop])
        return (
            self.rows[lo:hi],
            self.cols[lo:hi],
            *(None if a is None else a[lo:hi] for a in self._arrays()),
        )

    def _arrays(self) -> tuple[np.ndarray | None, ...]:
        return self.vals, self.params, self.mult

    def times(self, x: np.ndarray) -> np.ndarray:
        """The matrix times ``x`` (K, R)."""
        if self.rows is None:
            return self.vals @ x
        return sparse.csr_array((self.vals, (self.rows, self.cols)), shape=self.shape) @ x


def _products(value: Affine, rows, cols, vals, params, mult) -> tuple:
    """The terms of op entries ``vals`` at ``(rows, cols)`` (``cols``: rows of ``value``)
    times the value's coefficients in those rows: ``(rows, cols, vals, src, mult)``."""
    positions, ptr = _row_positions(value.indptr, cols)
    repeat = np.repeat(np.arange(rows.size, dtype=np.int64), np.diff(ptr))
    d, a = value.vals[positions], vals[repeat]
    out = (rows[repeat], value.cols[positions], a * d)
    if params is None and not value.tagged:
        return (*out, None, None)
    p = np.full(repeat.size, FIXED) if params is None else params[repeat]
    pm = np.zeros(repeat.size) if mult is None else mult[repeat]
    s, dm = (t[positions] for t in value.tags())
    return (*out, *product_tags(p, pm, a, s, dm, d))


def _chunks(per_row: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive row ranges with at most ``limit`` terms each (or a single row)."""
    ends = np.cumsum(per_row)
    start = 0
    while start < per_row.size:
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + limit, side="right")))
        yield start, stop
        start = stop


def _ordered_selection(value: Affine) -> bool:
    """Whether each entry reads at most one input, and later entries later inputs (a fresh
    selection, scaled or sliced): then an op's entries taken in row-major order give its
    product's coefficients sorted and distinct, with nothing to sum."""
    return bool(np.all(np.diff(value.indptr) <= 1) and np.all(np.diff(value.cols) > 0))


def apply_matrix(value: Affine, op: OpMatrix) -> Affine:
    """``op @ value`` over the first sample axis: sample shape ``(K, *rest)`` to ``(N,
    *rest)``, tags merged as the module docstring says.  Output rows are computed in chunks
    of at most :data:`TERMS_PER_CHUNK` terms, so memory grows with the result; the products
    with an ordered selection need no sorting (:func:`_ordered_selection`)."""
    n, k = op.shape
    rest = value.shape[1:]
    r = prod(rest)
    counts = np.diff(value.indptr).reshape(k, r)
    offset, *constants = _constants_through(value, op)
    within = np.arange(r, dtype=np.int64)
    ordered = r == 1 and _ordered_selection(value)
    row_counts, pieces = [np.zeros(0, dtype=np.int64)], []
    for start, stop in _chunks(op.terms_per_row(counts.sum(axis=1)), TERMS_PER_CHUNK):
        rows, cols, *entries = op.block(start, stop)
        if r > 1:  # entry (i, j) acts on every (j, rest) row alike
            rows = (rows[:, None] * r + within).reshape(-1)
            cols = (cols[:, None] * r + within).reshape(-1)
            entries = [None if e is None else np.repeat(e, r) for e in entries]
        terms = _products(value, rows, cols, *entries)
        if not (ordered and np.all(np.diff(rows * k + cols) > 0)):
            terms = grouped(value.n_in, *terms)  # else sorted and distinct already
        rows, *entries = pruned(*terms)
        row_counts.append(np.bincount(rows - start * r, minlength=(stop - start) * r))
        pieces.append(entries)
    entries = _joined(pieces)
    return _value((n, *rest), value.n_in, offset, np.concatenate(row_counts), *entries, *constants)


def _constant_part(value: Affine) -> Affine:
    """The value's constant terms as the coefficients of a one-wide input that is always 1
    (the ones that are nonzero or tagged), with their tags."""
    stored = value.offset != 0.0
    if value.offset_src is not None:
        stored |= value.offset_src != FIXED
    rows = np.flatnonzero(stored)
    tags = [None, None]
    if value.offset_src is not None:
        tags = [value.offset_src[rows], value.offset_mult[rows]]
    cols, zeros = np.zeros(rows.size, dtype=np.int64), np.zeros(value.size)
    return _value(value.shape, 1, zeros, stored.astype(np.int64), cols, value.offset[rows], *tags)


def _constants_through(value: Affine, op: OpMatrix) -> tuple:
    """``(offset, offset_src, offset_mult)`` of ``op @ value``: the product of the constant
    terms, and their tags merged as coefficients are (:func:`_constant_part`) when they or the
    op's entries have parameters."""
    n, k = op.shape
    if value.offset_src is None and (op.params is None or not value.offset.any()):
        return np.asarray(op.times(value.offset.reshape(k, -1))).reshape(-1), None, None
    part = apply_matrix(_constant_part(value), op)
    rows = part.entry_rows()  # at most one coefficient (the input 1) per entry
    offset = np.zeros(part.size)
    offset[rows] = part.vals
    src, mult = np.full(part.size, FIXED, dtype=np.int64), np.zeros(part.size)
    if part.src is not None:
        src[rows], mult[rows] = part.src, part.mult
    return offset, src, mult


def _joined(pieces: list[list]) -> list:
    """The chunks' ``(cols, vals, src, mult)`` joined array by array, each chunk's array let
    go once joined (memory holds the chunks and one joined array, not two copies of all)."""
    if not pieces:
        return [np.zeros(0, dtype=np.int64), np.zeros(0), None, None]
    out = []
    for i in range(len(pieces[0])):
        parts = [piece[i] for piece in pieces]
        out.append(None if parts[0] is None else np.concatenate(parts))
        for piece in pieces:
            piece[i] = None
        del parts
    return out
