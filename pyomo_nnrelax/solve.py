"""Solve a Pyomo model holding an embedded network with any solver Pyomo knows, and report
what is known at the end: the incumbent, the proven bound, the gap, and whether it is optimal.

* A solver is checked before anything is built or solved: an unknown name raises
  ``ValueError`` listing the names, an unavailable one :class:`~pyomo_nnrelax.SolverError`;
  neither lets Pyomo print on standard output.
* ``pyomo.contrib.solver`` solvers (``highs``, ``gurobi_direct``, ...) take a time limit; the
  older ``pyo.SolverFactory`` ones (``appsi_highs``, ``cbc``, ...) are run with their defaults.
* An embedded network always has feasible points.  With ``start=`` a block is warm-started
  from the best of a sample of forward passes; a solve that stops at a limit with no better
  incumbent reports that point (``incumbent == "start"``), after checking that it satisfies
  every constraint of the model.
* Ctrl-C stops a HiGHS solve at its next check and raises ``KeyboardInterrupt`` (Pyomo's
  HiGHS interface alone keeps solving until its limit and loses the interrupt).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyomo.environ as pyo
from pyomo.contrib.solver.common.factory import SolverFactory as ContribFactory
from pyomo.contrib.solver.common.results import TerminationCondition

from .errors import SolverError

LIMITS = (
    TerminationCondition.maxTimeLimit,
    TerminationCondition.iterationLimit,
    TerminationCondition.interrupted,
)
LEGACY_LIMITS = (
    pyo.TerminationCondition.maxTimeLimit,
    pyo.TerminationCondition.maxIterations,
    pyo.TerminationCondition.maxEvaluations,
    pyo.TerminationCondition.userInterrupt,
)
FEASIBILITY_TOLERANCE = 1e-6
"""Largest violation of a constraint or bound at which a start point still counts as feasible."""


@dataclass(frozen=True)
class SolveStats:
    """One solve: the incumbent's value, the proven bound, time, nodes and status.

    ``objective`` is NaN when no feasible point is known; ``incumbent`` says where it came
    from: ``"solver"``, ``"start"`` (the warm start, when the solver found nothing better) or
    ``"none"``.  ``bound`` is NaN when the solver proved none; ``nodes`` is None when the
    solver does not report them.
    """

    objective: float
    bound: float
    seconds: float
    nodes: int | None
    optimal: bool
    status: str
    incumbent: str = "solver"

    @property
    def gap(self) -> float:
        """``|objective - bound|``: how far the incumbent may be from the optimum."""
        return abs(self.objective - self.bound)


@dataclass(frozen=True)
class _Solver:
    """A checked solver: its name, family and object."""

    name: str
    contrib: bool
    opt: object


def check_solver(name: str) -> _Solver:
    """The solver called ``name``, after checking that Pyomo knows it and that it can run here.

    Raises ``ValueError`` for an unknown name (listing the known ones) and
    :class:`SolverError` for a known solver that is not available (not installed, no licence).
    """
    if name in ContribFactory:
        opt = ContribFactory(name)
        availability = opt.available()
        if not availability:
            raise SolverError(
                f"solver {name!r} is not available here ({availability.name}): install the "
                "solver and its Python package, or choose another (highs needs nothing more)"
            )
        return _Solver(name, True, opt)
    if name in pyo.SolverFactory:
        opt = pyo.SolverFactory(name)
        if not opt.available(exception_flag=False):
            raise SolverError(f"solver {name!r} is not available here (not installed?)")
        return _Solver(name, False, opt)
    raise ValueError(
        f"unknown solver {name!r}; pyomo.contrib.solver offers {sorted(ContribFactory)}, and "
        "any pyo.SolverFactory name works too (appsi_highs, cbc, glpk, gurobi, ...)"
    )


def solve_model(
    m: pyo.ConcreteModel,
    time_limit: float | None = None,
    load: bool = True,
    solver: str = "highs",
    start=None,
) -> SolveStats:
    """Solve ``m`` and return its :class:`SolveStats`.

    Parameters
    ----------
    m : ConcreteModel
        A model with one active objective, e.g. one holding an :class:`~pyomo_nnrelax.NNBlock`.
    time_limit : float, optional
        Seconds; ``pyomo.contrib.solver`` solvers only (the older interfaces differ per solver).
    load : bool
        Load the incumbent into the model's variables, as users expect after a solve (False
        leaves them as they were; solvers of the older interface always load theirs).
    solver : str
        See :func:`check_solver`.
    start : NNBlock, optional
        Warm-start this block first (:meth:`~pyomo_nnrelax.NNBlock.warm_start`): solvers that
        take MIP starts get it, and it is the reported incumbent when the solver stops at a
        limit without a better one (the variables then hold it).

    Raises :class:`SolverError` when the solve ends with no feasible point and not at a limit.
    """
    checked = check_solver(solver)
    if time_limit is not None and not checked.contrib:
        raise ValueError(
            f"time_limit works with the solvers of pyomo.contrib.solver, not {solver!r}"
        )
    objective = _active_objective(m)
    point = start.warm_start() if start is not None else None
    start_value = pyo.value(objective.expr) if point is not None else None
    began = time.perf_counter()
    with _interruptible(checked.opt) as interrupted:
        stats = (_run_contrib if checked.contrib else _run_legacy)(checked, m, time_limit, load)
    if interrupted:
        raise KeyboardInterrupt
    stats = _with_seconds(stats, time.perf_counter() - began)
    if point is not None and not stats.optimal and _better(start_value, stats, objective):
        start.warm_start(point)
        if _feasible(m):
            stats = _replace_incumbent(stats, start_value)
    if stats.incumbent == "none" and not stats.status.startswith(_LIMIT_NAMES):
        raise SolverError(f"{solver} found no solution of the model: {stats.status}")
    return stats


# ---------------------------------------------------------------------- solver families
def _run_contrib(checked: _Solver, m, time_limit: float | None, load: bool) -> SolveStats:
    options = {"load_solutions": False, "raise_exception_on_nonoptimal_result": False}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    try:
        result = checked.opt.solve(m, **options)
    except Exception as exc:  # a solver's own failure, reported as ours with its cause
        raise SolverError(f"{checked.name} failed: {type(exc).__name__}: {exc}") from exc
    condition = result.termination_condition
    found = result.incumbent_objective is not None
    if load and found:
        result.solution_loader.load_vars()
    return SolveStats(
        objective=float(result.incumbent_objective) if found else math.nan,
        bound=math.nan if result.objective_bound is None else float(result.objective_bound),
        seconds=math.nan,
        nodes=int(getattr(result.extra_info, "mip_node_count", 0) or 0),
        optimal=condition == TerminationCondition.convergenceCriteriaSatisfied,
        status=condition.name,
        incumbent="solver" if found else "none",
    )


def _run_legacy(checked: _Solver, m, time_limit: float | None, load: bool) -> SolveStats:
    try:
        result = checked.opt.solve(m, load_solutions=False)
    except Exception as exc:  # a solver's own failure, reported as ours with its cause
        raise SolverError(f"{checked.name} failed: {type(exc).__name__}: {exc}") from exc
    condition = result.solver.termination_condition
    found = len(result.solution) > 0
    if found:
        m.solutions.load_from(result)
    minimise = _active_objective(m).sense == pyo.minimize
    bound = result.problem.lower_bound if minimise else result.problem.upper_bound
    return SolveStats(
        objective=float(pyo.value(_active_objective(m).expr)) if found else math.nan,
        bound=float(bound) if bound is not None and math.isfinite(bound) else math.nan,
        seconds=math.nan,
        nodes=None,
        optimal=condition == pyo.TerminationCondition.optimal,
        status=condition.name if hasattr(condition, "name") else str(condition),
        incumbent="solver" if found else "none",
    )


_LIMIT_NAMES = tuple(c.name for c in LIMITS) + tuple(c.name for c in LEGACY_LIMITS)


# ---------------------------------------------------------------------- helpers
def _active_objective(m) -> pyo.Objective:
    objectives = list(m.component_data_objects(pyo.Objective, active=True))
    if len(objectives) != 1:
        raise ValueError(f"the model needs exactly one active objective, it has {len(objectives)}")
    return objectives[0]


def _better(start_value: float, stats: SolveStats, objective) -> bool:
    """Whether the start point beats the solver's incumbent (or there is none)."""
    if math.isnan(stats.objective):
        return True
    if objective.sense == pyo.minimize:
        return start_value < stats.objective
    return start_value > stats.objective


def _feasible(m) -> bool:
    """Whether the current values satisfy every active constraint, variable bound and
    integrality of ``m``."""
    tol = FEASIBILITY_TOLERANCE
    for var in m.component_data_objects(pyo.Var, active=True):
        if var.value is None:
            return False
        lb, ub = var.lb, var.ub
        if (lb is not None and var.value < lb - tol) or (ub is not None and var.value > ub + tol):
            return False
        if var.is_integer() and abs(var.value - round(var.value)) > tol:
            return False
    for con in m.component_data_objects(pyo.Constraint, active=True):
        body = pyo.value(con.body, exception=False)
        if body is None:
            return False
        lb, ub = pyo.value(con.lower), pyo.value(con.upper)
        if (lb is not None and body < lb - tol) or (ub is not None and body > ub + tol):
            return False
    return True


def _with_seconds(stats: SolveStats, seconds: float) -> SolveStats:
    return SolveStats(**{**stats.__dict__, "seconds": seconds})


def _replace_incumbent(stats: SolveStats, value: float) -> SolveStats:
    return SolveStats(**{**stats.__dict__, "objective": float(value), "incumbent": "start"})


@contextmanager
def _interruptible(opt) -> Iterator[list]:
    """While solving, Ctrl-C asks HiGHS to stop at its next check instead of being lost.

    Pyomo's HiGHS interface turns on highspy's interrupt callbacks but never calls
    ``cancelSolve``, and the interrupt raised inside a callback is swallowed; this handler
    calls it and records the interrupt, so that the caller raises ``KeyboardInterrupt`` once
    the solver has returned.  Other handlers (and threads other than the main one) are left
    alone.
    """
    interrupted: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield interrupted
        return

    def handler(signum, frame) -> None:
        interrupted.append(signum)
        cancel = getattr(getattr(opt, "_solver_model", None), "cancelSolve", None)
        if cancel is None:
            raise KeyboardInterrupt
        cancel()

    signal.signal(signal.SIGINT, handler)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
