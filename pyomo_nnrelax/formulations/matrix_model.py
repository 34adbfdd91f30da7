"""A MILP in matrix form, with named groups of variables and rows.

Formulations write into a :class:`MatrixModelBuilder`; the result, a :class:`MatrixModel`,
is the one description of the formulation used everywhere: the Pyomo block turns it into
components in one pass, and bound tightening and the trainer's LPs hand it to HiGHS directly.

    row_lower <= A @ x <= row_upper,   col_lower <= x <= col_upper,   x[integer] in Z
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import matrices

Key = tuple[str, "int | None"]
"""A group's name and the layer it belongs to (``None`` for the network's inputs/outputs)."""


@dataclass(frozen=True)
class Group:
    """A contiguous run of columns or rows, labelled with neuron indices ``index``."""

    start: int
    index: np.ndarray

    @property
    def positions(self) -> np.ndarray:
        return self.start + np.arange(self.index.size)


@dataclass(frozen=True, eq=False)
class MatrixModel:
    """Columns, rows (CSR) and named groups of a MILP; see the module docstring."""

    col_lower: np.ndarray
    col_upper: np.ndarray
    integer: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    var_groups: dict[Key, Group]
    row_groups: dict[Key, Group]

    @property
    def n_cols(self) -> int:
        return self.col_lower.size

    @property
    def n_rows(self) -> int:
        return self.row_lower.size

    def cols(self, name: str, layer: int | None = None) -> np.ndarray:
        """Column positions of the group ``(name, layer)``, in the order of its index labels."""
        return self.var_groups[(name, layer)].positions

    def rows(self, name: str, layer: int | None = None) -> np.ndarray:
        """Row positions of the group ``(name, layer)``."""
        return self.row_groups[(name, layer)].positions

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and coefficients of row ``i``."""
        s, e = self.indptr[i], self.indptr[i + 1]
        return self.indices[s:e], self.data[s:e]

    def csc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The constraint matrix in compressed-column form: (start, index, value), int32/float64."""
        rows = np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.indptr))
        order = np.lexsort((rows, self.indices))
        start = np.zeros(self.n_cols + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.indices, minlength=self.n_cols), out=start[1:])
        return start.astype(np.int32), rows[order].astype(np.int32), self.data[order]

    def dense(self) -> np.ndarray:
        """The constraint matrix as a dense array (for tests and small models)."""
        out = np.zeros((self.n_rows, self.n_cols))
        rows = np.repeat(np.arange(self.n_rows), np.diff(self.indptr))
        np.add.at(out, (rows, self.indices), self.data)
        return out


def _new_group(groups: dict[Key, Group], key: Key, start: int, labels: np.ndarray) -> Group:
    """Register ``key``'s group at ``start``; a name and layer can be added only once."""
    if key in groups:
        raise ValueError(f"group {key} added twice")
    groups[key] = Group(start, labels)
    return groups[key]


class MatrixModelBuilder:
    """Collects variable and row groups, then :meth:`build` returns a :class:`MatrixModel`."""

    def __init__(self) -> None:
        self._lower: list[np.ndarray] = []
        self._upper: list[np.ndarray] = []
        self._integer: list[np.ndarray] = []
        self._n_cols = 0
        self._row_lower: list[np.ndarray] = []
        self._row_upper: list[np.ndarray] = []
        self._entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._n_rows = 0
        self._var_groups: dict[Key, Group] = {}
        self._row_groups: dict[Key, Group] = {}

    def add_vars(
        self,
        name: str,
        lower,
        upper,
        layer: int | None = None,
        index: Sequence[int] | None = None,
        integer: bool = False,
    ) -> np.ndarray:
        """Add one column per entry of ``lower``/``upper``; returns their positions."""
        lower = np.asarray(lower, dtype=np.float64).reshape(-1)
        upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), lower.shape).copy()
        labels = np.arange(lower.size) if index is None else np.asarray(index, dtype=np.int64)
        group = _new_group(self._var_groups, (name, layer), self._n_cols, labels)
        self._lower.append(lower)
        self._upper.append(upper)
        self._integer.append(np.full(lower.size, integer))
        self._n_cols += lower.size
        return group.positions

    def add_rows(
        self,
        name: str,
        terms: Sequence[tuple[np.ndarray, np.ndarray]],
        lower,
        upper,
        layer: int | None = None,
        index: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Add ``k`` rows ``lower <= sum of terms <= upper``; returns their positions.

        Each term is ``(cols, coefs)``: with ``coefs`` of shape (k,), row ``i`` gets
        ``coefs[i] * x[cols[i]]``; with a dense or sparse matrix of shape (k, m), row ``i``
        gets ``coefs[i] @ x[cols]`` (a sparse matrix adds its stored entries only).  Zero
        coefficients are dropped.
        """
        k = terms[0][1].shape[0]
        lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), (k,)).copy()
        upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), (k,)).copy()
        row_ids = self._n_rows + np.arange(k)
        for cols, coefs in terms:
            cols = np.asarray(cols, dtype=np.int64)
            if matrices.is_sparse(coefs):
                csr = matrices.as_matrix(coefs)
                r, c, v = row_ids[matrices.entry_rows(csr)], cols[csr.indices], csr.data
                keep = v != 0.0
                self._entries.append((r[keep], c[keep], v[keep]))
                continue
            coefs = np.asarray(coefs, dtype=np.float64)
            if coefs.ndim == 1:
                r, c, v = row_ids, np.broadcast_to(cols, (k,)), coefs
            else:
                r = np.repeat(row_ids, cols.size)
                c = np.tile(cols, k)
                v = coefs.reshape(-1)
            keep = v != 0.0
            self._entries.append((r[keep], c[keep], v[keep]))
        labels = np.arange(k) if index is None else np.asarray(index, dtype=np.int64)
        _new_group(self._row_groups, (name, layer), self._n_rows, labels)
        self._row_lower.append(lower)
        self._row_upper.append(upper)
        self._n_rows += k
        return row_ids

    def build(self) -> MatrixModel:
        """Merge duplicate entries and return the CSR model."""
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        r = np.concatenate([e[0] for e in self._entries] or [empty_i])
        c = np.concatenate([e[1] for e in self._entries] or [empty_i])
        v = np.concatenate([e[2] for e in self._entries] or [empty_f])
        order = np.lexsort((c, r))
        r, c, v = r[order], c[order], v[order]
        if r.size:
            first = np.ones(r.size, dtype=bool)
            first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
            v = np.add.reduceat(v, np.flatnonzero(first))
            r, c = r[first], c[first]
        indptr = np.zeros(self._n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=self._n_rows), out=indptr[1:])
        return MatrixModel(
            _concat(self._lower, np.float64),
            _concat(self._upper, np.float64),
            _concat(self._integer, bool),
            _concat(self._row_lower, np.float64),
            _concat(self._row_upper, np.float64),
            indptr,
            c,
            v,
            dict(self._var_groups),
            dict(self._row_groups),
        )


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
