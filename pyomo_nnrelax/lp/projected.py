"""The big-M LP relaxation at a fixed input, written on the layer outputs alone
(``docs/method.md``, section 3).

With ``a`` in ``[0, 1]``, the big-M rows of an unstable neuron (``L < 0 < U``) project onto
``(z, h)`` as the triangle ``h >= 0, h >= z, h <= s (z - L)`` with ``s = U / (U - L)``, and
imply ``L <= z <= U``.  Substituting ``z = W h_prev + b`` leaves one column per neuron whose
output is not identically zero and, per unstable neuron, two rows:

    h - W h_prev >= b            h - s W h_prev <= s (b - L)

Stable-active ReLUs and linear layers keep ``h - W h_prev = b`` with ``h`` in ``[L, U]``;
stable-inactive ones have no column, and a row ``L - b <= W h_prev <= U - b`` only where the
previous columns' bounds do not already imply it.  With the input fixed, the first layer's
``z`` is a constant, so its outputs are boxes.  The LP has the same optimum as the big-M one,
with about half its rows and columns, and HiGHS re-solves it about twice as fast.

:class:`ProjectedLPSolver` maps the optimal primals and duals back to the derivatives of the
big-M LP's value (:class:`~pyomo_nnrelax.lp.solutions.RelaxationBatch`).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import highspy
import numpy as np

from .. import matrices
from ..bounds import NetworkBounds, affine_interval
from ..formulations.matrix_model import MatrixModel
from ..matrices import Matrix
from ..network import Network
from ..parallel import available_cpus, gather
from .highs import HighsModel
from .solutions import (
    RelaxationBatch,
    Solutions,
    concat_batches,
    empty_solutions,
    split_by_nearer_bound,
)

FEASIBILITY_TOLERANCE = 1e-7
"""HiGHS's default primal feasibility tolerance; a fixed first-layer ``z`` outside its bounds
by more than this makes the sample infeasible, as in the big-M LP."""

ITERATIONS_PER_SIZE = 20
"""Simplex iteration limit per LP, per row and column: a warm-started solve needs a few dozen
iterations, so hitting it means stalling (seen on degenerate LPs of trained networks); the
LP then counts as failed instead of hanging training."""

HIGHS_OPTIONS = {"simplex_scale_strategy": 0, "dual_simplex_cost_perturbation_multiplier": 0.0}
"""Options for these warm-started re-solves.  Every training step changes the matrix a little;
without scaling and cost perturbation the first solve after the change takes about half the
dual simplex iterations (35 against 69 on a 2-25x5 network) and the later ones about 6
instead of 8 (measured).  A stalling solve still stops at the iteration limit."""

NO_ROW = -1
"""Row index of a neuron that has no such row; it reads the zero appended to the duals."""


@dataclass(frozen=True)
class LayerRows:
    """Where one layer's neurons live in the projected LP.

    ``kind`` is 1 where ``h = z`` (stable-active ReLU, or no activation), 0 for unstable
    ReLUs and -1 for stable-inactive ones.  ``col`` is each neuron's column (-1 without one);
    ``affine`` its row ``h - W h_prev (=|>=) b``, ``upper`` the row ``h <= s (z - L)`` and
    ``range`` the row ``L <= z <= U``, each ``NO_ROW`` where absent; ``slope`` is ``s``.
    """

    kind: np.ndarray
    col: np.ndarray
    affine: np.ndarray
    upper: np.ndarray
    range: np.ndarray
    slope: np.ndarray


@dataclass(frozen=True, eq=False)
class ProjectedLP(MatrixModel):
    """The LP: a :class:`MatrixModel` (no groups, no integers) with every layer's layout."""

    layers: tuple[LayerRows, ...] = ()

    def signature(self) -> bytes:
        """Equal for two LPs with the same columns and rows, so one's basis fits the other."""
        return b"|".join(
            np.concatenate([r.kind, r.range >= 0]).astype(np.int8).tobytes() for r in self.layers
        )


class _Rows:
    """Rows collected block by block, each block given as CSR pieces."""

    def __init__(self) -> None:
        self.count = 0
        self.lengths: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []

    def add(self, block: tuple[np.ndarray, np.ndarray, np.ndarray], lower, upper) -> np.ndarray:
        """Append the rows of ``block = (lengths, cols, vals)`` (entries per row, then every
        row's columns and values in order) with bounds ``lower``/``upper``; their indices."""
        lengths, cols, vals = block
        n = lengths.size
        self.lengths.append(lengths)
        self.cols.append(cols)
        self.vals.append(vals)
        self.lower.append(lower)
        self.upper.append(upper)
        self.count += n
        return np.arange(self.count - n, self.count)

    def model(
        self, col_lower: np.ndarray, col_upper: np.ndarray, layers: tuple[LayerRows, ...]
    ) -> ProjectedLP:
        """The rows collected so far over columns with these bounds."""
        lengths = np.concatenate(self.lengths or [np.zeros(0, np.int64)])
        return ProjectedLP(
            col_lower,
            col_upper,
            np.zeros(col_lower.size, dtype=bool),
            np.concatenate(self.lower or [np.empty(0)]).astype(np.float64),
            np.concatenate(self.upper or [np.empty(0)]).astype(np.float64),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            np.concatenate(self.cols or [[]]).astype(np.int64),
            np.concatenate(self.vals or [[]]).astype(np.float64),
            {},
            {},
            layers,
        )


def neuron_kinds(network: Network, bounds: NetworkBounds, l: int) -> np.ndarray:
    """1 where ``h = z`` (stable-active ReLUs and linear neurons), 0 for unstable ReLUs, -1
    for stable-inactive ones."""
    return bounds.stability(l, network).astype(np.int64)


def unstable_slope(lower: np.ndarray, upper: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """``s = U / (U - L)`` for unstable neurons, 0 elsewhere."""
    width = np.where(kind == 0, upper - lower, 1.0)
    return np.where(kind == 0, upper / width, 0.0)


def matrix_rows(prev_cols: np.ndarray, coef: Matrix, sign: float = 1.0):
    """The rows ``sign * coef @ h_prev`` as CSR pieces ``(lengths, cols, vals)``: every entry
    of a dense ``coef`` (zeros too, so that a row keeps its layout as weights move), the
    stored entries of a sparse one."""
    if matrices.is_sparse(coef):
        return np.diff(coef.indptr), prev_cols[coef.indices], sign * coef.data
    k = coef.shape[0]
    return np.full(k, prev_cols.size), np.tile(prev_cols, k), sign * coef.reshape(-1)


def output_rows(cols: np.ndarray, prev_cols: np.ndarray, coef: Matrix):
    """The rows ``h_j - coef_j @ h_prev`` as CSR pieces: one row per entry of ``cols``."""
    lengths, inner_cols, inner_vals = matrix_rows(prev_cols, coef, -1.0)
    starts = (np.cumsum(lengths + 1) - (lengths + 1)).astype(np.int64)
    total = int(lengths.sum()) + cols.size
    all_cols, values = np.empty(total, dtype=np.int64), np.empty(total)
    head = np.zeros(total, dtype=bool)
    head[starts] = True
    all_cols[head], values[head] = cols, 1.0
    all_cols[~head], values[~head] = inner_cols, inner_vals
    return lengths + 1, all_cols, values


def projected_lp(network: Network, bounds: NetworkBounds) -> ProjectedLP:
    """The projected LP of ``network`` over ``bounds`` (first layer's columns not yet fixed)."""
    rows, layers = _Rows(), []
    col_lower, col_upper, n_cols = [], [], 0
    for l, layer in enumerate(network.layers):
        lo, hi = bounds.lower[l], bounds.upper[l]
        kind = neuron_kinds(network, bounds, l)
        kept = np.flatnonzero(kind >= 0)
        col = np.full(layer.n_out, -1)
        col[kept] = n_cols + np.arange(kept.size)
        n_cols += kept.size
        col_lower.append(np.where(kind[kept] == 0, 0.0, lo[kept]))
        col_upper.append(hi[kept])
        slope = unstable_slope(lo, hi, kind)
        affine, upper, range_ = (np.full(layer.n_out, NO_ROW) for _ in range(3))
        if l > 0:
            prev = layers[-1].col
            prev_cols = prev[prev >= 0]
            W = matrices.select_columns(layer.weight, prev >= 0)
            b = layer.bias
            # rows h - W h_prev (= or >=) b of kept neurons, then h - s W h_prev <= s (b - L)
            unstable = np.flatnonzero(kind == 0)
            j = np.concatenate([kept, unstable])
            factor = np.concatenate([np.ones(kept.size), slope[unstable]])
            coef = matrices.scale_rows(matrices.select_rows(W, j), factor)
            row_lo = np.concatenate([b[kept], np.full(unstable.size, -np.inf)])
            row_hi = np.concatenate(
                [np.where(kind[kept] == 0, np.inf, b[kept]), slope[unstable] * (b - lo)[unstable]]
            )
            index = rows.add(output_rows(col[j], prev_cols, coef), row_lo, row_hi)
            affine[kept], upper[unstable] = index[: kept.size], index[kept.size :]
            reach_lo, reach_hi = affine_interval(W, col_lower[l - 1], col_upper[l - 1])
            implied = (reach_lo + b >= lo - FEASIBILITY_TOLERANCE) & (
                reach_hi + b <= hi + FEASIBILITY_TOLERANCE
            )
            j = np.flatnonzero((kind == -1) & ~implied)
            if j.size:
                block = matrix_rows(prev_cols, matrices.select_rows(W, j))
                range_[j] = rows.add(block, lo[j] - b[j], hi[j] - b[j])
        layers.append(LayerRows(kind, col, affine, upper, range_, slope))
    return rows.model(np.concatenate(col_lower), np.concatenate(col_upper), tuple(layers))


def first_layer_boxes(
    network: Network, bounds: NetworkBounds, rows: LayerRows, X: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``z`` of the first layer at each row of ``X`` (clipped to its bounds), its outputs'
    column bounds, and which samples are feasible (``z`` within its bounds)."""
    layer, lo, hi = network.layers[0], bounds.lower[0], bounds.upper[0]
    z = matrices.times_transpose(X, layer.weight) + layer.bias
    feasible = np.all((z >= lo - FEASIBILITY_TOLERANCE) & (z <= hi + FEASIBILITY_TOLERANCE), axis=1)
    z = np.clip(z, lo, hi)
    kept = rows.kind >= 0
    unstable = rows.kind == 0
    box_lo = np.where(unstable, np.maximum(z, 0.0), z)[:, kept]
    box_hi = np.where(unstable, rows.slope * (z - lo), z)[:, kept]
    return z, box_lo, box_hi, feasible


class ProjectedLPSolver:
    """The projected LP of one network in HiGHS, re-solved per input from the previous basis.

    :meth:`update` rebuilds the LP for new weights or bounds (cheaper than changing every
    coefficient in place) and hands over the last basis when the layout is unchanged.
    """

    def __init__(
        self, network: Network, bounds: NetworkBounds, lp: ProjectedLP | None = None
    ) -> None:
        self.network, self.bounds = network, bounds
        self.lp = lp if lp is not None else projected_lp(network, bounds)
        self._solver = HighsModel(self.lp, relax=True, **HIGHS_OPTIONS)
        self._limit_iterations()
        self._last_box: np.ndarray | None = None  # where the last solve's basis is optimal

    @property
    def highs(self) -> highspy.Highs:
        """The HiGHS instance (for its info and options)."""
        return self._solver.highs

    def _limit_iterations(self) -> None:
        size = self.lp.n_rows + self.lp.n_cols
        self.set_option("simplex_iteration_limit", ITERATIONS_PER_SIZE * size)

    def update(
        self, network: Network, bounds: NetworkBounds, lp: ProjectedLP | None = None
    ) -> None:
        """Use ``network`` and ``bounds`` (whose LP is ``lp``, if given) from now on, keeping
        the basis when the LP's layout is unchanged.  A no-op when they are the objects
        already in use."""
        if network is self.network and bounds is self.bounds:
            return
        lp = lp if lp is not None else projected_lp(network, bounds)
        same_layout = lp.signature() == self.lp.signature()
        self._solver.load(lp, keep_basis=same_layout)
        if not same_layout:
            self._last_box = None
        self.network, self.bounds, self.lp = network, bounds, lp
        self._limit_iterations()

    def set_option(self, key: str, value) -> None:
        """Set a HiGHS option of this solver."""
        self.highs.setOptionValue(key, value)

    def _set_objective(self, weights: np.ndarray, sense: str) -> None:
        last = self.lp.layers[-1]
        kept = last.kind >= 0
        self._solver.set_objective(last.col[kept], weights[kept], sense)

    def _solve_all(self, box_lo, box_hi, feasible, weights, sense: str) -> Solutions:
        n, lp = len(box_lo), self.lp
        out = empty_solutions(n, lp.n_cols, lp.n_rows)
        first = self.lp.layers[0]
        first_cols = first.col[first.kind >= 0]
        boxes = np.concatenate([box_lo, box_hi], axis=1)
        one_objective = bool(np.all(weights == weights[0]))
        if one_objective:
            self._set_objective(weights[0], sense)
        for i in nearest_neighbour_path(boxes, np.flatnonzero(feasible), self._last_box):
            if not one_objective:
                self._set_objective(weights[i], sense)
            self._solver.set_col_bounds(first_cols, box_lo[i], box_hi[i])
            result = self._solver.solve()
            self._last_box = boxes[i]
            if not result.optimal:
                self._solver.forget_basis()  # a stalled basis must not seed the next sample
                continue
            if result.row_dual is None:
                continue
            out.value[i] = result.objective
            out.x[i] = result.x
            out.col_dual[i] = result.col_dual
            out.row_dual[i] = result.row_dual
            out.ok[i] = True
        return out

    def solve(self, X: np.ndarray, weights: np.ndarray, sense: str) -> RelaxationBatch:
        """One LP per row of ``X`` with objective ``weights[i]' outputs``; values and gradients."""
        z0, box_lo, box_hi, feasible = first_layer_boxes(
            self.network, self.bounds, self.lp.layers[0], X
        )
        solved = self._solve_all(box_lo, box_hi, feasible, weights, sense)
        return gradients(self.network, self.bounds, self.lp, solved, X, z0, box_lo, box_hi)


def nearest_neighbour_path(
    points: np.ndarray, todo: np.ndarray, start: np.ndarray | None
) -> list[int]:
    """Indices ``todo`` ordered so that each point is the nearest unvisited one to the last.

    Re-solving from the previous optimal basis takes fewer simplex iterations the less the
    first layer's boxes move, so a short path through the samples is a cheaper one.
    """
    todo = [int(i) for i in todo]
    if not todo:
        return []
    chosen = points[todo]
    distance = np.abs(chosen[:, None, :] - chosen[None, :, :]).sum(axis=2).tolist()
    if start is None:
        k = 0
    else:
        k = int(np.argmin(np.abs(chosen - start).sum(axis=1)))
    order, left = [k], set(range(len(todo))) - {k}
    while left:
        row = distance[order[-1]]
        k = min(left, key=row.__getitem__)
        order.append(k)
        left.remove(k)
    return [todo[k] for k in order]


def gradients(
    network: Network,
    bounds: NetworkBounds,
    lp: ProjectedLP,
    solved: Solutions,
    X: np.ndarray,
    z0: np.ndarray,
    box_lo: np.ndarray,
    box_hi: np.ndarray,
) -> RelaxationBatch:
    """``dV/db``, the LP's layer inputs, and ``dV/dL``, ``dV/dU`` of the big-M LP.

    Column and row duals are ``dV/d(bound)`` and ``dV/d(rhs)``; each bound or right-hand side
    is a function of ``b``, ``L`` and ``U`` (see the module docstring), so the chain rule
    through it gives the derivatives.  For ``h <= s (z - L)``: ``d/dL = s'_L (z - L) - s``
    and ``d/dU = s'_U (z - L)``, with ``s'_L = U / (U - L)^2`` and ``s'_U = -L / (U - L)^2``.
    """
    ok = solved.ok[:, None]
    n = len(X)
    row_dual = np.concatenate([solved.row_dual, np.zeros((n, 1))], axis=1)  # NO_ROW reads 0
    affine, lower, upper = [], [], []
    acts = [np.where(ok, X, 0.0)]
    h_prev = acts[0]
    for l, (layer, rows) in enumerate(zip(network.layers, lp.layers)):
        lo, hi = bounds.lower[l], bounds.upper[l]
        kept = rows.kind >= 0
        h = np.zeros((n, layer.n_out))
        h[:, kept] = solved.x[:, rows.col[kept]]
        d = np.zeros((n, layer.n_out))
        d[:, kept] = solved.col_dual[:, rows.col[kept]]
        z = (
            np.where(ok, z0, 0.0)
            if l == 0
            else matrices.times_transpose(h_prev, layer.weight) + layer.bias
        )
        if l == 0:
            col_lo = np.zeros((n, layer.n_out))
            col_hi = np.zeros((n, layer.n_out))
            col_lo[:, kept], col_hi[:, kept] = box_lo, box_hi
        else:
            col_lo = np.where(rows.kind == 0, 0.0, lo)
            col_hi = hi
        d_lo, d_hi = split_by_nearer_bound(h, col_lo, col_hi, d)
        width = np.where(rows.kind == 0, hi - lo, 1.0)
        slope_dL, slope_dU = hi / width**2, -lo / width**2
        unstable, equal = rows.kind == 0, rows.kind == 1
        if l == 0:
            # bounds [max(z, 0), s (z - L)] for unstable neurons, [z, z] where h = z
            nu = np.where(equal, d, 0.0) + np.where(
                unstable, d_lo * (z > 0.0) + rows.slope * d_hi, 0.0
            )
            y_up = np.where(unstable, d_hi, 0.0)
            dL = y_up * (slope_dL * (z - lo) - rows.slope)
            dU = y_up * slope_dU * (z - lo)
        else:
            y_up = row_dual[:, rows.upper]
            y_range = row_dual[:, rows.range]
            nu = row_dual[:, rows.affine] + rows.slope * y_up - y_range
            range_lo, range_hi = split_by_nearer_bound(z, lo, hi, y_range)
            dL = np.where(unstable, y_up * (slope_dL * (z - lo) - rows.slope), 0.0)
            dU = np.where(unstable, y_up * slope_dU * (z - lo), 0.0)
            dL = dL + np.where(equal, d_lo, 0.0) + range_lo
            dU = dU + np.where(rows.kind >= 0, d_hi, 0.0) + range_hi
        affine.append(nu)
        lower.append(np.where(ok, dL, 0.0))
        upper.append(np.where(ok, dU, 0.0))
        if l + 1 < len(network.layers):
            acts.append(h)
        h_prev = h
    return RelaxationBatch(solved.value, affine, acts, lower, upper, solved.ok)


def solve_batch(
    network: Network,
    bounds: NetworkBounds,
    X: np.ndarray,
    weights: np.ndarray,
    sense: str,
    solver: ProjectedLPSolver | None = None,
    executor: Executor | None = None,
) -> RelaxationBatch:
    """The projected LP at every row of ``X``, with objective ``weights[i]' outputs``.

    Serially on ``solver`` (the caller's, kept warm from call to call and moved to
    ``network``/``bounds``) or on a new one.  With an ``executor``, the LP is built once and
    ``X`` is split into one chunk per CPU, each solved by a new solver (warm from sample to
    sample within its chunk); this pays off for large batches only.
    """
    if executor is None:
        if solver is None:
            solver = ProjectedLPSolver(network, bounds)
        else:
            solver.update(network, bounds)
        return solver.solve(X, weights, sense)
    lp = projected_lp(network, bounds)
    parts = [p for p in np.array_split(np.arange(len(X)), available_cpus()) if p.size]
    futures = [
        executor.submit(_solve_chunk, network, bounds, lp, X[p], weights[p], sense) for p in parts
    ]
    return concat_batches(gather(futures))


def _solve_chunk(network, bounds, lp, X, weights, sense) -> RelaxationBatch:
    return ProjectedLPSolver(network, bounds, lp).solve(X, weights, sense)
