"""Refinement judged on the user's own model: ``refine(..., model=build)``
(``refinement/user_model.py``)."""

from __future__ import annotations

import json

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import InputBox, Network, NNBlock, solve_model, write_onnx
from pyomo_nnrelax.onnx import read_onnx
from pyomo_nnrelax.refinement import refine
from pyomo_nnrelax.training import BoundWidth

# three copies over boxes inside the data's [-2, 2]^2, of which the hull is [-2, 1.5] x [-1, 2]
BOXES = [((-2.0, 0.0), (-1.0, 1.0)), ((-1.0, 1.0), (0.0, 2.0)), ((0.5, 1.5), (-0.5, 0.5))]
HULL = ([-2.0, -1.0], [1.5, 2.0])


def three_copies(network: Network, boxes=BOXES, sense=pyo.minimize) -> pyo.ConcreteModel:
    """Three copies of ``network`` over their own boxes, coupled: their first inputs sum to
    at least -1, and the objective adds their outputs."""
    m = pyo.ConcreteModel()
    m.copies = pyo.RangeSet(0, len(boxes) - 1)
    m.x = pyo.Var(m.copies, [0, 1], bounds=lambda _, c, i: boxes[c][i])
    for c in m.copies:  # one scalar block per copy, as add_component in a loop builds them
        inputs = [m.x[c, 0], m.x[c, 1]]
        m.add_component(f"net{c}", NNBlock(network, inputs=inputs))
    m.couple = pyo.Constraint(expr=sum(m.x[c, 0] for c in m.copies) >= -1.0)
    m.obj = pyo.Objective(
        expr=sum(m.component(f"net{c}").outputs[0] for c in m.copies), sense=sense
    )
    return m


def plan_value(m: pyo.ConcreteModel) -> float:
    """A 'true' cost of the solved model's decision: the true function summed over copies."""
    x = np.array([[pyo.value(m.x[c, i]) for i in (0, 1)] for c in m.copies])
    return float(np.sum(np.sin(x[:, 0]) * x[:, 1]))


@pytest.fixture
def start():
    return Network.mlp([2, 8, 8, 1], seed=0)


def _refine(start, data, tmp_path, **options):
    X, y = data
    defaults = dict(rounds=1, epochs_per_round=2, regularizer=BoundWidth(), lam=1e-2,
                    milp_time_limit=30, output_dir=tmp_path / "r", progress=False)  # fmt: skip
    return refine(start, X, y, **{"model": three_copies, **defaults, **options})


def test_each_round_is_measured_on_the_users_model(start, data, tmp_path):
    result = _refine(start, data, tmp_path, evaluate=plan_value)
    for row in result.history.rows:
        network = read_onnx(tmp_path / "r" / f"round_{row['round']:03d}.onnx")
        m = three_copies(network)
        stats = solve_model(m, 60)  # the user's own solve of the round's network
        assert row["copies"] == 3
        assert row["binaries"] == sum(1 for v in m.component_data_objects(pyo.Var) if v.is_binary())
        assert row["milp_optimal"] and stats.optimal
        assert row["milp_objective"] == pytest.approx(stats.objective, abs=1e-6)
        assert row["true_value"] == pytest.approx(plan_value(m), abs=1e-5)
        unstable = sum(b.bounds.unstable_count(b.network) for b in (m.net0, m.net1, m.net2))
        assert row["unstable"] == unstable  # every copy's neurons, over its own box
        relaxed = m.clone()
        pyo.TransformationFactory("core.relax_integer_vars").apply_to(relaxed)
        lp = solve_model(relaxed).objective
        assert row["lp_value"] == pytest.approx(lp, abs=1e-6)
        assert row["lp_gap"] == pytest.approx(abs(stats.objective - lp), abs=1e-6)
    first = result.history.rows[1]
    assert first["decision_change"] == pytest.approx(
        first["true_value"] - result.history.rows[0]["true_value"]
    )


def test_the_network_is_trained_on_the_hull_of_the_copies_boxes(start, data, tmp_path):
    result = _refine(start, data, tmp_path)
    assert result.history.rows[0]["training_box"] == "the hull of the 3 copies' boxes"
    box = read_onnx(tmp_path / "r" / "round_001.onnx").input_bounds
    np.testing.assert_array_equal(box.lower, HULL[0])
    np.testing.assert_array_equal(box.upper, HULL[1])


def test_given_input_bounds_must_cover_every_copy(start, data, tmp_path):
    small = InputBox.from_pairs([(-2.0, 2.0), (-0.5, 2.0)])  # copy 0's input 1 reaches -1
    with pytest.raises(ValueError, match=r"does not cover the box of net0: input 1 ranges over"):
        _refine(start, data, tmp_path, input_bounds=small)
    assert not (tmp_path / "r").exists()
    result = _refine(start, data, tmp_path, input_bounds=InputBox([-3.0, -3.0], [3.0, 3.0]))
    assert (
        result.history.rows[0]["training_box"] == "input_bounds, which covers the 3 copies' boxes"
    )


def test_a_copy_outside_the_data_is_warned_about(start, data, tmp_path):
    def wide(network):
        return three_copies(network, [*BOXES[:2], ((1.0, 3.0), (0.0, 1.0))])

    with pytest.warns(
        UserWarning, match=r"1 of 3 copies .* net2: input 0 over \[1, 3\], data over"
    ):
        _refine(start, data, tmp_path, model=wide)


def test_a_maximising_model_judges_the_decision_upward(start, data, tmp_path):
    def maximise(network):
        return three_copies(network, sense=pyo.maximize)

    result = _refine(start, data, tmp_path, model=maximise, evaluate=plan_value)
    base, first = result.history.rows[0], result.history.rows[1]
    assert first["decision_change"] == pytest.approx(base["true_value"] - first["true_value"])


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda net: three_copies(Network.mlp([2, 8, 8, 1], seed=1)), "without an NNBlock of the"),
        (lambda net: "model", "returned str, not a Pyomo model"),
    ],
)
def test_a_model_that_cannot_be_measured_is_refused_before_any_file(
    start, data, tmp_path, build, message
):
    with pytest.raises(ValueError, match=message):
        _refine(start, data, tmp_path, model=build)
    assert not (tmp_path / "r").exists()


def test_two_objectives_are_refused(start, data, tmp_path):
    def two(network):
        m = three_copies(network)
        m.other = pyo.Objective(expr=m.x[0, 0])
        return m

    with pytest.raises(ValueError, match="2 active objectives; it needs exactly one"):
        _refine(start, data, tmp_path, model=two)


def test_cli_model_option(start, data, tmp_path):
    from click.testing import CliRunner

    from pyomo_nnrelax.cli import main

    X, y = data
    write_onnx(start, tmp_path / "start.onnx", dtype="float64")
    np.savez(tmp_path / "data.npz", X=X, y=y)
    (tmp_path / "plan.py").write_text(
        f"from {__name__} import three_copies, plan_value\n"
        "def build(network):\n    return three_copies(network)\n"
    )
    result = CliRunner().invoke(main, [
        "refine", str(tmp_path / "start.onnx"), "--data", str(tmp_path / "data.npz"),
        "-o", str(tmp_path / "out.onnx"), "--model", f"{tmp_path / 'plan.py'}:build",
        "--evaluate", f"{tmp_path / 'plan.py'}:plan_value", "--regularizer", "bw",
        "--rounds", "1", "--epochs", "1", "--milp-time-limit", "30", "-q",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out.history.json").read_text())
    assert rows[0]["copies"] == 3 and rows[0]["training_box"].startswith("the hull")
    assert all(row["true_value"] is not None for row in rows)
    bad = CliRunner().invoke(main, [
        "refine", str(tmp_path / "start.onnx"), "--data", str(tmp_path / "data.npz"),
        "-o", str(tmp_path / "bad.onnx"), "--model", "math:nosuch",
    ])  # fmt: skip
    assert bad.exit_code == 2 and "math has no function 'nosuch'" in bad.stderr
