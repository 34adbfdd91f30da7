"""Solve a Pyomo model holding an embedded network with any solver Pyomo knows, and report
what is known at the end: the incumbent, the proven bound, the gap, and whether it is optimal.

* A solver is checked before anything is built or solved: an unknown name raises
  ``ValueError`` listing the names, an unavailable one :class:`~pyomo_nnrelax.SolverError`;
  neither lets Pyomo print on standard output.
* ``pyomo.contrib.solver`` solvers (``highs``, ``gurobi_direct``, ...) take a time limit; the
  older ``pyo.SolverFactory`` ones (``appsi_highs``, ``cbc``, ...) only their own options.
* An embedded network always has feasible points.  With ``start=`` a block is warm-started
  from the best of a sample of forward passes; a solve that stops at a limit with no better
  incumbent reports that point (``incumbent == "start"``), after checking that it satisfies
  every constraint of the model.
* Ctrl-C stops a HiGHS solve at its next check and raises ``KeyboardInterrupt`` (Pyomo's
  HiGHS interface alone keeps solving until its limit and loses the interrupt).
* Every embedded network (:class:`Checked`) is checked at the incumbent against onnxruntime:
  beyond what the solver's tolerances explain (:func:`output_tolerance`) it is not optimal,
  whatever the solver said.  Such answers come from constants too large for the solver,
  which a block keeps moderate (:func:`rescaled`) and warns about (:func:`scale_warning`).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pyomo.environ as pyo
from pyomo.contrib.solver.common.factory import SolverFactory as ContribFactory
from pyomo.contrib.solver.common.results import TerminationCondition

from . import matrices
from .bounds import NetworkBounds
from .errors import SolverError
from .network import Layer, Network

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
"""Largest violation of a constraint or bound at which a start point still counts as feasible;
also HiGHS's default ``mip_feasibility_tolerance`` (rows, bounds and integrality)."""
MODERATE = 2.0**10
"""Neurons whose bound magnitude lies within ``[1 / MODERATE, MODERATE]`` are not rescaled."""


@dataclass(frozen=True)
class SolveStats:
    """One solve: the incumbent's value, the proven bound, time, nodes and status.

    ``objective`` is NaN when no feasible point is known; ``incumbent`` says where it came
    from: ``"solver"``, ``"start"`` (the warm start, when the solver found nothing better) or
    ``"none"``.  ``bound`` is NaN when the solver proved none; ``nodes`` is None when the
    solver does not report them.

    ``check_error`` is the largest ``|embedded outputs - onnxruntime|`` at the solver's
    incumbent, ``check_tolerance`` what the solver's tolerances allow there, and
    ``largest_constant`` the largest big-M constant or weight of that block's MILP (NaN: no
    check).  ``optimal`` is False when the check failed, whatever the solver said.
    """

    objective: float
    bound: float
    seconds: float
    nodes: int | None
    optimal: bool
    status: str
    incumbent: str = "solver"
    check_error: float = math.nan
    check_tolerance: float = math.nan
    largest_constant: float = math.nan

    @property
    def gap(self) -> float:
        """``|objective - bound|``: how far the incumbent may be from the optimum."""
        return abs(self.objective - self.bound)

    @property
    def check_failed(self) -> bool:
        """Whether an embedded network's outputs at the incumbent differ from onnxruntime by
        more than the solver's tolerances explain: the answer is not the network's."""
        return self.check_error > self.check_tolerance


@dataclass(frozen=True)
class CheckResult:
    """An embedded network's outputs against onnxruntime at the block's inputs.

    ``tolerance`` (per output) is how far they may differ through the solver's feasibility
    tolerances and float32 rounding (:func:`output_tolerance`); ``largest_constant`` is the
    largest constant of the block's MILP, what makes a solver's answer drift further.
    """

    inputs: np.ndarray
    block_outputs: np.ndarray
    onnx_outputs: np.ndarray
    tolerance: np.ndarray
    largest_constant: float

    @property
    def max_abs_error(self) -> float:
        error = np.abs(self.block_outputs - self.onnx_outputs)
        return float(np.max(np.where(np.isnan(error), np.inf, error)))

    @property
    def passed(self) -> bool:
        """Whether every output is within its tolerance."""
        return bool(np.all(np.abs(self.block_outputs - self.onnx_outputs) <= self.tolerance))

    def __str__(self) -> str:
        return (
            f"inputs {np.array2string(self.inputs, precision=6)}: block outputs "
            f"{np.array2string(self.block_outputs, precision=8)}, onnxruntime "
            f"{np.array2string(self.onnx_outputs, precision=8)}, max |difference| "
            f"{self.max_abs_error:.3g} (tolerance {float(np.max(self.tolerance)):.3g})"
        )


@runtime_checkable
class Checked(Protocol):
    """A block :func:`solve_model` checks after a solve (an ``NNBlock``): ``check_solution``
    compares its variables' values with a reference, or gives None (e.g. an LP relaxation)."""

    def check_solution(self) -> CheckResult | None: ...


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
    options: dict | None = None,
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
    start : NNBlock or list of NNBlock, optional
        Warm-start these blocks first (:meth:`~pyomo_nnrelax.NNBlock.warm_start`): solvers that
        take MIP starts get it, and it is the reported incumbent when the solver stops at a
        limit without a better one and it satisfies the whole model (the variables then hold
        it).
    options : dict, optional
        The solver's own options, passed as they are, e.g. ``{"mip_max_nodes": 100}`` (HiGHS:
        stop after 100 branch-and-bound nodes, with the incumbent, bound and gap reached) or
        ``{"mip_feasibility_tolerance": 1e-9}``.

    Every embedded network (:class:`Checked` block) is then checked at the solver's incumbent
    (loaded for the check and put back when ``load`` is False); a check beyond the solver's
    tolerances makes the result not optimal (:attr:`SolveStats.check_failed`).  Raises
    :class:`SolverError` when the solve ends with no feasible point and not at a limit.
    """
    checked = check_solver(solver)
    if time_limit is not None and not checked.contrib:
        raise ValueError(
            f"time_limit works with the solvers of pyomo.contrib.solver, not {solver!r}"
        )
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of solver options, got {type(options).__name__}")
    objective = _active_objective(m)
    starts = [] if start is None else list(start) if isinstance(start, (list, tuple)) else [start]
    points = [block.warm_start() for block in starts]
    start_value = pyo.value(objective.expr, exception=False) if starts else None
    began = time.perf_counter()
    with _interruptible(checked.opt) as interrupted:
        run = _run_contrib if checked.contrib else _run_legacy
        stats, loader = run(checked, m, time_limit, load, dict(options or {}))
    if interrupted:
        raise KeyboardInterrupt
    stats = _with_check(m, _with_seconds(stats, time.perf_counter() - began), loader)
    if start_value is not None and not stats.optimal and _better(start_value, stats, objective):
        for block, point in zip(starts, points):
            block.warm_start(point)
        if _feasible(m):
            stats = _replace_incumbent(stats, start_value)
    if stats.incumbent == "none" and not stats.status.startswith(_LIMIT_NAMES):
        raise SolverError(f"{solver} found no solution of the model: {stats.status}")
    return stats


# ---------------------------------------------------------------------- solver families
def _run_contrib(
    checked: _Solver, m, time_limit: float | None, load: bool, options: dict
) -> tuple[SolveStats, Callable[[], None] | None]:
    config = {"load_solutions": False, "raise_exception_on_nonoptimal_result": False}
    if time_limit is not None:
        config["time_limit"] = float(time_limit)
    if options:
        config["solver_options"] = options
    try:
        result = checked.opt.solve(m, **config)
    except Exception as exc:  # a solver's own failure, reported as ours with its cause
        raise SolverError(f"{checked.name} failed: {type(exc).__name__}: {exc}") from exc
    condition = result.termination_condition
    found = result.incumbent_objective is not None
    if load and found:
        result.solution_loader.load_vars()
    stats = SolveStats(
        objective=float(result.incumbent_objective) if found else math.nan,
        bound=math.nan if result.objective_bound is None else float(result.objective_bound),
        seconds=math.nan,
        nodes=int(getattr(result.extra_info, "mip_node_count", 0) or 0),
        optimal=condition == TerminationCondition.convergenceCriteriaSatisfied,
        status=condition.name,
        incumbent="solver" if found else "none",
    )
    return stats, (result.solution_loader.load_vars if found and not load else None)


def _run_legacy(
    checked: _Solver, m, time_limit: float | None, load: bool, options: dict
) -> tuple[SolveStats, Callable[[], None] | None]:
    try:
        result = checked.opt.solve(m, load_solutions=False, options=options)
    except Exception as exc:  # a solver's own failure, reported as ours with its cause
        raise SolverError(f"{checked.name} failed: {type(exc).__name__}: {exc}") from exc
    condition = result.solver.termination_condition
    found = len(result.solution) > 0
    if found:
        m.solutions.load_from(result)
    minimise = _active_objective(m).sense == pyo.minimize
    bound = result.problem.lower_bound if minimise else result.problem.upper_bound
    stats = SolveStats(
        objective=float(pyo.value(_active_objective(m).expr)) if found else math.nan,
        bound=float(bound) if bound is not None and math.isfinite(bound) else math.nan,
        seconds=math.nan,
        nodes=None,
        optimal=condition == pyo.TerminationCondition.optimal,
        status=condition.name if hasattr(condition, "name") else str(condition),
        incumbent="solver" if found else "none",
    )
    return stats, None


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


def _with_check(m, stats: SolveStats, loader: Callable[[], None] | None) -> SolveStats:
    """``stats`` with the checks of the model's embedded networks at the incumbent (loaded
    for the check and put back when ``loader`` is given), not optimal if one failed."""
    blocks = [b for b in m.component_data_objects(pyo.Block, active=True) if isinstance(b, Checked)]
    if not blocks or stats.incumbent == "none":
        return stats
    saved = [(v, v.value) for v in m.component_data_objects(pyo.Var)] if loader else []
    try:
        if loader:
            loader()
        results = [r for r in (b.check_solution() for b in blocks) if r is not None]
    finally:
        for var, value in saved:
            var.set_value(value, skip_validation=True)
    if not results:
        return stats
    worst = max(results, key=lambda r: r.max_abs_error / max(float(np.max(r.tolerance)), 1e-300))
    return dataclasses.replace(
        stats,
        optimal=stats.optimal and all(r.passed for r in results),
        check_error=worst.max_abs_error,
        check_tolerance=float(np.max(worst.tolerance)),
        largest_constant=worst.largest_constant,
    )


# ---------------------------------------------------------------------- numerics
def output_tolerance(network: Network, bounds: NetworkBounds, x: np.ndarray) -> np.ndarray:
    """How far a MILP's outputs at input ``x`` may lie from onnxruntime's, per output, for the
    ``network`` and ``bounds`` the MILP was built from.  Carried forward through ``|W|``: the
    solver's rows, bounds and binaries hold within ``t = 10 x`` :data:`FEASIBILITY_TOLERANCE`,
    which moves a neuron by ``2 t``, plus ``t M`` if unstable with big-M ``M``; and float32
    rounding, ``(fan-in + 2) eps (|W| |h| + |b|)`` per neuron, zero where a ReLU stays off.
    """
    eps, tol = 2.0**-24, 10 * FEASIBILITY_TOLERANCE
    h = np.asarray(x, dtype=np.float64).reshape(-1)
    pre = network.pre_activations(h[None, :])
    solver, rounding = np.zeros(h.size), eps * np.abs(h)
    for l, layer in enumerate(network.layers):
        size = abs(layer.weight)
        z = pre[l][0]
        solver = size @ solver + 2 * tol
        magnitude = size @ np.abs(h) + np.abs(layer.bias)
        rounding = size @ rounding + eps * (layer.n_in + 2) * magnitude
        if l == len(network.layers) - 1:
            break
        unstable = layer.relu_mask & (bounds.lower[l] < 0) & (bounds.upper[l] > 0)
        big_m = np.maximum(-bounds.lower[l], bounds.upper[l])
        solver = solver + np.where(unstable, tol * big_m, 0.0)
        rounding = np.where(layer.relu_mask & (z + rounding <= 0), 0.0, rounding)
        h = layer.activate(z)
    return solver + rounding


def rescaled(
    network: Network, bounds: NetworkBounds, band: float = MODERATE
) -> tuple[Network, NetworkBounds, tuple[np.ndarray, ...]]:
    """The same function with moderate big-M constants, its bounds, and per layer the factor
    ``c > 0`` each neuron is divided by.

    A hidden neuron whose bound magnitude ``m = max(|L|, |U|)`` lies outside ``[1 / band,
    band]`` gets the power of two nearest to ``m`` (exact in floating point), any other 1.
    ReLU and linear neurons are positively homogeneous (``relu(z / c) = relu(z) / c``), so its
    row, bias and bounds divide by ``c`` and the next layer's column multiplies by ``c``.  A
    layer whose weights change loses its weight tie (the MILP has no use for it).
    """
    layers, scales = list(network.layers), []
    for l, (lo, hi) in enumerate(zip(bounds.lower, bounds.upper)):
        size = np.maximum(np.abs(lo), np.abs(hi))
        far = (size > 0) & ((size > band) | (size < 1 / band)) & (l < len(layers) - 1)
        c = np.where(far, np.exp2(np.round(np.log2(np.where(far, size, 1.0)))), 1.0)
        scales.append(c)
        if far.any():
            a, b = layers[l], layers[l + 1]
            layers[l] = Layer(matrices.scale_rows(a.weight, 1.0 / c), a.bias / c, a.activation)
            layers[l + 1] = Layer(matrices.scale_columns(b.weight, c), b.bias, b.activation)
    lower = tuple(lo / c for lo, c in zip(bounds.lower, scales))
    upper = tuple(hi / c for hi, c in zip(bounds.upper, scales))
    model_bounds = dataclasses.replace(bounds, lower=lower, upper=upper)
    return network.with_layers(layers), model_bounds, tuple(scales)


def scale_warning(largest_constant: float, outputs: np.ndarray) -> str | None:
    """A warning when the MILP's largest constant times the solver's feasibility tolerance
    is over 1e-3 of the outputs' scale, their median magnitude over a sample ``outputs``:
    the solver's answer may then be off by more than the user would accept."""
    size = np.abs(np.asarray(outputs, dtype=np.float64))
    scale = float(np.median(size) or np.max(size, initial=0.0))
    if scale == 0.0 or largest_constant * FEASIBILITY_TOLERANCE <= 1e-3 * scale:
        return None
    return (
        f"the MILP's largest constant (big-M or weight) is {largest_constant:.3g}; times the "
        f"solver's feasibility tolerance {FEASIBILITY_TOLERANCE:g}, it is large next to the "
        f"outputs' scale {scale:.3g}: the solver's answer may not be the network's"
    )


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
