"""``nnrelax sweep``: train a grid of networks; table and plot of test error against MILP time."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..progress import progress_bar
from .common import (
    BATCH_SIZE,
    FORCE,
    INPUT_BOUNDS,
    LEARNING_RATE,
    QUIET,
    TARGETS,
    Interrupted,
    callback,
    check_outputs,
    data_option,
    gap_method_option,
    input_files,
    milp_time_limit_option,
    number_list_option,
    one_line,
    output_option,
    parse_arch,
    sense_option,
    stdout_to_stderr,
)


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
    from concurrent.futures import ProcessPoolExecutor

    from ..parallel import spawn_context, worker_setup

    pool = ProcessPoolExecutor(
        max_workers=workers or min(n_runs, os.cpu_count() or 1),
        mp_context=spawn_context(),
        initializer=worker_setup,
    )
    return pool, lambda: pool.shutdown(cancel_futures=True)  # Ctrl-C starts no further run


@click.command()
@data_option("Data: .npz with arrays X and y, or .csv (targets last).")
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start every run from this ONNX network.",
)
@click.option(
    "--arch",
    callback=callback(parse_arch),
    metavar="W0-W1-...-WL",
    help="Start from Network.mlp(widths, seed) instead, e.g. 2-25-25-1.",
)
@output_option("Results table (CSV); the Pareto plot goes next to it (.png).")
@click.option(
    "--regularizers",
    default="none,bw,bw+lp",
    show_default=True,
    help="Comma-separated regularizer specs.",
)
@gap_method_option()
@number_list_option("--lams", "1e-4,1e-3", float)
@number_list_option("--seeds", "0", int)
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@TARGETS
@BATCH_SIZE
@LEARNING_RATE
@sense_option()
@INPUT_BOUNDS
@milp_time_limit_option("run")
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
    gap_method: str,
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
    from ..data import save_rows
    from ..plots import plot_pareto
    from ..sweep import grid, run_sweep

    if (model is None) == (arch is None):
        raise click.UsageError("give exactly one of --model and --arch")
    png = output.with_suffix(".png")
    check_outputs([output, png], [data, *(input_files(model) if model else [])], force)
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
        "gap_method": gap_method,
        "milp_time_limit": milp_time_limit,
    }
    try:
        configs = grid(base, [s for s in regularizers.split(",") if s.strip()], lams, seeds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--regularizers'") from None
    executor, close = _executor(scheduler, workers, len(configs))
    bar = progress_bar(len(configs), "sweep", "run", show=not quiet)
    try:
        with stdout_to_stderr():
            try:
                rows = run_sweep(configs, executor, progress=lambda row: bar.update(1))
            finally:
                close()
                bar.close()  # as Ctrl-C propagates: the bar makes way for the one line below
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; nothing was written ({output} and {png.name} are written once "
            "every run has finished); run the command again"
        ) from None
    written: list[str] = []
    try:
        save_rows(rows, output)
        written.append(str(output))
        plot_pareto(rows, png)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted while writing the results; written: {', '.join(written) or 'nothing'}; "
            "run the command again with --force"
        ) from None
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
