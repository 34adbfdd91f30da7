"""Every example runs end to end in its reduced (--quick) mode, and what it prints is true: its
checks against onnxruntime, and the counts, constants and optima it reports, recomputed here
from the ONNX files it wrote (--out) with the independent reference of
``tests/support/reference.py``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.support import reference

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
NUMBER = r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?"


def gemm_layers(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``(W, b)`` of a chain of Gemm nodes, each but the last followed by a Relu, as
    ``write_onnx`` writes a network, read with onnx alone."""
    graph = onnx.load(path).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    layers = []
    for node in graph.node:
        if node.op_type == "Gemm":
            trans = {a.name: a.i for a in node.attribute}.get("transB", 0)
            w = weights[node.input[1]].astype(np.float64)
            layers.append((w if trans else w.T, weights[node.input[2]].astype(np.float64)))
        else:
            assert node.op_type == "Relu", node.op_type
    return layers


def lipschitz(layers) -> np.ndarray:
    """Per output, ``c`` with ``|f(x) - f(y)| <= c max_i |x_i - y_i|`` (the reference's grid
    tolerance for a grid of step 2: half a step is 1 on every axis)."""
    n = layers[0][0].shape[1]
    return reference.grid_tolerance(layers, np.zeros(n), np.full(n, 2.0), 2)


def hidden_statistics(layers, lower, upper) -> list[tuple[int, float, float]]:
    """Per hidden layer: unstable neurons and the mean and largest big-M ``max(-L, U)`` of
    them, from the reference's interval bounds."""
    rows = []
    for L, U in reference.interval_bounds(layers, lower, upper)[:-1]:
        unstable = (L < 0) & (U > 0)
        big_m = np.maximum(-L, U)[unstable]
        rows.append((int(unstable.sum()), float(big_m.mean()), float(big_m.max())))
    return rows


def summaries(stdout: str) -> list[tuple[int, list[tuple[int, float, float]]]]:
    """Each ``NNBlock.summary()`` printed: its binaries, and per layer the unstable count
    and the mean and largest big-M (the output layer's row left out)."""
    found = []
    for block in re.findall(r"NNBlock: .*?\n(?:.*\n)(?:\s+\d+ .*\n)+", stdout):
        binaries = int(re.search(r"(\d+) binaries", block).group(1))
        rows = [line.split() for line in block.splitlines()[2:]]
        found.append((binaries, [(int(r[2]), float(r[5]), float(r[6])) for r in rows[:-1]]))
    return found


def assert_statistics(printed, layers, lower, upper) -> None:
    expected = hidden_statistics(layers, lower, upper)
    assert [row[0] for row in printed] == [row[0] for row in expected]
    for (_, mean, top), (_, mean_ref, top_ref) in zip(printed, expected):
        assert mean == pytest.approx(mean_ref, rel=1e-3) and top == pytest.approx(top_ref, rel=1e-3)


def check_quickstart(stdout: str, out: Path) -> None:
    """Both summaries, the unstable counts of the table and both minima (5 decimals, their
    argmins 4) against the networks of surrogate.onnx and refined.onnx."""
    lower, upper = np.full(2, -2.0), np.full(2, 2.0)
    files = [out / "surrogate.onnx", out / "refined.onnx"]
    minima = re.findall(rf"minimum ({NUMBER}) at x = \[\s*({NUMBER})\s+({NUMBER})\s*\]", stdout)
    table = re.findall(r"^(before|after)\s+(\d+)\s", stdout, re.MULTILINE)
    assert len(minima) == len(table) == len(summaries(stdout)) == 2, stdout
    for path, (binaries, rows), (value, *x), (_, unstable) in zip(
        files, summaries(stdout), minima, table
    ):
        layers = gemm_layers(path)
        assert_statistics(rows, layers, lower, upper)
        assert (
            binaries == int(unstable) == sum(r[0] for r in hidden_statistics(layers, lower, upper))
        )
        values = reference.forward(layers, reference.grid(lower, upper, 401))[:, 0]
        slack = reference.grid_tolerance(layers, lower, upper, 401)[0]
        assert values.min() - slack - 1e-5 <= float(value) <= values.min() + 1e-5
        at_x = reference.forward(layers, np.array([x], dtype=float))[0, 0]
        assert abs(at_x - float(value)) <= 1e-5 + lipschitz(layers)[0] * 5e-5


def check_bound_tightening(stdout: str, out: Path) -> None:
    """The interval row (unstable, mean M) against the reference's interval bounds of the
    network written; the stored MILP bounds give the MILP row's binaries."""
    layers = gemm_layers(out / "peaks_tightened.onnx")
    rows = {
        m[0]: m[1:] for m in re.findall(rf"^(\w+)\s+{NUMBER}\s+(\d+)\s+({NUMBER})", stdout, re.M)
    }
    expected = hidden_statistics(layers, np.full(2, -2.0), np.full(2, 2.0))
    unstable = sum(r[0] for r in expected)
    mean = np.concatenate([[r[1]] * r[0] for r in expected]).mean()
    assert int(rows["interval"][0]) == unstable
    assert float(rows["interval"][1]) == pytest.approx(mean, rel=5e-3)
    assert int(rows["milp"][0]) <= int(rows["lp"][0]) <= unstable
    stored = re.search(r"over the stored box: bounds.method = 'milp', (\d+) binaries", stdout)
    assert stored and int(stored.group(1)) == int(rows["milp"][0])


def check_stochastic_programming(stdout: str, out: Path) -> None:
    """Each network's binaries (interval bounds over [0, 10]^3) and its predicted quantiles
    at the printed decision (2 decimals)."""
    lower, upper = np.zeros(3), np.full(3, 10.0)
    pattern = rf"^(plain|BW 1e-2)\s+{NUMBER}\s+{NUMBER}\s+(\d+)\s+\S+\s+((?:{NUMBER}\s+){{6}})"
    rows = re.findall(pattern, stdout, re.MULTILINE)
    assert len(rows) == 2, stdout
    for name, binaries, numbers in rows:
        layers = gemm_layers(out / f"quantiles_{name.split()[0].lower()}.onnx")
        assert int(binaries) == sum(r[0] for r in hidden_statistics(layers, lower, upper))
        x, predicted = np.array(numbers.split(), dtype=float).reshape(2, 3)
        at_x = reference.forward(layers, x[None])[0]
        assert np.all(np.abs(at_x - predicted) <= 5e-3 + lipschitz(layers) * 5e-3)


def check_surrogate_optimisation(stdout: str, out: Path) -> None:
    """Himmelblau's value at each printed optimum (from its definition), the side constraint,
    and the first surrogate's statistics and value there."""
    point = rf"\[({NUMBER}),({NUMBER})\]\s+({NUMBER})\s+({NUMBER})"
    pattern = rf"^(before|after)\s+(\d+)\s+({NUMBER}).*{point}"
    rows = re.findall(pattern, stdout, re.MULTILINE)
    assert len(rows) == 2, stdout
    layers = gemm_layers(out / "himmelblau.onnx")
    lower, upper = np.full(2, -5.0), np.full(2, 5.0)
    for name, unstable, mean_m, x0, x1, f_nn, f in rows:
        (a, b) = x = np.array([x0, x1], dtype=float)  # printed to 3 decimals
        assert a + b >= 1.0 - 1e-3
        true = (a**2 + b - 11) ** 2 + (a + b**2 - 7) ** 2
        slope = abs(4 * a * (a**2 + b - 11) + 2 * (a + b**2 - 7))
        slope += abs(2 * (a**2 + b - 11) + 4 * b * (a + b**2 - 7))
        assert float(f) == pytest.approx(true, abs=1e-3 + slope * 1e-3)
        if name == "before":
            expected = hidden_statistics(layers, lower, upper)
            assert int(unstable) == sum(r[0] for r in expected)
            means = np.concatenate([[r[1]] * r[0] for r in expected])
            assert float(mean_m) == pytest.approx(means.mean(), rel=5e-3)
            value = reference.forward(layers, x[None])[0, 0]
            assert float(f_nn) == pytest.approx(value, abs=1e-3 + lipschitz(layers)[0] * 1e-3)


def check_multi_period(stdout: str, out: Path) -> None:
    """Each plan's binaries (the hidden unstable neurons over the box, once per period) and
    the best plan's cost, by enumerating every load sequence of the grid (the DP's step in
    quick mode, 0.05) under the ramp and demand rows, with the process written out here."""
    lower, upper = np.array([0.2, 0.0]), np.array([1.0, 1.0])
    periods = int(re.search(r"^(\d+) periods; the best plan of the true process costs "
                            rf"({NUMBER})", stdout, re.M).group(1))  # fmt: skip
    best = float(re.search(rf"the best plan of the true process costs ({NUMBER})", stdout)[1])
    rows = re.findall(rf"^(unregularized|refined)\s+{NUMBER}\s+(\d+)\s", stdout, re.M)
    assert [name for name, _ in rows] == ["unregularized", "refined"], stdout
    for name, binaries in rows:
        layers = gemm_layers(out / f"{name}.onnx")
        unstable = sum(r[0] for r in hidden_statistics(layers, lower, upper))
        assert int(binaries) == periods * unstable
    loads = np.round(0.2 + 0.05 * np.arange(17), 10)
    efficiency = (
        0.55
        + 0.12 * np.exp(-(((loads - 0.45) / 0.12) ** 2))
        + 0.15 * np.exp(-(((loads - 0.9) / 0.1) ** 2))
    )
    prices = 1.0 + 0.5 * np.sin(2.0 * np.pi * np.arange(periods) / 12.0)
    plans = np.array(np.meshgrid(*[np.arange(17)] * periods, indexing="ij")).reshape(periods, -1)
    feasible = (loads[plans].sum(axis=0) >= 0.65 * periods - 1e-9) & np.all(
        np.abs(np.diff(loads[plans], axis=0)) <= 0.25 + 1e-9, axis=0
    )
    costs = prices @ (loads / efficiency)[plans]
    assert best == pytest.approx(costs[feasible].min(), abs=1e-4)


CHECKS = {
    "quickstart": check_quickstart,
    "bound_tightening": check_bound_tightening,
    "stochastic_programming": check_stochastic_programming,
    "surrogate_optimisation": check_surrogate_optimisation,
    "multi_period": check_multi_period,
}
"""What each example prints that can be recomputed here (verify_mnist's CNN only has its
checks against onnxruntime)."""


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_in_quick_mode_and_prints_what_is_true(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    checks = [float(v) for v in re.findall(r"max \|difference\| = (\S+)", done.stdout)]
    assert checks, "the example prints no check of its optima against onnxruntime"
    assert max(checks) < 1e-6, done.stdout
    CHECKS.get(script.stem, lambda *_: None)(done.stdout, tmp_path)
