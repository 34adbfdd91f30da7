"""``nnrelax solve``: optimise one output of a model and check the optimum with onnxruntime.

An answer whose outputs differ from onnxruntime's by more than the solver's tolerances explain
is printed as not optimal, naming the MILP's largest constant (the big-M scale), and the
command exits 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..options import BOUND_METHODS, FORMULATIONS
from .common import (
    INPUT_BOUNDS,
    MODEL,
    TIME_LIMIT,
    Interrupted,
    cli_box,
    stdout_to_stderr,
    warnings_as_lines,
)


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
@click.option(
    "--node-limit",
    type=click.IntRange(min=1),
    help="Branch-and-bound nodes at most (HiGHS's mip_max_nodes; --solver highs only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def solve(
    model: Path,
    minimize: bool,
    output_index: int,
    formulation: str,
    method: str | None,
    input_bounds,
    solver: str,
    time_limit: float | None,
    node_limit: int | None,
    as_json: bool,
) -> None:
    """Optimise one output of MODEL; check the optimum with onnxruntime.

    A solve stopped by --time-limit or --node-limit reports the best point known (the
    solver's, or the best of a sample of forward passes it was warm-started from), the proven
    bound and the gap.  A point whose outputs differ from onnxruntime's by more than the
    solver's tolerances explain is reported not optimal, and the command exits 1.
    """
    import pyomo.environ as pyo

    from ..block import NNBlock
    from ..measure import objective_expression
    from ..onnx import read_onnx
    from ..solve import check_solver, solve_model

    try:
        checked = check_solver(solver)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--solver'") from None
    if time_limit is not None and not checked.contrib:
        raise click.UsageError(
            f"--time-limit works with the solvers of pyomo.contrib.solver, not {solver!r}"
        )
    if node_limit is not None and solver != "highs":
        raise click.UsageError(f"--node-limit works with --solver highs, not {solver!r}")
    network = read_onnx(model)
    if output_index >= network.n_outputs:
        raise click.BadParameter(
            f"the network has {network.n_outputs} outputs", param_hint="'--output'"
        )
    m = pyo.ConcreteModel()
    tightening = {"bound_time_limit": time_limit} if method in ("lp", "milp") else {}
    options = None if node_limit is None else {"mip_max_nodes": node_limit}
    with stdout_to_stderr(), warnings_as_lines():
        m.nn = NNBlock(
            model,
            input_bounds=cli_box(network, input_bounds),
            formulation=formulation,
            bounds=method,
            **tightening,
        )
        m.obj = pyo.Objective(
            expr=objective_expression(m.nn, np.eye(network.n_outputs)[output_index]),
            sense=pyo.minimize if minimize else pyo.maximize,
        )
        try:
            stats = solve_model(
                m, time_limit, load=True, solver=solver, start=m.nn, options=options
            )
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted before the solve ended; nothing was written (solve writes no "
                "file); run it again, with --time-limit to get the best point known at a limit"
            ) from None
    check = m.nn.check()
    report = solve_report(m.nn, stats, check, solver, output_index, minimize)
    click.echo(json.dumps(report, indent=2) if as_json else format_solve(m.nn.summary(), report))
    if stats.check_failed:
        raise click.ClickException(diagnosis(report))


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def solve_report(block, stats, check, solver: str, output_index: int, minimize: bool) -> dict:
    """What ``solve`` prints: the solve's figures, the point, and the onnxruntime check."""
    return {
        "solver": solver,
        "sense": "min" if minimize else "max",
        "output": output_index,
        "status": stats.status,
        "optimal": stats.optimal,
        "objective": _number(stats.objective),
        "bound": _number(stats.bound),
        "gap": _number(stats.gap),
        "incumbent": stats.incumbent,
        "seconds": stats.seconds,
        "nodes": stats.nodes,
        "binaries": int(block.matrix_model.integer.sum()),
        "point": check.inputs.tolist(),
        "network_outputs": check.block_outputs.tolist(),
        "onnxruntime_outputs": check.onnx_outputs.tolist(),
        "max_abs_error": check.max_abs_error,
        "check_passed": not stats.check_failed,
        "solver_check_error": _number(stats.check_error),
        "check_tolerance": _number(stats.check_tolerance),
        "largest_constant": _number(stats.largest_constant),
    }


def diagnosis(report: dict[str, Any]) -> str:
    """Why a failed check means a wrong answer, naming the MILP's constant scale."""
    return (
        f"the solver's point does not reproduce the network: its outputs differ from "
        f"onnxruntime's by {report['solver_check_error']:.3g}, more than the solver's "
        f"feasibility tolerances explain ({report['check_tolerance']:.3g}); the MILP's "
        f"constants (big-M and weights) reach {report['largest_constant']:.3g}, too large for "
        "the solver to hold its rows to its tolerance: tighten the bounds (--bounds lp or "
        "milp) or regularize the network's weights"
    )


def format_solve(summary: str, report: dict[str, Any]) -> str:
    """The human-readable form of :func:`solve_report`."""
    word = "minimum" if report["sense"] == "min" else "maximum"
    lines = [
        summary,
        f"status: {report['status']} (solver {report['solver']}), time "
        f"{report['seconds']:.3f} s, nodes {'n/a' if report['nodes'] is None else report['nodes']}",
    ]
    value = f"{report['objective']:.10g}"
    bound = "" if report["bound"] is None else f" (bound {report['bound']:.10g})"
    if report["optimal"]:
        lines.append(f"{word} of output {report['output']}: {value}{bound}")
    elif not report["check_passed"]:
        lines.append(f"not optimal: {diagnosis(report)}")
        lines.append(f"best known {word[:3]} of output {report['output']}: {value}{bound}")
    else:
        source = {"solver": "the solver's incumbent", "start": "the best sampled forward pass"}
        gap = "" if report["gap"] is None else f", gap {report['gap']:.4g}"
        lines.append(
            f"not proven optimal: best known {word[:3]} of output {report['output']}: {value} "
            f"({source[report['incumbent']]}){bound}{gap}"
        )
    lines.append(f"arg{word[:3]}: {np.array2string(np.array(report['point']), precision=8)}")
    lines.append(
        f"check against onnxruntime: network {report['network_outputs']}, onnxruntime "
        f"{report['onnxruntime_outputs']}, max |difference| {report['max_abs_error']:.3g}"
    )
    return "\n".join(lines)
