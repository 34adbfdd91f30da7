"""``nnrelax inspect``: layers, ONNX ops, neuron stability and big-M constants of a model."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import click

from ..network import Network
from ..options import BOUND_METHODS
from .common import INPUT_BOUNDS, MODEL, TIME_LIMIT, cli_box, stdout_to_stderr


def inspect_report(path: Path, network: Network, box, bounds) -> dict[str, Any]:
    """What ``inspect`` prints: shapes, ONNX ops, and per-layer stability and big-M figures."""
    import onnx

    from ..bounds import big_m_summary, layer_statistics

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
        "activations": [layer.kind for layer in network.layers],
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


@click.command()
@MODEL
@INPUT_BOUNDS
@click.option(
    "--bounds",
    "method",
    type=click.Choice(BOUND_METHODS),
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
    from ..block_arguments import resolve_bounds
    from ..onnx import read_onnx

    network = read_onnx(model)
    box = cli_box(network, input_bounds)
    with stdout_to_stderr():
        bounds = resolve_bounds(network, box, method, model, time_limit, None)
    report = inspect_report(model, network, box, bounds)
    click.echo(json.dumps(report, indent=2) if as_json else format_inspect(report))
