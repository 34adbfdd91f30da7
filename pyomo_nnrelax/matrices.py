"""Dense and sparse weight matrices: the few operations every layer needs, written once.

A layer's weight is a dense ``numpy`` array or, for a matrix that is mostly structural zeros
(a convolution, a pool, the identities a skip connection is carried by), a
``scipy.sparse.csr_array`` whose stored entries are the layer's *pattern*: every entry that
is nonzero or that training may make nonzero, explicit zeros included.  The pattern never
changes: training moves the stored values only (:func:`entries`, :func:`with_entries`), so a
sparse layer's parameters, gradients and weight ties are vectors over its stored entries.

Products with sparse matrices cost time and memory in proportion to the stored entries, not
to ``rows x columns`` (``docs/design.md``, "Sparse layers"; ``docs/benchmarks.md`` measures
both forms).  Every function takes either form and returns the same form it was given.

>>> import numpy as np
>>> from scipy.sparse import csr_array
>>> W = as_matrix(csr_array(np.array([[1.0, 0.0], [0.0, -2.0]])))
>>> entries(W)
array([ 1., -2.])
>>> times_transpose(np.array([[1.0, 1.0]]), W)
array([[ 1., -2.]])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

Matrix = np.ndarray | sparse.csr_array

SPARSE_DENSITY = 0.25
"""A matrix with at most this share of stored entries is kept sparse by :func:`choose_form`."""

_GATHER_CHUNK = 1 << 16
"""Entries per chunk of the gathered weight gradient (bounds its scratch memory)."""


def is_sparse(W) -> bool:
    """Whether ``W`` is a sparse matrix (any scipy format)."""
    return not isinstance(W, np.ndarray) and sparse.issparse(W)


def as_matrix(W) -> Matrix:
    """``W`` as float64: a 2-D array, or a canonical CSR array (sorted column indices, no
    duplicate entries, explicit zeros kept: they are part of the pattern)."""
    if not is_sparse(W):
        return np.asarray(W, dtype=np.float64)
    csr = sparse.csr_array(W, dtype=np.float64)
    if not csr.has_canonical_format:
        csr = _canonical(csr)
    return csr


def _canonical(csr: sparse.csr_array) -> sparse.csr_array:
    """Sorted indices and duplicates summed, keeping explicit zeros (scipy's own
    ``sum_duplicates`` would drop them from the pattern)."""
    coo = csr.tocoo()
    rows, cols, values = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    first = np.ones(rows.size, dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    starts = np.flatnonzero(first)
    values = np.add.reduceat(values, starts) if values.size else values
    return from_entries(csr.shape, rows[first], cols[first], values)


def from_entries(shape: tuple[int, int], rows, cols, values) -> sparse.csr_array:
    """The CSR array with ``values`` at ``(rows, cols)``; the pairs must be sorted row by row
    and distinct (every pair is stored, zeros included)."""
    rows = np.asarray(rows, dtype=np.int64)
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    csr = sparse.csr_array(
        (np.asarray(values, dtype=np.float64), np.asarray(cols, dtype=np.int64), indptr),
        shape=shape,
    )
    csr.has_canonical_format = True
    return csr


def choose_form(W, threshold: float = SPARSE_DENSITY) -> Matrix:
    """``W`` sparse when at most ``threshold`` of its entries are stored, else dense."""
    W = as_matrix(W)
    size = W.shape[0] * W.shape[1]
    stored = W.nnz if is_sparse(W) else np.count_nonzero(W)
    if size and stored <= threshold * size:
        return W if is_sparse(W) else as_matrix(sparse.csr_array(W))
    return to_dense(W)


def to_dense(W) -> np.ndarray:
    """``W`` as a dense float64 array."""
    return W.toarray() if is_sparse(W) else np.asarray(W, dtype=np.float64)


def to_sparse(W) -> sparse.csr_array:
    """``W`` as a canonical CSR array (a dense array's zeros are left out of the pattern)."""
    return as_matrix(W if is_sparse(W) else sparse.csr_array(np.asarray(W, dtype=np.float64)))


def entries(W: Matrix) -> np.ndarray:
    """What training updates: a dense matrix itself, a sparse one's stored values."""
    return W.data if is_sparse(W) else W


def with_entries(W: Matrix, values: np.ndarray) -> Matrix:
    """``W``'s pattern with new stored values (a dense matrix: the new matrix)."""
    if not is_sparse(W):
        return np.asarray(values, dtype=np.float64).reshape(W.shape)
    out = sparse.csr_array(
        (np.asarray(values, dtype=np.float64).reshape(-1), W.indices, W.indptr), shape=W.shape
    )
    out.has_canonical_format = True
    return out


def entry_rows(W: sparse.csr_array) -> np.ndarray:
    """The row of every stored entry of a CSR array."""
    return np.repeat(np.arange(W.shape[0], dtype=np.int64), np.diff(W.indptr))


def select_rows(W: Matrix, rows: np.ndarray) -> Matrix:
    """Rows ``rows`` of ``W``, in the same form (a sparse result keeps its explicit zeros)."""
    rows = np.asarray(rows, dtype=np.int64)
    if not is_sparse(W):
        return W[rows]
    starts, ends = W.indptr[rows], W.indptr[rows + 1]
    lengths = ends - starts
    positions = np.repeat(starts - np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths)
    positions = positions + np.arange(lengths.sum())
    new_rows = np.repeat(np.arange(rows.size), lengths)
    return from_entries((rows.size, W.shape[1]), new_rows, W.indices[positions], W.data[positions])


def select_columns(W: Matrix, mask: np.ndarray) -> Matrix:
    """The columns of ``W`` where ``mask`` (bool, one per column) is True, in the same form
    (a sparse result keeps its explicit zeros)."""
    mask = np.asarray(mask, dtype=bool)
    if not is_sparse(W):
        return W[:, mask]
    keep = mask[W.indices]
    new_index = np.cumsum(mask) - 1
    rows = entry_rows(W)[keep]
    return from_entries(
        (W.shape[0], int(mask.sum())), rows, new_index[W.indices[keep]], W.data[keep]
    )


def dense_row(W: Matrix, i: int) -> np.ndarray:
    """Row ``i`` of ``W`` as a dense vector."""
    if not is_sparse(W):
        return W[i]
    row = np.zeros(W.shape[1])
    row[W.indices[W.indptr[i] : W.indptr[i + 1]]] = W.data[W.indptr[i] : W.indptr[i + 1]]
    return row


def signs(W: Matrix) -> tuple[Matrix, Matrix]:
    """``max(W, 0)`` and ``min(W, 0)`` on ``W``'s pattern."""
    if not is_sparse(W):
        return np.maximum(W, 0.0), np.minimum(W, 0.0)
    return with_entries(W, np.maximum(W.data, 0.0)), with_entries(W, np.minimum(W.data, 0.0))


def times_transpose(H: np.ndarray, W: Matrix) -> np.ndarray:
    """``H @ W.T`` for rows ``H`` (n, n_in): a layer's affine map without its bias."""
    if isinstance(W, np.ndarray):
        return H @ W.T
    return np.asarray((W @ np.asarray(H).T).T)


def times(G: np.ndarray, W: Matrix) -> np.ndarray:
    """``G @ W`` for rows ``G`` (n, n_out): the backward step through a layer."""
    if isinstance(W, np.ndarray):
        return G @ W
    return np.asarray((W.T @ np.asarray(G).T).T)


def scale_rows(W: Matrix, factor: np.ndarray) -> Matrix:
    """``factor[:, None] * W``, on ``W``'s pattern."""
    factor = np.asarray(factor, dtype=np.float64)
    if not is_sparse(W):
        return W * factor[:, None]
    return with_entries(W, W.data * factor[entry_rows(W)])


def scale_columns(W: Matrix, factor: np.ndarray) -> Matrix:
    """``W * factor[None, :]``, on ``W``'s pattern."""
    factor = np.asarray(factor, dtype=np.float64)
    if not is_sparse(W):
        return W * factor[None, :]
    return with_entries(W, W.data * factor[W.indices])


def row_nonzeros(W: Matrix, columns: np.ndarray | None = None) -> np.ndarray:
    """How many inputs each row reads (nonzero entries), only among ``columns`` (a boolean
    mask over the inputs) if given."""
    if not is_sparse(W):
        reads = W != 0.0
        return np.count_nonzero(reads if columns is None else reads & columns, axis=1)
    reads = W.data != 0.0
    if columns is not None:
        reads &= columns[W.indices]
    return np.bincount(entry_rows(W)[reads], minlength=W.shape[0])


def per_entry(W: Matrix, row_factor: np.ndarray) -> np.ndarray:
    """A per-row factor spread over ``W``'s entries, shaped like :func:`entries`."""
    row_factor = np.asarray(row_factor, dtype=np.float64)
    if not is_sparse(W):
        return np.broadcast_to(row_factor[:, None], W.shape)
    return row_factor[entry_rows(W)]


def equal(A: Matrix, B: Matrix) -> bool:
    """The same values at every position (a sparse and a dense form can be equal)."""
    if A.shape != B.shape:
        return False
    if is_sparse(A) and is_sparse(B) and A.nnz == B.nnz:
        same = np.array_equal(A.indptr, B.indptr) and np.array_equal(A.indices, B.indices)
        if same:
            return np.array_equal(A.data, B.data)
    return np.array_equal(to_dense(A), to_dense(B))


def all_finite(W: Matrix) -> bool:
    """Whether every entry is finite."""
    return bool(np.all(np.isfinite(entries(W))))


def max_abs(W: Matrix) -> float:
    """The largest ``|entry|`` (0 for an empty matrix)."""
    return float(np.max(np.abs(entries(W)), initial=0.0))


@dataclass(frozen=True, eq=False)
class OuterPlan:
    """How to gather ``G.T @ H`` at a sparse pattern's entries fast.

    Rows that read the same columns (a convolution's channels at one output position) form a
    group whose entries are one dense block ``G[:, rows].T @ H[:, cols]``.  When the rows
    fall into few groups of one size, every block is computed by one batched product, the
    groups' columns padded to the widest (``members`` (groups, rows), ``columns`` (groups,
    width); the padding's products are computed and dropped: ``blocks.flat[kept]`` goes to
    the entries ``targets``); otherwise entry by entry, in chunks.
    """

    rows: np.ndarray
    cols: np.ndarray
    members: np.ndarray | None = None
    columns: np.ndarray | None = None
    kept: np.ndarray | None = None
    targets: np.ndarray | None = None

    @classmethod
    def of(cls, W: sparse.csr_array) -> OuterPlan:
        rows, cols = entry_rows(W), W.indices.astype(np.int64)
        by_columns: dict[bytes, list[int]] = {}
        for i in range(W.shape[0]):
            by_columns.setdefault(W.indices[W.indptr[i] : W.indptr[i + 1]].tobytes(), []).append(i)
        sizes = {len(members) for members in by_columns.values()}
        if len(by_columns) * 4 > max(W.shape[0], 1) or len(sizes) != 1:
            return cls(rows, cols)
        members = np.array(list(by_columns.values()), dtype=np.int64)
        lengths = W.indptr[members[:, 0] + 1] - W.indptr[members[:, 0]]
        width = int(lengths.max(initial=0))
        offsets = np.arange(width)
        valid = offsets[None, :] < lengths[:, None]
        first = W.indptr[members[:, 0]][:, None] + offsets[None, :]
        columns = np.where(valid, W.indices[np.where(valid, first, 0)], 0).astype(np.int64)
        starts = W.indptr[members][:, :, None] + offsets[None, None, :]
        kept_mask = np.broadcast_to(valid[:, None, :], starts.shape)
        kept = np.flatnonzero(kept_mask)
        return cls(rows, cols, members, columns, kept, starts.reshape(-1)[kept])


def outer_entries(G: np.ndarray, H: np.ndarray, W: Matrix, plan: OuterPlan | None) -> np.ndarray:
    """``G.T @ H`` (G (n, n_out), H (n, n_in)) at ``W``'s entries, shaped like
    :func:`entries`: the gradient of ``sum(G * (H @ W.T))`` with respect to them."""
    if not is_sparse(W):
        return G.T @ H
    plan = plan if plan is not None else OuterPlan.of(W)
    out = np.empty(W.nnz)
    if plan.members is not None:
        left = np.ascontiguousarray(np.moveaxis(G[:, plan.members], 0, -1))  # (groups, rows, n)
        right = np.ascontiguousarray(np.moveaxis(H[:, plan.columns], 0, 1))  # (groups, n, width)
        out[plan.targets] = np.matmul(left, right).reshape(-1)[plan.kept]
        return out
    for start in range(0, W.nnz, _GATHER_CHUNK):
        part = slice(start, start + _GATHER_CHUNK)
        out[part] = np.einsum("ne,ne->e", G[:, plan.rows[part]], H[:, plan.cols[part]])
    return out
