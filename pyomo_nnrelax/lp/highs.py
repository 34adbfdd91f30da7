"""The one HiGHS wrapper: a :class:`MatrixModel` in a ``highspy.Highs`` instance.

Pass a model once, then change costs and column bounds and re-solve from the previous basis.
Bound tightening solves one model with many objectives; the projected LP of the trainer
(:mod:`.projected`) reloads a model of the same layout after every weight change and keeps the
basis.  Models are loaded with ``addCols``/``addRows``, which read the numpy buffers directly
(several times faster than filling a ``HighsLp``).
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

import highspy
import numpy as np

from ..errors import SolverError
from ..formulations.matrix_model import MatrixModel


@dataclass(frozen=True)
class HighsResult:
    """Outcome of one solve.

    ``status`` is HiGHS's model status text ("Optimal", "Time limit reached", ...).
    ``objective`` is the primal objective (NaN without a solution); ``bound`` is a proven
    bound on the optimum (the dual bound of a MILP, the objective of an optimal LP).
    ``row_dual``/``col_dual`` are HiGHS's duals, ``d objective / d (rhs or bound)``, for LPs.
    """

    status: str
    optimal: bool
    objective: float
    bound: float
    x: np.ndarray | None
    row_dual: np.ndarray | None
    col_dual: np.ndarray | None


class HighsModel:
    """A :class:`MatrixModel` loaded into one ``highspy.Highs`` instance.

    Parameters
    ----------
    model : MatrixModel
    relax : bool
        Solve the LP relaxation (integrality dropped).
    options : dict
        HiGHS options, e.g. ``{"time_limit": 10.0}``.  ``threads`` is refused: HiGHS keeps
        one thread pool per process, sized by its first solve, and an instance asking for
        another count afterwards solves nothing (status "Not Set").
    """

    def __init__(self, model: MatrixModel, relax: bool = False, **options) -> None:
        if "threads" in options:
            raise ValueError(
                "HighsModel does not take the 'threads' option: HiGHS sizes one thread pool "
                "per process at its first solve, and a different count later makes every "
                "solve fail; parallelism here is across processes (executor=, workers=)"
            )
        self.highs = quiet_highs()
        for key, value in options.items():
            self.highs.setOptionValue(key, value)
        self.relax = relax
        self.load(model)

    def load(self, model: MatrixModel, keep_basis: bool = False) -> None:
        """Replace the model; with ``keep_basis`` the last basis seeds the next solve (the new
        model must have the same numbers of rows and columns)."""
        basis = self.highs.getBasis() if keep_basis else None
        self.highs.clearModel()
        no_entries = np.zeros(0, dtype=np.int32)
        status = self.highs.addCols(
            model.n_cols,
            np.zeros(model.n_cols),
            _finite_or_inf(model.col_lower),
            _finite_or_inf(model.col_upper),
            0,
            no_entries,
            no_entries,
            np.zeros(0),
        )
        if model.n_rows and status != highspy.HighsStatus.kError:
            status = self.highs.addRows(
                model.n_rows,
                _finite_or_inf(model.row_lower),
                _finite_or_inf(model.row_upper),
                model.data.size,
                model.indptr[:-1].astype(np.int32),
                model.indices.astype(np.int32),
                model.data,
            )
        self.is_mip = bool(model.integer.any()) and not self.relax
        if self.is_mip and status != highspy.HighsStatus.kError:
            cols = np.flatnonzero(model.integer).astype(np.int32)
            status = self.highs.changeColsIntegrality(
                cols.size, cols, np.full(cols.size, highspy.HighsVarType.kInteger)
            )
        if status == highspy.HighsStatus.kError:
            raise SolverError("HiGHS rejected the model passed to it")
        if basis is not None:
            self.highs.setBasis(basis)
        self.model = model
        self._cost = np.zeros(model.n_cols)

    def set_objective(self, cols: np.ndarray, coefs: np.ndarray, sense: str = "min") -> None:
        """Minimise (or maximise) ``coefs @ x[cols]``; other costs become zero.  Only the costs
        that change are passed to HiGHS."""
        cost = np.zeros(self.model.n_cols)
        np.add.at(cost, np.asarray(cols, dtype=np.int64), np.asarray(coefs, dtype=np.float64))
        changed = np.flatnonzero(cost != self._cost).astype(np.int32)
        if changed.size:
            self.highs.changeColsCost(changed.size, changed, cost[changed])
            self._cost = cost
        self.highs.changeObjectiveSense(
            highspy.ObjSense.kMinimize if sense == "min" else highspy.ObjSense.kMaximize
        )

    def set_col_bounds(self, cols: np.ndarray, lower, upper) -> None:
        """Change the bounds of columns ``cols`` (e.g. fix the inputs to a point)."""
        cols = np.asarray(cols, dtype=np.int32)
        lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), cols.shape)
        upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), cols.shape)
        self.highs.changeColsBounds(cols.size, cols, _finite_or_inf(lower), _finite_or_inf(upper))

    def forget_basis(self) -> None:
        """Drop the current basis (e.g. after a stalled solve, so it seeds nothing)."""
        self.highs.clearSolver()

    def solve(self) -> HighsResult:
        """Run HiGHS from the current basis and collect status, values, bound and duals."""
        self.highs.run()
        status = self.highs.getModelStatus()
        text = self.highs.modelStatusToString(status)
        info = self.highs.getInfo()
        optimal = status == highspy.HighsModelStatus.kOptimal
        has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
        solution = self.highs.getSolution() if has_solution else None
        objective = info.objective_function_value if has_solution else float("nan")
        bound = info.mip_dual_bound if self.is_mip else (objective if optimal else float("nan"))
        duals_ok = solution is not None and solution.dual_valid and not self.is_mip
        return HighsResult(
            status=text,
            optimal=optimal,
            objective=objective,
            bound=float(bound),
            x=np.asarray(solution.col_value) if solution is not None else None,
            row_dual=np.asarray(solution.row_dual) if duals_ok else None,
            col_dual=np.asarray(solution.col_dual) if duals_ok else None,
        )


_BANNER_LOCK = threading.Lock()
_banner_shown = False


def quiet_highs() -> highspy.Highs:
    """A ``highspy.Highs`` with console output off.

    HiGHS prints a banner on the process's standard output when its first instance is made,
    before any option can be set; that one construction runs with file descriptor 1 sent to
    the null device so that the package's own output (and ``--json`` output) stays clean.
    """
    global _banner_shown
    with _BANNER_LOCK:
        if _banner_shown:
            highs = highspy.Highs()
        else:
            sys.stdout.flush()
            saved = os.dup(1)
            try:
                with open(os.devnull, "w") as null:
                    os.dup2(null.fileno(), 1)
                    highs = highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            _banner_shown = True
    highs.setOptionValue("output_flag", False)
    return highs


def _finite_or_inf(values: np.ndarray) -> np.ndarray:
    """Map +-inf to HiGHS's infinity (identical on current builds, but explicit)."""
    out = np.array(values, dtype=np.float64, copy=True)
    out[out >= highspy.kHighsInf] = highspy.kHighsInf
    out[out <= -highspy.kHighsInf] = -highspy.kHighsInf
    return out
