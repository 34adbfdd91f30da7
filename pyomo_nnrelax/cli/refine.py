"""``nnrelax refine``: train a model toward an easier MILP, with checkpoints and a history."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import click

from ..experiments.data import read_data
from ..experiments.refine import HISTORY_FILE, RefineHistory
from ..files import atomic_write
from ..options import SENSES
from ..training.regularizers import parse_regularizer
from .common import (
    FORCE,
    INPUT_BOUNDS,
    MODEL,
    QUIET,
    Interrupted,
    check_outputs,
    cli_box,
    input_files,
    output_option,
    stdout_to_stderr,
    warnings_as_lines,
    was_interrupted,
)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _what_was_kept(output_dir: Path, rounds: int) -> str:
    """What an interrupted refine leaves, and the command line that continues it."""
    history = output_dir / HISTORY_FILE
    if not history.is_file():
        return (
            f"interrupted before round 0 was kept; nothing was kept in {output_dir}; start "
            "again with the same command and --resume"
        )
    last = RefineHistory.load(history).rows[-1]["round"]
    return (
        f"interrupted; rounds 0..{last} of {rounds} are kept in {output_dir} (history.json, "
        f"round_{last:03d}.onnx); continue with the same command and --resume"
    )


def _rounds_dir(output: Path, output_dir: Path | None) -> Path:
    """The checkpoint folder: ``--output-dir``, else ``<OUTPUT stem>_rounds`` next to OUTPUT."""
    return output_dir or output.with_name(output.stem + "_rounds")


def _say_what_was_kept(command):
    """Turn Ctrl-C anywhere in ``command`` (even while it imports) into :class:`Interrupted`
    saying what was kept and how to continue."""

    @functools.wraps(command)
    def wrapper(**options):
        try:
            return command(**options)
        except (KeyboardInterrupt, ImportError) as exc:
            if not was_interrupted(exc):
                raise
            kept = _what_was_kept(
                _rounds_dir(options["output"], options["output_dir"]), options["rounds"]
            )
            raise Interrupted(kept) from None

    return wrapper


def history_paths(output: Path) -> tuple[Path, Path, Path]:
    """JSON, CSV and PNG history files written next to ``output``."""
    stem = output.with_suffix("")
    return tuple(stem.with_name(f"{stem.name}.history{ext}") for ext in (".json", ".csv", ".png"))


@click.command()
@MODEL
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training data: .npz with arrays X and y, or .csv (targets last).",
)
@output_option("Where to write the refined network (ONNX); the history goes next to it.")
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
    type=click.Choice(SENSES),
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
@_say_what_was_kept
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
    from ..experiments.plots import plot_history
    from ..experiments.refine import refine as run_refine
    from ..onnx import read_onnx

    try:
        regularizer = parse_regularizer(spec, sense)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--regularizer'") from None
    output_dir = _rounds_dir(output, output_dir)
    kept = [*output_dir.glob("round_*.onnx"), output_dir / HISTORY_FILE] if resume else []
    check_outputs(
        [output, *history_paths(output)], [*input_files(model), data, *kept], force or resume
    )
    X, y = read_data(data, targets)
    network = read_onnx(model)
    box = cli_box(network, input_bounds, X)
    try:
        with stdout_to_stderr(), warnings_as_lines():
            result = run_refine(
                model,
                X,
                y,
                input_bounds=box,
                rounds=rounds,
                epochs_per_round=epochs,
                regularizer=regularizer,
                lam=lam if regularizer is not None else 0.0,
                output_dir=output_dir,
                milp_time_limit=milp_time_limit,
                sense=sense,
                resume=resume,
                overwrite=force,
                progress=not quiet,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
            )
    except KeyboardInterrupt:
        raise Interrupted(_what_was_kept(output_dir, rounds)) from None
    atomic_write(output, lambda tmp: shutil.copyfile(result.checkpoints[-1], tmp))
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
