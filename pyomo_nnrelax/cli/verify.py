"""``nnrelax verify``: is a classifier robust in an L-infinity ball around each input?"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .common import (
    INPUT_BOUNDS,
    MODEL,
    QUIET,
    Interrupted,
    cli_box,
    data_option,
    stdout_to_stderr,
)


@click.command()
@MODEL
@data_option("Inputs and labels: .npz with arrays X (n, inputs) and y (n,) of class indices.")
@click.option(
    "--eps", required=True, type=click.FloatRange(min=0, min_open=True), help="Ball radius."
)
@INPUT_BOUNDS
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds per input, every stage included; an input not settled is 'unknown'.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Verify only the first N inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@QUIET
def verify(
    model: Path,
    data: Path,
    eps: float,
    input_bounds,
    time_limit: float,
    limit: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Verify MODEL's robustness in the --eps ball around each input of --data.

    Each input is verified, falsified (a counterexample checked by onnxruntime), unknown
    (the time limit) or misclassified; the balls are clipped to --input-bounds (else the
    box MODEL stores).
    """
    from ..data import read_data
    from ..onnx import read_onnx
    from ..verification import verify as run_verify

    X, y = read_data(data)
    labels = _labels(y, data)
    if limit is not None:
        X, labels = X[:limit], labels[:limit]
    network = read_onnx(model)
    box = cli_box(network, input_bounds)
    try:
        with stdout_to_stderr():
            result = run_verify(
                model, X, labels, eps, input_bounds=box, time_limit=time_limit,
                progress=not quiet,
            )  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted("interrupted; nothing was written (verify writes no file)") from None
    if as_json:
        report = {"summary": result.summary(), "images": [r.as_dict() for r in result.images]}
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(result.table())


def _labels(y: np.ndarray, data: Path) -> np.ndarray:
    """The class indices of one target column (whole numbers)."""
    if y.shape[1] != 1 or not np.all(y == np.round(y)):
        raise click.BadParameter(
            f"{data}: y must be one column of class indices (0, 1, ...)", param_hint="'--data'"
        )
    return y[:, 0].astype(np.int64)
