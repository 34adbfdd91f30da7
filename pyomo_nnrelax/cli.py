"""The ``nnrelax`` command line: inspect, tighten, refine, solve and sweep ONNX ReLU networks.

Every command reads an ONNX file (or a data file) and prints results on stdout; progress bars
and errors go to stderr.  Errors are one line without a traceback; the exit code is 0 on
success, 1 on a failure while running and 2 on a usage error.  No command overwrites its input,
and existing outputs are only replaced with ``--force``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import numpy as np

from . import __version__
from .errors import NNRelaxError
from .network import Network
from .sweep import input_box, parse_regularizer, read_data

BOUND_CHOICES = ("interval", "lp", "milp", "stored")
USER_ERRORS = (NNRelaxError, FileNotFoundError, FileExistsError, ValueError)


# ---------------------------------------------------------------------- pure parsing
def parse_bounds_text(text: str) -> list[tuple[float, float]]:
    """``"-2,2;-1,1"`` -> ``[(-2.0, 2.0), (-1.0, 1.0)]``; one pair may stand for every input.

    Raises ValueError on anything but ``;``-separated pairs of finite numbers with lo <= hi.
    """
    pairs = []
    for i, item in enumerate(text.split(";")):
        parts = item.split(",")
        if len(parts) != 2:
            raise ValueError(f"pair {i} {item.strip()!r} is not 'lo,hi'")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"pair {i} {item.strip()!r} is not two numbers") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"pair {i} {item.strip()!r} is not finite")
        if lo > hi:
            raise ValueError(f"pair {i} {item.strip()!r} is inverted (lo > hi)")
        pairs.append((lo, hi))
    return pairs


def parse_number_list(text: str, kind: Callable[[str], Any]) -> list[Any]:
    """``"1e-4,1e-3"`` -> ``[0.0001, 0.001]`` with ``kind`` (int or float) per item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"empty list {text!r}")
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise ValueError(
            f"{text!r} is not a comma-separated list of {kind.__name__} values"
        ) from None


def parse_arch(text: str) -> tuple[int, ...]:
    """``"2-25-25-1"`` -> ``(2, 25, 25, 1)``: at least two positive widths."""
    try:
        sizes = tuple(int(part) for part in text.split("-"))
    except ValueError:
        raise ValueError(f"--arch {text!r} is not widths joined by '-', e.g. 2-25-25-1") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"--arch {text!r} needs at least two positive widths")
    return sizes


def one_line(message: str) -> str:
    """Collapse a message onto one line (errors are printed as exactly one line)."""
    return " ".join(message.split())


# ---------------------------------------------------------------------- click plumbing
class NNRelaxGroup(click.Group):
    """A click group whose errors are one line on stderr, including the package's own errors."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except USER_ERRORS as exc:
            click.echo(f"Error: {one_line(str(exc))}", err=True)
            code = 1
        except click.Abort:
            click.echo("Aborted.", err=True)
            code = 1
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _callback(parse: Callable[[str], Any]):
    """A click callback applying ``parse`` to a given value, ValueError -> usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return callback


MODEL = click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
INPUT_BOUNDS = click.option(
    "--input-bounds",
    callback=_callback(parse_bounds_text),
    metavar="LO,HI[;LO,HI...]",
    help="Input box: one 'lo,hi' pair per input, or one pair for all. "
    "Default: the box stored in the model, else (refine, sweep) the data's bounding box.",
)
FORCE = click.option("--force", is_flag=True, help="Replace existing output files.")
QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars or messages on stderr.")
TIME_LIMIT = click.option(
    "--time-limit", type=click.FloatRange(min=0, min_open=True), help="Seconds per solve."
)


def _output_option(help_text: str):
    return click.option(
        "-o",
        "--output",
        required=True,
        help=help_text,
        type=click.Path(dir_okay=False, path_type=Path),
    )


def _check_outputs(outputs: Sequence[Path], inputs: Sequence[Path], force: bool) -> None:
    """Refuse to write over an input (ever) or over an existing output (without --force)."""
    sources = {p.resolve() for p in inputs}
    for path in outputs:
        if path.resolve() in sources:
            raise click.UsageError(f"output {path} is an input file; choose another output path")
        if path.exists() and not force:
            raise FileExistsError(f"{path} already exists; pass --force to replace it")


def _layer_bar(quiet: bool, desc: str):
    """A tqdm bar on stderr for ``progress(done, total)`` callbacks, or None when quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit="layer", file=sys.stderr)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr for a while: solver banners must not mix into results."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@click.group(cls=NNRelaxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nnrelax")
def main() -> None:
    """Embed ReLU networks from ONNX in MILPs, tighten their bounds, and train them to be easy."""


# ---------------------------------------------------------------------- inspect
def inspect_report(path: Path, network: Network, box, bounds) -> dict[str, Any]:
    """What ``inspect`` prints: shapes, ONNX ops, and per-layer stability and big-M figures."""
    import onnx

    from .block import big_m_summary, layer_statistics

    layers = layer_statistics(network, bounds)
    unstable, mean_m = big_m_summary(layers)
    graph = onnx.load(os.fspath(path), load_external_data=False).graph
    ops = Counter(node.op_type for node in graph.node)
    return {
        "model": os.fspath(path),
        "input": {"name": network.input_name, "shape": list(network.input_shape)},
        "output": {"name": network.output_name, "shape": list(network.output_shape)},
        "onnx_ops": dict(sorted(ops.items())),
        "widths": list(network.widths),
        "activations": [layer.activation for layer in network.layers],
        "input_bounds": [list(pair) for pair in box.pairs()],
        "bounds": bounds.method,
        "layers": layers,
        "unstable": unstable,
        "mean_big_m": mean_m,
        "max_big_m": max((r["max_big_m"] for r in layers), default=0.0),
    }


def format_inspect(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_report`."""
    ops = ", ".join(f"{op} x{n}" for op, n in report["onnx_ops"].items())
    lines = [
        f"model: {report['model']}",
        f"input {report['input']['name']!r} shape {tuple(report['input']['shape'])}, "
        f"output {report['output']['name']!r} shape {tuple(report['output']['shape'])}",
        f"ONNX ops: {ops}",
        f"widths: {'-'.join(map(str, report['widths']))}",
        f"bounds: {report['bounds']} over {report['input_bounds']}",
        f"{'layer':>5} {'neurons':>7} {'act':>6} {'unstable':>8} {'active':>6} {'inactive':>8} "
        f"{'mean M':>10} {'max M':>10}",
    ]
    for r in report["layers"]:
        lines.append(
            f"{r['layer']:>5} {r['neurons']:>7} {r['activation']:>6} {r['unstable']:>8} "
            f"{r['stable_active']:>6} {r['stable_inactive']:>8} {r['mean_big_m']:>10.4g} "
            f"{r['max_big_m']:>10.4g}"
        )
    lines.append(
        f"unstable neurons (binaries): {report['unstable']}, "
        f"mean big-M {report['mean_big_m']:.4g}, max big-M {report['max_big_m']:.4g}"
    )
    return "\n".join(lines)


@main.command()
@MODEL
@INPUT_BOUNDS
@click.option(
    "--bounds",
    "method",
    type=click.Choice(BOUND_CHOICES),
    default="interval",
    show_default=True,
    help="How pre-activation bounds are computed.",
)
@TIME_LIMIT
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect(
    model: Path, input_bounds, method: str, time_limit: float | None, as_json: bool
) -> None:
    """Show the layers, ONNX ops, neuron stability and big-M constants of MODEL."""
    from .block import resolve_bounds
    from .onnx import read_onnx

    network = read_onnx(model)
    box = input_box(network, input_bounds)
    with _stdout_to_stderr():
        bounds = resolve_bounds(
            network, box, method, model, time_limit, None
        )
    report = inspect_report(model, network, box, bounds)
    click.echo(json.dumps(report, indent=2) if as_json else format_inspect(report))


# ---------------------------------------------------------------------- tighten
@main.command()
@MODEL
@_output_option("Where to write the network with its tightened bounds (ONNX).")
@click.option(
    "--bounds",
    "method",
    type=click.Choice(("lp", "milp")),
    default="lp",
    show_default=True,
    help="Tighten with LPs or MILPs per neuron.",
)
@TIME_LIMIT
@INPUT_BOUNDS
@click.option(
    "--rounding",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Absolute outward rounding of every solved bound.",
)
@FORCE
@QUIET
def tighten(
    model: Path,
    output: Path,
    method: str,
    time_limit: float | None,
    input_bounds,
    rounding: float,
    force: bool,
    quiet: bool,
) -> None:
    """Tighten the bounds of MODEL; write them into the metadata of OUTPUT."""
    from .bounds import interval_bounds
    from .onnx import read_onnx, write_onnx
    from .tightening import tighten_bounds

    _check_outputs([output], [model], force)
    network = read_onnx(model)
    box = input_box(network, input_bounds)
    start = interval_bounds(network, box)
    bar = _layer_bar(quiet, f"tighten ({method})")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        with _stdout_to_stderr():
            tight = tighten_bounds(
                network,
                start,
                method,
                time_limit=time_limit,
                rounding=rounding,
                progress=progress if bar is not None else None,
            )
        if bar is not None and bar.total:
            bar.update(bar.total - bar.n)
    finally:
        if bar is not None:
            bar.close()
    write_onnx(network.with_input_bounds(*box), output, bounds=tight, overwrite=True)
    click.echo(
        f"unstable neurons: {start.unstable_count(network)} (interval) -> "
        f"{tight.unstable_count(network)} ({tight.method})"
    )
    click.echo(f"wrote {output}")


# ---------------------------------------------------------------------- refine
def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def history_paths(output: Path) -> tuple[Path, Path, Path]:
    """JSON, CSV and PNG history files written next to ``output``."""
    stem = output.with_suffix("")
    return tuple(stem.with_name(f"{stem.name}.history{ext}") for ext in (".json", ".csv", ".png"))


@main.command()
@MODEL
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training data: .npz with arrays X and y, or .csv (targets last).",
)
@_output_option("Where to write the refined network (ONNX); the history goes next to it.")
@click.option(
    "--targets",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of target columns at the end of a CSV file.",
)
@click.option(
    "--regularizer",
    "spec",
    default="bw+lp",
    show_default=True,
    help="E.g. bw, bw+lp, 0.5*bw+lp, sn, rs, l1, l2, lp or none.",
)
@click.option(
    "--lam",
    type=click.FloatRange(min=0),
    default=1e-3,
    show_default=True,
    help="Weight of the regularizer.",
)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=20, show_default=True, help="Epochs per round."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--sense",
    type=click.Choice(("min", "max")),
    default="min",
    show_default=True,
    help="Optimisation sense of the downstream MILP (LP gap and measurements).",
)
@INPUT_BOUNDS
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Checkpoint directory. Default: <OUTPUT stem>_rounds next to OUTPUT.",
)
@click.option(
    "--milp-time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds for each round's MILP measurement.",
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --output-dir.")
@FORCE
@QUIET
def refine(
    model: Path,
    data: Path,
    output: Path,
    targets: int,
    spec: str,
    lam: float,
    rounds: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    sense: str,
    input_bounds,
    output_dir: Path | None,
    milp_time_limit: float,
    resume: bool,
    force: bool,
    quiet: bool,
) -> None:
    """Train MODEL toward an easier MILP; write checkpoints and a history."""
    from .onnx import read_onnx
    from .plots import plot_history
    from .training.refine import refine as run_refine

    try:
        regularizer = parse_regularizer(spec, sense)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--regularizer'") from None
    outputs = [output, *history_paths(output)]
    _check_outputs(outputs, [model, data], force or resume)
    X, y = read_data(data, targets)
    network = read_onnx(model)
    box = input_box(network, input_bounds, X)
    with _stdout_to_stderr():
        result = run_refine(
            model,
            X,
            y,
            input_bounds=box,
            rounds=rounds,
            epochs_per_round=epochs,
            regularizer=regularizer,
            lam=lam if regularizer is not None else 0.0,
            output_dir=output_dir or output.with_name(output.stem + "_rounds"),
            milp_time_limit=milp_time_limit,
            sense=sense,
            resume=resume,
            overwrite=force,
            progress=not quiet,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
        )
    shutil.copyfile(result.checkpoints[-1], output)
    json_path, csv_path, png_path = history_paths(output)
    result.history.save(json_path)
    result.history.save(csv_path)
    plot_history(result.history.rows, png_path)
    first, last = result.history.rows[0], result.history.rows[-1]
    click.echo(
        f"rounds {first['round']}..{last['round']} ({result.stopped_by}): unstable "
        f"{first['unstable']} -> {last['unstable']}, LP gap {_number(first['lp_gap'])} -> "
        f"{_number(last['lp_gap'])}"
    )
    click.echo(f"wrote {output}, {json_path.name}, {csv_path.name}, {png_path.name}")


# ---------------------------------------------------------------------- solve
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


@main.command()
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
@click.option(
    "--formulation", type=click.Choice(("bigm", "partition")), default="bigm", show_default=True
)
@click.option(
    "--bounds",
    "method",
    type=click.Choice(BOUND_CHOICES),
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

    from .block import NNBlock
    from .measure import objective_expression
    from .onnx import read_onnx

    network = read_onnx(model)
    if output_index >= network.n_outputs:
        raise click.BadParameter(
            f"the network has {network.n_outputs} outputs", param_hint="'--output'"
        )
    legacy = None if solver in SolverFactory else _legacy_solver(solver, time_limit)
    m = pyo.ConcreteModel()
    with _stdout_to_stderr():
        m.nn = NNBlock(
            model,
            input_bounds=input_box(network, input_bounds),
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


# ---------------------------------------------------------------------- sweep
def _executor(scheduler: str | None, workers: int | None, n_runs: int):
    """A dask ``Client(scheduler).get_executor()``, or a spawned local process pool."""
    if scheduler is not None:
        try:
            from distributed import Client
        except ImportError:
            raise click.ClickException(
                "--scheduler needs dask.distributed: pip install 'dask[distributed]'"
            ) from None
        client = Client(scheduler)
        return client.get_executor(), client.close
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(
        max_workers=workers or min(n_runs, os.cpu_count() or 1),
        mp_context=multiprocessing.get_context("spawn"),
    )
    return pool, pool.shutdown


@main.command()
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Data: .npz with arrays X and y, or .csv (targets last).",
)
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start every run from this ONNX network.",
)
@click.option(
    "--arch",
    callback=_callback(parse_arch),
    metavar="W0-W1-...-WL",
    help="Start from Network.mlp(widths, seed) instead, e.g. 2-25-25-1.",
)
@_output_option("Results table (CSV); the Pareto plot goes next to it (.png).")
@click.option(
    "--regularizers",
    default="none,bw,bw+lp",
    show_default=True,
    help="Comma-separated regularizer specs.",
)
@click.option(
    "--lams",
    default="1e-4,1e-3",
    show_default=True,
    callback=_callback(lambda t: parse_number_list(t, float)),
    help="Comma-separated.",
)
@click.option(
    "--seeds",
    default="0",
    show_default=True,
    callback=_callback(lambda t: parse_number_list(t, int)),
    help="Comma-separated.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--targets",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of target columns at the end of a CSV file.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--sense", type=click.Choice(("min", "max")), default="min", show_default=True)
@INPUT_BOUNDS
@click.option(
    "--milp-time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds for each run's MILP measurement.",
)
@click.option("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler to run on.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Local worker processes (default: one per CPU, at most one per run).",
)
@FORCE
@QUIET
def sweep(
    data: Path,
    model: Path | None,
    arch,
    output: Path,
    regularizers: str,
    lams,
    seeds,
    epochs: int,
    targets: int,
    batch_size: int,
    lr: float,
    sense: str,
    input_bounds,
    milp_time_limit: float,
    scheduler: str | None,
    workers: int | None,
    force: bool,
    quiet: bool,
) -> None:
    """Train a grid of networks; table and plot test error against MILP time."""
    from .plots import plot_pareto
    from .sweep import grid, run_sweep
    from .training.refine import save_rows

    if (model is None) == (arch is None):
        raise click.UsageError("give exactly one of --model and --arch")
    png = output.with_suffix(".png")
    _check_outputs([output, png], [data, *([model] if model else [])], force)
    base = {
        "data": os.fspath(data.resolve()),
        "model": os.fspath(model.resolve()) if model else None,
        "arch": arch,
        "input_bounds": tuple(input_bounds) if input_bounds else None,
        "targets": targets,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "sense": sense,
        "milp_time_limit": milp_time_limit,
    }
    try:
        configs = grid(base, [s for s in regularizers.split(",") if s.strip()], lams, seeds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--regularizers'") from None
    executor, close = _executor(scheduler, workers, len(configs))
    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs), desc="sweep", unit="run", file=sys.stderr)
    try:
        with _stdout_to_stderr():
            rows = run_sweep(
                configs, executor, progress=None if bar is None else lambda row: bar.update(1)
            )
    finally:
        close()
        if bar is not None:
            bar.close()
    save_rows(rows, output)
    plot_pareto(rows, png)
    failed = [row for row in rows if "error" in row]
    if not quiet:
        for row in failed:
            click.echo(
                f"run {row['regularizer']} lam={row['lam']} seed={row['seed']} failed: "
                f"{one_line(row['error'])}",
                err=True,
            )
    click.echo(f"{len(rows) - len(failed)} of {len(rows)} runs done; wrote {output} and {png}")
    if failed and len(failed) == len(rows):
        raise click.ClickException("every run of the sweep failed")


if __name__ == "__main__":
    main()
