"""What the ``nnrelax`` commands share: text parsers, click options, output checks, and
keeping solver banners off standard output."""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .. import files
from ..box import InputBox, expand_pairs, resolve_box
from ..errors import InputBoundsError, NNRelaxError
from ..onnx.load import external_data_files
from ..onnx.write import WRITE_DTYPES
from ..options import GAP_METHODS, SENSES

USER_ERRORS = (NNRelaxError, FileNotFoundError, FileExistsError, ValueError)


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


def callback(parse: Callable[[str], Any]):
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
    callback=callback(parse_bounds_text),
    metavar="LO,HI[;LO,HI...]",
    help="Input box: one 'lo,hi' pair per input, or one pair for all. "
    "Default: the box stored in the model, else (refine, sweep) the data's bounding box.",
)
FORCE = click.option("--force", is_flag=True, help="Replace existing output files.")
QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars or messages on stderr.")
DTYPE = click.option(
    "--dtype",
    type=click.Choice(WRITE_DTYPES),
    help="Float type of the ONNX file written. Default: MODEL's (float64 stays float64, "
    "anything else is written float32).",
)
TIME_LIMIT = click.option(
    "--time-limit", type=click.FloatRange(min=0, min_open=True), help="Seconds per solve."
)


TARGETS = click.option(
    "--targets",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of target columns at the end of a CSV file.",
)
BATCH_SIZE = click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
LEARNING_RATE = click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True
)


def choice_option(name: str, choices: Sequence[str], default: str, help_text: str | None):
    """``name`` taking one of ``choices`` (an option list of :mod:`pyomo_nnrelax.options`)."""
    return click.option(
        name, type=click.Choice(choices), default=default, show_default=True, help=help_text
    )


def sense_option(help_text: str | None = None):
    """``--sense min|max|both``: the downstream MILP's sense."""
    return choice_option("--sense", SENSES, "min", help_text)


def gap_method_option():
    """``--gap-method dual_network|exact_lp``: how an ``lp`` term of the regularizer bounds
    the LP relaxation."""
    return choice_option(
        "--gap-method",
        GAP_METHODS,
        "dual_network",
        "How the lp term bounds the LP relaxation: the dual network (no LP solver, several "
        "times cheaper) or the exact LP (solved at 8 points per mini-batch, as in the paper).",
    )


def number_list_option(name: str, default: str, kind: Callable[[str], Any]):
    """A comma-separated list of numbers, e.g. ``--lams 1e-4,1e-3``."""
    return click.option(
        name,
        default=default,
        show_default=True,
        callback=callback(lambda text: parse_number_list(text, kind)),
        help="Comma-separated.",
    )


def milp_time_limit_option(what: str):
    """``--milp-time-limit``: seconds for each MILP measurement (of a round, of a run)."""
    return click.option(
        "--milp-time-limit",
        type=click.FloatRange(min=0, min_open=True),
        default=60.0,
        show_default=True,
        help=f"Seconds for each {what}'s MILP measurement.",
    )


def data_option(help_text: str):
    """``--data FILE``: a required, existing data file (what it holds is the command's)."""
    return click.option(
        "--data",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=help_text,
    )


def output_option(help_text: str):
    return click.option(
        "-o",
        "--output",
        required=True,
        help=help_text,
        type=click.Path(dir_okay=False, path_type=Path),
    )


def check_outputs(
    outputs: Sequence[Path], protected: Sequence[Path], force: bool, folders: Sequence[Path] = ()
) -> None:
    """Refuse to write over a protected file (ever) or an existing output (without --force),
    or where an output's folder (or one of ``folders``) cannot be made; writing over an input
    or into a file is a usage error."""
    try:
        files.check_outputs(outputs, protected, force)
        for folder in folders:
            files.check_folder(folder)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def input_files(model: Path) -> list[Path]:
    """An ONNX input and the external data files its weights live in."""
    return [model, *external_data_files(model)]


def was_interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, or an error it caused: an extension module interrupted while
    it initialises raises ``ImportError("initialization failed")`` from the interrupt."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class Interrupted(click.ClickException):
    """Ctrl-C: exit 130 with what was kept and how to continue."""

    exit_code = 130


INTERRUPT_LOGGERS = (
    "pyomo.core",
    "pyomo.contrib.solver.solvers.highs",
    "pyomo.contrib.appsi.solvers.highs",
)
"""Pyomo's loggers that report an interrupt themselves: a component whose construction
Ctrl-C stopped, and the HiGHS interfaces' "unhandled status kInterrupt"."""


def _not_about_an_interrupt(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return "KeyboardInterrupt" not in message and "kInterrupt" not in message


def one_line_interrupts() -> None:
    """Drop what Pyomo logs about an interrupt (:data:`INTERRUPT_LOGGERS`): a command says
    in its own one line what Ctrl-C stopped and what was kept."""
    for name in INTERRUPT_LOGGERS:
        logger = logging.getLogger(name)
        if _not_about_an_interrupt not in logger.filters:
            logger.addFilter(_not_about_an_interrupt)


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show the library's warnings as one ``Warning: ...`` line each on stderr."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        click.echo(f"Warning: {one_line(str(message))}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
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


def cli_box(network, pairs, X=None) -> InputBox:
    """The input box of a command: ``--input-bounds`` (one pair standing for every input),
    else the box the model stores, else (with data) the data's bounding box."""
    try:
        given = None if pairs is None else expand_pairs(pairs, network.n_inputs)
        return resolve_box(given, network, X)
    except InputBoundsError as exc:
        raise click.BadParameter(
            str(exc).replace("input_bounds=", "--input-bounds"), param_hint="'--input-bounds'"
        ) from None
