"""``nnrelax refine``: train a model toward an easier MILP, with checkpoints and a history."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ..data import read_data, split_data
from ..options import LOSS_REFERENCES
from ..refinement.history import HISTORY_FILE, RefineHistory, checkpoint_path
from ..training.specs import parse_regularizer
from .common import (
    BATCH_SIZE,
    DTYPE,
    FORCE,
    INPUT_BOUNDS,
    LEARNING_RATE,
    MODEL,
    QUIET,
    TARGETS,
    Interrupted,
    check_outputs,
    choice_option,
    cli_box,
    data_option,
    gap_method_option,
    input_files,
    milp_time_limit_option,
    output_option,
    sense_option,
    stdout_to_stderr,
    warnings_as_lines,
    was_interrupted,
)
from .user_code import load_callable


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
        f"interrupted; rounds 0..{last} of {rounds} are kept in {output_dir} ({HISTORY_FILE}, "
        f"{checkpoint_path(output_dir, last).name}); continue with the same command and --resume"
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
@data_option("Training data: .npz with arrays X and y, or .csv (targets last).")
@output_option("Where to write the refined network (ONNX); the history goes next to it.")
@TARGETS
@click.option(
    "--regularizer",
    "spec",
    default="bw+lp",
    show_default=True,
    help="E.g. bw, bw+lp, 0.5*bw+lp, sn, rs, l1, l2, lp or none.",
)
@gap_method_option()
@click.option(
    "--ball",
    type=click.FloatRange(min=0, min_open=True),
    metavar="EPS",
    help="Bound the bw, lp, sn and rs terms over each training sample's L-infinity ball of "
    "radius EPS (clipped to the box) instead of over the whole box: a verification user's "
    "question.",
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
@BATCH_SIZE
@LEARNING_RATE
@click.option("--seed", type=int, default=0, show_default=True)
@sense_option("Optimisation sense of the downstream MILP (LP gap and measurements).")
@INPUT_BOUNDS
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Checkpoint directory. Default: <OUTPUT stem>_rounds next to OUTPUT.",
)
@milp_time_limit_option("round")
@click.option(
    "--loss-budget",
    type=click.FloatRange(min=1),
    default=1.25,
    show_default=True,
    help="Keep the held-out loss within this factor of MODEL's while lambda grows from --lam; "
    "the output is the round within budget with the easiest MILP.",
)
@choice_option(
    "--loss-reference",
    LOSS_REFERENCES,
    "start",
    "What the budget is relative to: MODEL's own held-out loss (a trained MODEL), or that of "
    "MODEL trained without a regularizer for --rounds x --epochs epochs.",
)
@click.option(
    "--fixed-lam",
    is_flag=True,
    help="No budget: train with --lam throughout and output the last round (0.1's behaviour).",
)
@click.option(
    "--holdout",
    type=click.FloatRange(min=0, max=0.9),
    default=0.2,
    show_default=True,
    help="Fraction of the data held out (seeded by --seed) to measure the loss budget on.",
)
@click.option(
    "--model",
    "user_model",
    metavar="MODULE:FUNCTION",
    help="build(network) -> your Pyomo model with the network embedded in NNBlocks (a module "
    "or a .py file): each round is measured on it, trained on the hull of its copies' boxes "
    "unless --input-bounds, and --evaluate is then called with the solved model.",
)
@click.option(
    "--evaluate",
    metavar="MODULE:FUNCTION",
    help="The true function f(x) -> float (a module or a .py file): each round's MILP argmin "
    "is evaluated with it (with --model: f(solved model) -> the true cost of its decision).",
)
@click.option(
    "--decision-budget",
    type=click.FloatRange(min=0),
    help="Largest worsening of the true value at the argmin (needs --evaluate).",
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --output-dir.")
@DTYPE
@FORCE
@QUIET
@_say_what_was_kept
def refine(
    model: Path,
    data: Path,
    output: Path,
    targets: int,
    spec: str,
    gap_method: str,
    ball: float | None,
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
    loss_budget: float,
    loss_reference: str,
    fixed_lam: bool,
    holdout: float,
    user_model: str | None,
    evaluate: str | None,
    decision_budget: float | None,
    resume: bool,
    dtype: str | None,
    force: bool,
    quiet: bool,
) -> None:
    """Train MODEL toward an easier MILP; write checkpoints and a history.

    OUTPUT keeps MODEL's float type unless --dtype says otherwise (the checkpoints are
    float64, exactly the networks their rounds measured).
    """
    from ..onnx import read_onnx
    from ..onnx.write import source_dtype
    from ..refinement import refine as run_refine

    try:
        regularizer = parse_regularizer(spec, sense, gap_method, ball=ball)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--regularizer'") from None
    output_dir = _rounds_dir(output, output_dir)
    kept = [*output_dir.glob("round_*.onnx"), output_dir / HISTORY_FILE] if resume else []
    check_outputs(
        [output, *history_paths(output)],
        [*input_files(model), data, *kept],
        force or resume,
        folders=[output_dir],
    )
    if decision_budget is not None and evaluate is None:
        raise click.UsageError("--decision-budget needs --evaluate")
    true_function, build = (
        _user_function(spec, option)
        for spec, option in ((evaluate, "--evaluate"), (user_model, "--model"))
    )
    X, y = read_data(data, targets)
    network = read_onnx(model)
    dtype = dtype or source_dtype(model)
    if build is None:
        box = cli_box(network, input_bounds, X)
    else:  # the hull of the model's copies, unless given
        box = None if input_bounds is None else cli_box(network, input_bounds)
    budget = None if fixed_lam or regularizer is None else loss_budget  # no lambda to tune
    validation = None
    if budget is not None and holdout > 0:
        (X, y), validation, _ = split_data(X, y, holdout, 0.0, seed)
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
                validation=validation,
                loss_budget=budget,
                loss_reference=loss_reference,
                evaluate=true_function,
                decision_budget=decision_budget,
                model=build,
                resume=resume,
                overwrite=force,
                progress=not quiet,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
            )
    except KeyboardInterrupt:
        raise Interrupted(_what_was_kept(output_dir, rounds)) from None
    written = _write_outputs(result, output, output_dir, dtype)
    reference = "MODEL's" if loss_reference == "start" else "the unregularized training's"
    for line in _summary(result, reference):
        click.echo(line)
    click.echo(f"wrote {', '.join(written)}")


def _user_function(spec: str | None, option: str):
    """The user's function named by ``option`` (None if not given); a usage error if it
    cannot be loaded."""
    try:
        return load_callable(spec) if spec is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None


def _write_outputs(result, output: Path, output_dir: Path, dtype: str) -> list[str]:
    """The chosen round's checkpoint (the last round's without a budget) as OUTPUT in
    ``dtype``, and the history beside it (JSON, CSV, PNG); returns what was written."""
    from ..onnx import read_onnx, write_onnx
    from ..plots import plot_history

    chosen = result.history.last["round"] if result.chosen_round is None else result.chosen_round
    write_onnx(read_onnx(checkpoint_path(output_dir, chosen)), output, overwrite=True, dtype=dtype)
    json_path, csv_path, png_path = history_paths(output)
    result.history.save(json_path)
    result.history.save(csv_path)
    plot_history(result.history.rows, png_path)
    return [str(output), json_path.name, csv_path.name, png_path.name]


def _summary(result, reference: str) -> list[str]:
    """What refine prints: the rounds run and the figures of the output beside MODEL's (the
    output is the chosen round's network, not the last round's)."""
    rows = result.history.rows
    start, last = rows[0], rows[-1]
    done = f"rounds 0..{last['round']} ({result.stopped_by})"
    if result.chosen_round is None:
        return [
            f"{done}: unstable {start['unstable']} -> {last['unstable']}, LP gap "
            f"{_number(start['lp_gap'])} -> {_number(last['lp_gap'])}; the output is the last round"
        ]
    out = rows[result.chosen_round]
    figures = (
        f"unstable {out['unstable']}, LP gap {_number(out['lp_gap'])}, held-out loss "
        f"{_number(out['loss_ratio'])}x {reference}"
    )
    if result.chosen_round == 0:
        return [
            f"{done}: no round improved on the start within the budget; the output is "
            f"MODEL's own network (round 0): {figures}",
            f"({result.chosen_because})",
        ]
    return [
        f"{done}: unstable {start['unstable']} -> {out['unstable']}, LP gap "
        f"{_number(start['lp_gap'])} -> {_number(out['lp_gap'])} in the output",
        f"output is {result.chosen_because}: {figures}",
    ]
