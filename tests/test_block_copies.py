"""NNBlock with many copies of one network (copies.py, components.py, starts.py), and every way
Pyomo offers to make copies: a batched block is the same MILP as separate blocks."""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import (
    InputBoundsError,
    InputBox,
    Network,
    NNBlock,
    NNRelaxError,
    interval_bounds,
    solve_model,
    write_onnx,
)
from pyomo_nnrelax.onnx import run_onnxruntime

NET = Network.mlp([2, 6, 6, 1], seed=1)
# each copy's own box, from its variables' bounds
BOXES = [((-2.0, 0.0), (-1.0, 1.0)), ((-1.0, 1.0), (0.0, 2.0)), ((0.5, 1.5), (-0.5, 0.5)),
         ((-2.0, 2.0), (-2.0, 2.0))]  # fmt: skip
T = len(BOXES)


def variables(m: pyo.ConcreteModel) -> None:
    m.T = pyo.RangeSet(0, T - 1)
    m.x = pyo.Var(m.T, [0, 1], bounds=lambda _, t, i: BOXES[t][i])


def coupled(m: pyo.ConcreteModel, outputs) -> None:
    """The copies' first inputs sum to at least -1; minimise the sum of their outputs."""
    m.couple = pyo.Constraint(expr=sum(m.x[t, 0] for t in m.T) >= -1.0)
    m.obj = pyo.Objective(expr=sum(outputs(t) for t in m.T))


def batched(network=NET, **options) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel()
    variables(m)
    m.nn = NNBlock(network, inputs=m.x, **options)
    coupled(m, lambda t: m.nn.outputs[t, 0])
    return m


def separate(network=NET, **options) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel()
    variables(m)
    for t in m.T:
        m.add_component(f"nn{t}", NNBlock(network, inputs=[m.x[t, 0], m.x[t, 1]], **options))
    coupled(m, lambda t: m.component(f"nn{t}").outputs[0])
    return m


@pytest.mark.parametrize(
    "options",
    [{}, {"formulation": "partition"}, {"bounds": "lp"}, {"relax": True}],
    ids=["bigm", "partition", "lp-bounds", "relaxed"],
)
def test_a_batched_block_is_the_same_milp_as_separate_blocks(options):
    one, many = batched(**options), separate(**options)
    a, b = solve_model(one), solve_model(many)
    assert a.objective == pytest.approx(b.objective, abs=1e-6)
    count = lambda m: sum(1 for v in m.component_data_objects(pyo.Var) if v.is_binary())  # noqa: E731
    assert count(one) == count(many)
    if not options.get("relax"):
        assert a.optimal and one.nn.check().passed
        # the optimum is the network's at the solved inputs, copy by copy
        X = one.nn.input_values()
        np.testing.assert_allclose(one.nn.output_values(), NET.forward(X), atol=1e-6)


def test_each_copy_has_its_own_box_and_the_bounds_of_one_propagation():
    m = batched()
    for t, (box, bounds) in enumerate(zip(m.nn.copy_boxes(), m.nn.copy_bounds())):
        expected = interval_bounds(NET, InputBox.from_pairs(BOXES[t]))
        assert box == InputBox.from_pairs(BOXES[t])
        for got, want in zip(bounds.lower + bounds.upper, expected.lower + expected.upper):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert m.nn.copies == T and m.nn.copy_names() == [f"nn[{t}]" for t in range(T)]


def test_fixed_inputs_reproduce_onnxruntime_in_every_copy(tmp_path):
    path = tmp_path / "net.onnx"
    write_onnx(NET, path, dtype="float64")
    m = pyo.ConcreteModel()
    variables(m)
    m.nn = NNBlock(str(path), inputs=m.x)
    X = np.array([[-1.0, 0.5], [0.25, 1.5], [1.5, -0.5], [-2.0, 2.0]])
    for t in m.T:
        for i in (0, 1):
            m.x[t, i].fix(X[t, i])
    m.obj = pyo.Objective(expr=sum(m.nn.outputs[t, 0] for t in m.T))
    solve_model(m)
    np.testing.assert_allclose(m.nn.output_values(), run_onnxruntime(path, X), atol=1e-6)
    result = m.nn.check()
    assert result.inputs.shape == (T, 2) and result.block_outputs.shape == (T, 1)
    one = m.nn.check(copy=2)
    assert one.inputs.tolist() == X[2].tolist() and one.passed


def test_components_are_indexed_by_the_copy_first():
    m = batched()
    assert set(m.nn.outputs.keys()) == {(t, 0) for t in range(T)}
    assert m.nn.inputs[2, 1] is m.x[2, 1]
    assert {k[0] for k in m.nn.layer[0].z.keys()} == set(range(T))
    assert "4 copies" in m.nn.summary() and "unstable neurons per copy: min" in m.nn.summary()
    assert m.nn.summary(copy=0).splitlines()[0].count("copies") == 0
    for name in ("bounds", "scale", "matrix_model"):
        with pytest.raises(NNRelaxError, match="holds 4 copies"):
            getattr(m.nn, name)


def test_rows_arrays_and_dataframes_of_variables_are_copies():
    m = pyo.ConcreteModel()
    variables(m)
    rows = [[m.x[t, 0], m.x[t, 1]] for t in m.T]
    m.a = NNBlock(NET, inputs=rows)
    m.b = NNBlock(NET, inputs=np.array(rows, dtype=object))
    assert m.a.copies == m.b.copies == T and m.a.inputs[3, 0] is m.x[3, 0]
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(rows, index=["mon", "tue", "wed", "thu"], columns=["load", "setpoint"])
    m.c = NNBlock(NET, inputs=frame)
    assert m.c.inputs["wed", 1] is m.x[2, 1] and m.c.copy_names()[2] == "c[wed]"


def test_a_var_over_three_sets_has_one_copy_per_pair():
    m = pyo.ConcreteModel()
    m.x = pyo.Var(["a", "b"], [1, 2, 3], [0, 1], bounds=(-1, 1))
    m.nn = NNBlock(NET, inputs=m.x)
    assert m.nn.copies == 6 and m.nn.outputs["b", 3, 0] is not None
    assert m.nn.copy_names()[0] == "nn[a, 1]"


def test_the_users_output_rows_stand_for_the_outputs():
    m = pyo.ConcreteModel()
    variables(m)
    m.y = pyo.Var(m.T, [0])
    m.nn = NNBlock(NET, inputs=m.x, outputs=m.y)
    coupled(m, lambda t: m.y[t, 0])
    solve_model(m)
    np.testing.assert_allclose(
        [m.y[t, 0].value for t in m.T], NET.forward(m.nn.input_values())[:, 0], atol=1e-6
    )


@pytest.mark.parametrize(
    "inputs, outputs, error, message",
    [
        (lambda m: [[m.x[0, 0], m.x[0, 1]], m.x[1, 0]], None, TypeError, "entry 0 is a row"),
        (lambda m: [[m.x[0, 0]], [m.x[1, 0], m.x[1, 1]]], None, ValueError,
         "holds 1 variables of copy 0; the network has 2 inputs"),
        (lambda m: [[m.x[0, 0], 1.0]], None, TypeError, "entry 1 of copy 0 is float"),
        (lambda m: m.x, lambda m: [m.y[0, 0]], ValueError,
         "inputs= holds 4 copies and outputs= one"),
        (lambda m: m.x, lambda m: [[m.y[0, 0]], [m.y[1, 0]]], ValueError,
         "outputs= holds 2 copies and inputs= 4 copies"),
        (lambda m: "x", None, TypeError, "inputs= takes a Pyomo Var"),
    ],
)  # fmt: skip
def test_inputs_that_cannot_be_read_one_way_are_refused(inputs, outputs, error, message):
    m = pyo.ConcreteModel()
    variables(m)
    m.y = pyo.Var(m.T, [0])
    with pytest.raises(error, match=message):
        NNBlock(NET, inputs=inputs(m), outputs=None if outputs is None else outputs(m))


def test_warm_start_per_copy_respects_boxes_and_the_models_rows():
    m = batched()
    X = np.array([[b[0][0], b[1][1]] for b in BOXES])
    assert m.nn.warm_start(X).shape == (T, 2)
    np.testing.assert_allclose(m.nn.output_values(), NET.forward(X), atol=1e-12)
    bad = X.copy()
    bad[2, 0] = 1.6  # copy 2's first input lies in [0.5, 1.5]
    with pytest.raises(InputBoundsError, match=r"input 0 of nn\[2\] is 1.6, outside its box"):
        m.nn.warm_start(bad)
    m.couple.deactivate()
    m.tight = pyo.Constraint(expr=sum(m.x[t, 0] for t in m.T) >= 2.9)  # only near the tops
    start = m.nn.warm_start()  # from the LP relaxation of the whole model
    assert start[:, 0].sum() >= 2.9 - 1e-6
    assert all(InputBox.from_pairs(b).contains(x[None])[0] for b, x in zip(BOXES, start))


def test_every_pyomo_idiom_builds_the_network_or_raises():
    # a Block rule that returns the block: Pyomo would lose the network, so it raises
    m = pyo.ConcreteModel()
    with pytest.raises(TypeError, match=r"a Block rule returned an NNBlock for p\[0\]"):
        m.p = pyo.Block(
            [0, 1], rule=lambda b, t: NNBlock(NET, input_bounds=InputBox.from_pairs(BOXES[t]))
        )
    # a rule that assigns it, an indexed block filled later, add_component: all complete
    m = pyo.ConcreteModel()

    def rule(b, t):
        b.nn = NNBlock(NET, input_bounds=InputBox.from_pairs(BOXES[t]))

    m.p = pyo.Block([0, 1], rule=rule)
    m.q = pyo.Block([0, 1])
    for t in (0, 1):
        m.q[t].nn = NNBlock(NET, input_bounds=InputBox.from_pairs(BOXES[t]))
        m.add_component(f"r{t}", NNBlock(NET, input_bounds=InputBox.from_pairs(BOXES[t])))
    blocks = [m.p[0].nn, m.p[1].nn, m.q[0].nn, m.q[1].nn, m.r0, m.r1]
    m.obj = pyo.Objective(expr=sum(b.outputs[0] for b in blocks))
    stats = solve_model(m)
    single = [solve_model(_alone(BOXES[t])).objective for t in (0, 1)]
    assert stats.objective == pytest.approx(3 * sum(single), abs=1e-6)
    assert all(isinstance(b, NNBlock) and b.check().passed for b in blocks)


def test_a_clone_of_a_batched_model_solves_on_its_own():
    m = batched()
    twin = m.clone()
    assert twin.nn.inputs[1, 0] is twin.x[1, 0] and twin.nn.inputs[1, 0] is not m.x[1, 0]
    assert solve_model(twin).objective == pytest.approx(solve_model(m).objective, abs=1e-9)
    assert twin.nn.check().passed


def test_an_unconstructed_variable_is_named():
    m = pyo.AbstractModel()
    m.x = pyo.Var([0, 1], bounds=(-1, 1))
    with pytest.raises(ValueError, match=r"inputs=x is not constructed yet"):
        NNBlock(NET, inputs=m.x)


@pytest.mark.parametrize("given", ["stored", "NetworkBounds"])
def test_stored_bounds_serve_every_smaller_box(tmp_path, given):
    """Bounds over a wide box, stored in the file or given as NetworkBounds, serve each copy
    over its own box, intersected with that box's interval bounds."""
    from pyomo_nnrelax import tighten_bounds

    wide = InputBox([-5.0, -5.0], [5.0, 5.0])
    stored = tighten_bounds(NET, input_bounds=wide, method="lp")
    path = tmp_path / "stored.onnx"
    write_onnx(NET.with_input_bounds(*wide), path, bounds=stored, dtype="float64")
    m = pyo.ConcreteModel()
    variables(m)
    m.nn = NNBlock(str(path), inputs=m.x, bounds="stored" if given == "stored" else stored)
    rng = np.random.default_rng(0)
    boxes = [InputBox.from_pairs(box) for box in BOXES]  # from the variables, not the block
    assert m.nn.copy_boxes() == boxes
    for box, bounds in zip(boxes, m.nn.copy_bounds()):
        assert bounds.method == "lp" and bounds.input_box == box
        assert bounds.contains(NET, box.sample(2000, rng))
        ibp = interval_bounds(NET, box)
        for got, lp_wide, own in zip(bounds.upper, stored.upper, ibp.upper):
            np.testing.assert_array_equal(got, np.minimum(lp_wide, own))
    with pytest.raises(InputBoundsError, match="no stored bounds covering"):
        NNBlock(str(path), input_bounds=InputBox([-6.0, -1.0], [0.0, 1.0]), bounds="stored")


def _alone(box) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel()
    m.nn = NNBlock(NET, input_bounds=InputBox.from_pairs(box))
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    return m
