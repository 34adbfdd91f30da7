"""Regression tests: each one a bug found by an audit or shrunk by hypothesis
(``tests/test_properties.py``), kept as an ordinary test with the bug named in its docstring."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pyomo.environ as pyo
import pytest
from onnx import numpy_helper

from pyomo_nnrelax import Network, NNBlock, StaleBoundsError, tighten_bounds, write_onnx
from pyomo_nnrelax.onnx import read_onnx, read_stored_bounds


def _violation(con) -> float:
    """How far a constraint's body lies outside its bounds at the current values."""
    body = pyo.value(con.body)
    lo = -np.inf if con.lower is None else pyo.value(con.lower)
    hi = np.inf if con.upper is None else pyo.value(con.upper)
    return max(lo - body, body - hi, 0.0)


# ---------------------------------------------------------------- F1: start values at build
@pytest.mark.parametrize("formulation", ["bigm", "partition"])
@pytest.mark.parametrize("relax", [False, True])
def test_every_block_variable_has_a_feasible_value_right_after_build(formulation, relax):
    """F1: variables were None until ``warm_start()`` or a solve, so ``value()`` before a solve
    failed and solvers reading warm starts got nothing.  Now they hold the forward pass at the
    centre of the box, which satisfies every row of the formulation."""
    net = Network.mlp([2, 4, 3, 1], seed=7)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=[(-1, 3), (-2, 0)], formulation=formulation, relax=relax)
    variables = list(m.nn.component_data_objects(pyo.Var))
    assert variables and all(v.value is not None for v in variables)
    np.testing.assert_array_equal(m.nn.input_values(), [1.0, -1.0])
    np.testing.assert_allclose(m.nn.output_values(), net.forward([[1.0, -1.0]])[0], atol=1e-12)
    worst = max(_violation(c) for c in m.nn.component_data_objects(pyo.Constraint))
    assert worst <= 1e-9
    assert all(v.lb - 1e-9 <= v.value <= v.ub + 1e-9 for v in variables)


# ---------------------------------------------------------------- F6: stale stored bounds
def _file_with_lp_bounds(tmp_path):
    """A float64 ONNX file of a small network with LP-tightened bounds over [-1, 1]^2 stored."""
    net = Network.mlp([2, 6, 6, 1], seed=3).with_input_bounds([-1, -1], [1, 1])
    bounds = tighten_bounds(net, input_bounds=net.input_bounds, method="lp", executor="serial")
    path = tmp_path / "tight.onnx"
    write_onnx(net, path, dtype="float64", bounds=bounds)
    return net, bounds, path


def _edit_first_weight(path, new_path, delta: float) -> None:
    """Add ``delta`` to one weight of the file's first initializer, keeping its metadata (what
    editing a file with onnx tools, or retraining and copying metadata_props, does)."""
    model = onnx.load(path)
    init = model.graph.initializer[0]
    weight = numpy_helper.to_array(init).copy()
    weight.flat[0] += delta
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    onnx.save(model, new_path)


def test_stored_bounds_are_used_beside_the_weights_they_were_computed_from(tmp_path):
    net, bounds, path = _file_with_lp_bounds(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = pyo.ConcreteModel()
        m.nn = NNBlock(path)
    assert m.nn.bounds.method == "lp"
    for got, want in zip(m.nn.bounds.lower + m.nn.bounds.upper, bounds.lower + bounds.upper):
        np.testing.assert_array_equal(got, want)


def test_stored_bounds_are_refused_after_a_weight_of_the_file_changes(tmp_path):
    """F6: bounds stored in the metadata were used whenever their input box matched, even when
    the file's weights had been changed since; the MILP then used bounds of another network.
    Here the edited weight moves the true maximum of the output above the stale bounds'
    upper bound, so the MILP maximum over the stale bounds would be wrong."""
    net, bounds, path = _file_with_lp_bounds(tmp_path)
    edited = tmp_path / "edited.onnx"
    _edit_first_weight(path, edited, 5.0)
    edited_net = read_onnx(edited)
    assert not edited_net.layers[0] == net.layers[0]
    with pytest.raises(StaleBoundsError, match="computed for other weights"):
        read_stored_bounds(edited)
    with pytest.raises(StaleBoundsError, match="bounds='stored' cannot be used"):
        NNBlock(edited, bounds="stored")
    m = pyo.ConcreteModel()
    with pytest.warns(UserWarning, match="other weights.*using interval bounds"):
        m.nn = NNBlock(edited)
    assert m.nn.bounds.method == "interval"
    X = np.random.default_rng(0).uniform(-1, 1, size=(4000, 2))
    assert m.nn.bounds.contains(edited_net, X)
    assert not bounds.contains(edited_net, X)  # the stale bounds exclude reachable values


def test_stored_bounds_without_a_fingerprint_are_not_used(tmp_path):
    """F6, old files: bounds written before the fingerprint cannot be verified, so they are
    treated like stale ones (warning and interval bounds, or an error for bounds='stored')."""
    _, _, path = _file_with_lp_bounds(tmp_path)
    model = onnx.load(path)
    entry = next(p for p in model.metadata_props if p.key == "nnrelax.bounds")
    data = json.loads(entry.value)
    del data["weights_sha256"]
    entry.value = json.dumps(data)
    with pytest.raises(StaleBoundsError, match="no fingerprint"):
        read_stored_bounds(model)
    with pytest.raises(StaleBoundsError, match="no fingerprint"):
        NNBlock(model, bounds="stored")
    with pytest.warns(UserWarning, match="no fingerprint"):
        block = NNBlock(model)
    assert block.bounds.method == "interval"
