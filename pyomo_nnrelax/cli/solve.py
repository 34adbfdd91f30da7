"""``nnrelax solve``: optimise one output of a model and check the optimum with onnxruntime."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..options import BOUND_METHODS, FORMULATIONS
from .common import INPUT_BOUNDS, MODEL, TIME_LIMIT, cli_box, stdout_to_stderr


def _solve_contrib(m, name: str, time_limit: float | None) -> dict[str, Any]:
    """Solve with a ``pyomo.contrib.solver`` solver (uniform options), loading any solution."""
    from pyomo.contrib.solver.common.factory import SolverFactory
    from pyomo.contrib.solver.common.results import TerminationCondition

    options = {"load_solutions": False, "raise_exception_on_nonoptimal_result": False}
    if time_limit is not None:
        options["time_limit"] = time_limit
    start = time.perf_counter()
    result = SolverFactory(name).solve(m, **options)
    seconds = time.perf_counter() - start
    found = result.incumbent_objective is not None
    if found:
        result.solution_loader.load_vars()
    nodes = getattr(result.extra_info, "mip_node_count", None)
    condition = result.termination_condition
    return {
        "status": condition.name,
        "optimal": condition == TerminationCondition.convergenceCriteriaSatisfied,
        "solution": found,
        "objective": result.incumbent_objective,
        "bound": result.objective_bound,
        "seconds": seconds,
        "nodes": None if nodes is None else int(nodes),
    }


def _legacy_solver(name: str, time_limit: float | None):
    """A ``pyo.SolverFactory`` solver, checked before any model is built (its own options; no
    uniform time limit)."""
    import pyomo.environ as pyo

    if time_limit is not None:
        raise click.UsageError(
            f"--time-limit works with the solvers of pyomo.contrib.solver, not {name!r}"
        )
    solver = pyo.SolverFactory(name)
    if solver is None or not solver.available(exception_flag=False):
        raise click.ClickException(f"solver {name!r} is not available")
    return solver


def _solve_legacy(m, solver) -> dict[str, Any]:
    """Solve with a solver from :func:`_legacy_solver`."""
    import pyomo.environ as pyo

    start = time.perf_counter()
    result = solver.solve(m, load_solutions=False)
    seconds = time.perf_counter() - start
    found = len(result.solution) > 0
    if found:
        m.solutions.load_from(result)
    condition = result.solver.termination_condition
    return {
        "status": str(condition),
        "optimal": condition == pyo.TerminationCondition.optimal,
        "solution": found,
        "objective": pyo.value(m.obj) if found else None,
        "bound": None,
        "seconds": seconds,
        "nodes": None,
    }


@click.command()
@MODEL
@click.option(
    "--minimize/--maximize", "minimize", default=True, show_default=True, help="Optimisation sense."
)
@click.option(
    "--output",
    "output_index",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of the (flattened) network output to optimise.",
)
@click.option("--formulation", type=click.Choice(FORMULATIONS), default="bigm", show_default=True)
@click.option(
    "--bounds",
    "method",
    type=click.Choice(BOUND_METHODS),
    help="Pre-activation bounds. Default: stored ones matching the box, else interval.",
)
@INPUT_BOUNDS
@click.option(
    "--solver",
    default="highs",
    show_default=True,
    help="A pyomo.contrib.solver name (highs, gurobi_direct, ...) or any "
    "pyo.SolverFactory name (appsi_highs, cbc, ...).",
)
@TIME_LIMIT
def solve(
    model: Path,
    minimize: bool,
    output_index: int,
    formulation: str,
    method: str | None,
    input_bounds,
    solver: str,
    time_limit: float | None,
) -> None:
    """Optimise one output of MODEL; check the optimum with onnxruntime."""
    import pyomo.environ as pyo
    from pyomo.contrib.solver.common.factory import SolverFactory

    from ..block import NNBlock
    from ..experiments.measure import objective_expression
    from ..onnx import read_onnx

    network = read_onnx(model)
    if output_index >= network.n_outputs:
        raise click.BadParameter(
            f"the network has {network.n_outputs} outputs", param_hint="'--output'"
        )
    legacy = None if solver in SolverFactory else _legacy_solver(solver, time_limit)
    m = pyo.ConcreteModel()
    with stdout_to_stderr():
        m.nn = NNBlock(
            model,
            input_bounds=cli_box(network, input_bounds),
            formulation=formulation,
            bounds=method,
            bound_time_limit=time_limit,
        )
        weights = np.eye(network.n_outputs)[output_index]
        m.obj = pyo.Objective(
            expr=objective_expression(m.nn, weights),
            sense=pyo.minimize if minimize else pyo.maximize,
        )
        if legacy is None:
            stats = _solve_contrib(m, solver, time_limit)
        else:
            stats = _solve_legacy(m, legacy)
    nodes = "n/a" if stats["nodes"] is None else stats["nodes"]
    click.echo(f"{m.nn.summary()}")
    click.echo(
        f"status: {stats['status']} (solver {solver}), time {stats['seconds']:.3f} s, nodes {nodes}"
    )
    if not stats["solution"]:
        raise click.ClickException(f"{solver} found no solution: {stats['status']}")
    check = m.nn.check()
    word = "minimum" if minimize else "maximum"
    click.echo(
        f"{word} of output {output_index}: {stats['objective']:.10g}"
        + ("" if stats["bound"] is None else f" (bound {stats['bound']:.10g})")
    )
    click.echo(f"arg{word[:3]}: {np.array2string(check.inputs, precision=8)}")
    click.echo(f"check against onnxruntime: {check}")
