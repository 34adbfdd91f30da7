"""``nnrelax tighten``: tighten a model's bounds and store them in a copy's metadata."""

from __future__ import annotations

from pathlib import Path

import click

from ..progress import progress_bar
from .common import (
    DTYPE,
    FORCE,
    INPUT_BOUNDS,
    MODEL,
    QUIET,
    TIME_LIMIT,
    Interrupted,
    check_outputs,
    cli_box,
    input_files,
    output_option,
    stdout_to_stderr,
)


@click.command()
@MODEL
@output_option("Where to write the network with its tightened bounds (ONNX).")
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
@DTYPE
@FORCE
@QUIET
def tighten(
    model: Path,
    output: Path,
    method: str,
    time_limit: float | None,
    input_bounds,
    rounding: float,
    dtype: str | None,
    force: bool,
    quiet: bool,
) -> None:
    """Tighten the bounds of MODEL; write them into the metadata of OUTPUT.

    OUTPUT keeps MODEL's float type unless --dtype says otherwise; its bounds are those of
    the weights it holds (rounded to float32 first where MODEL's folded weights need it).
    """
    from ..bounds import interval_bounds
    from ..lp.tightening import tighten_bounds
    from ..onnx import read_onnx, write_onnx
    from ..onnx.write import as_written, source_dtype

    check_outputs([output], input_files(model), force)
    read = read_onnx(model)
    dtype = dtype or source_dtype(model)
    network = as_written(read, dtype)  # before the work: the bounds are the output's weights'
    box = cli_box(network, input_bounds)
    start = interval_bounds(network, box)
    bar = progress_bar(len(network.layers), f"tighten ({method})", "layer", show=not quiet)
    try:
        with stdout_to_stderr():
            try:
                tight = tighten_bounds(
                    network,
                    start,
                    method,
                    time_limit=time_limit,
                    rounding=rounding,
                    progress=lambda layer, _: bar.update(layer + 1 - bar.n),
                )
            finally:
                bar.close()  # as Ctrl-C propagates: the bar makes way for the one line below
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; nothing was written ({output} is written once every layer is "
            "tightened); run the command again"
        ) from None
    write_onnx(network.with_input_bounds(*box), output, bounds=tight, overwrite=True, dtype=dtype)
    click.echo(
        f"unstable neurons: {start.unstable_count(network)} (interval) -> "
        f"{tight.unstable_count(network)} ({tight.method})"
    )
    if network != read:
        click.echo(
            f"rounded the weights to {dtype}, the type of {output.name}, before tightening "
            "(folding MODEL's layers made some of them float64): the bounds hold for the "
            "rounded weights; --dtype float64 keeps them exact"
        )
    click.echo(f"wrote {output}")
