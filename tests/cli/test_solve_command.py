"""``nnrelax solve``: what it prints when the solve is stopped early (--node-limit, the same
stop on any machine) and when the solver's point does not reproduce the network (not
optimal, the big-M scale named, exit 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pyomo_nnrelax import Layer, Network, write_onnx
from pyomo_nnrelax.cli import main

NET = Network.mlp([2, 10, 10, 1], seed=1).with_input_bounds([-2, -2], [2, 2])


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.onnx"
    write_onnx(NET, path, dtype="float64")
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_node_limited_solve_is_not_proven_optimal_and_reports_its_bound_and_gap(model):
    optimum = json.loads(invoke("solve", model, "--json").stdout)
    assert optimum["optimal"] and optimum["check_passed"]
    result = invoke("solve", model, "--node-limit", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert not report["optimal"] and report["status"] == "iterationLimit"
    assert report["nodes"] == 1 and report["check_passed"]
    assert report["incumbent"] in ("solver", "start")
    assert report["bound"] <= optimum["objective"] + 1e-9 < report["objective"]
    assert report["gap"] == pytest.approx(report["objective"] - report["bound"])
    assert report["gap"] > 1e-3
    point = np.array(report["point"])
    assert report["objective"] == pytest.approx(NET.forward(point)[0, 0], abs=1e-6)
    text = invoke("solve", model, "--node-limit", "1").stdout
    assert "not proven optimal: best known min of output 0: " in text
    assert f"(bound {report['bound']:.10g}), gap {report['gap']:.4g}" in text
    assert "minimum of output 0" not in text


def test_node_limit_works_with_highs_only(model):
    result = invoke("solve", model, "--solver", "appsi_highs", "--node-limit", "5")
    assert result.exit_code == 2 and "--node-limit works with --solver highs" in result.output
    assert invoke("solve", model, "--node-limit", "0").exit_code == 2


@pytest.fixture
def wrong_reference(monkeypatch):
    """onnxruntime's outputs moved by 0.5: as if the solver's point did not reproduce the
    network, the one thing a failed check says."""
    import pyomo_nnrelax.block as block

    real = block.run_onnxruntime
    monkeypatch.setattr(block, "run_onnxruntime", lambda *args: real(*args) + 0.5)


@pytest.mark.usefixtures("wrong_reference")
def test_a_point_that_does_not_reproduce_the_network_is_not_optimal_and_exits_1(model):
    result = invoke("solve", model, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert not report["optimal"] and not report["check_passed"]
    assert report["status"] == "convergenceCriteriaSatisfied"  # what the solver claimed
    assert report["solver_check_error"] == pytest.approx(0.5)
    assert 0 < report["check_tolerance"] < 1e-2 and report["largest_constant"] > 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: the solver's point does not reproduce the network")
    assert f"constants (big-M and weights) reach {report['largest_constant']:.3g}" in line
    text = invoke("solve", model)
    assert text.exit_code == 1
    assert "not optimal: the solver's point does not reproduce the network" in text.stdout
    assert "minimum of output 0" not in text.stdout


def test_a_weight_of_1e38_never_exits_0(tmp_path):
    """The solve either fails (no solution) or its point fails the check: exit 1 either way,
    and a printed report says not optimal."""
    layers = list(NET.layers)
    weight = layers[1].weight.copy()
    weight[0, 0] = 1e38
    layers[1] = Layer(weight, layers[1].bias, layers[1].activation)
    path = tmp_path / "big.onnx"
    write_onnx(NET.with_layers(layers), path, dtype="float32")
    result = invoke("solve", path, "--json")
    assert result.exit_code == 1, result.output
    if result.stdout:
        report = json.loads(result.stdout)
        assert not report["optimal"] and not report["check_passed"]
        assert report["largest_constant"] > 1e30


@pytest.mark.parametrize("bounds", [None, "interval", "lp"])
def test_the_time_limit_applies_to_bound_tightening_only_where_there_is_some(model, bounds):
    args = ["solve", model, "--time-limit", "30", "--json"]
    result = invoke(*args, *(["--bounds", bounds] if bounds else []))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["optimal"]
