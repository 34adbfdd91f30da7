"""Layers whose neurons are ReLU or linear one by one, and tied weights, through the package.

Skip connections, LeakyReLU, clips and max pools are read into such layers (``docs/design.md``,
"One normal form"); convolutions into tied ones.  These tests build them directly, so they
check the bounds, formulations, LP relaxations, gradients and the trainer independently of
the ONNX reader.
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import (
    InputBox,
    InvalidNetworkError,
    Layer,
    Network,
    interval_bounds,
    tighten_bounds,
)
from pyomo_nnrelax.block import NNBlock
from pyomo_nnrelax.onnx import read_onnx, run_onnxruntime, write_onnx
from pyomo_nnrelax.relaxation import solve_relaxations
from pyomo_nnrelax.ties import WeightTie
from pyomo_nnrelax.training import BoundWidth, LPGap, ReLUStability, Trainer, ibp_forward
from pyomo_nnrelax.training.backprop import backward
from pyomo_nnrelax.training.dual import dual_forward
from tests.support.gradients import assert_gradient, reg_context
from tests.support.solving import solve_optimal

BOX = InputBox(lower=[-1.0, -0.5], upper=[1.0, 1.5])


def mixed_network(seed: int, widths=(2, 8, 8, 6, 1)) -> Network:
    """Random layers, each hidden one with about half of its neurons linear."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        mask = np.zeros(n_out, bool) if last else rng.random(n_out) < 0.5
        if not last:
            mask[0], mask[-1] = True, False  # keep the layer mixed
        layers.append(
            Layer(rng.normal(size=(n_out, n_in)) / np.sqrt(n_in), rng.normal(0, 0.3, n_out), mask)
        )
    return Network(tuple(layers))


def grid(n: int = 121) -> np.ndarray:
    a, b = np.meshgrid(np.linspace(-1.0, 1.0, n), np.linspace(-0.5, 1.5, n))
    return np.stack([a.ravel(), b.ravel()], axis=1)


def test_a_mask_applies_relu_only_where_it_says():
    layer = Layer(np.eye(3), np.zeros(3), np.array([True, False, True]))
    net = Network((layer,))
    np.testing.assert_array_equal(net.forward([[-1.0, -2.0, 3.0]]), [[0.0, -2.0, 3.0]])
    assert layer.kind == "mixed" and repr(net) == "Network(widths=(3, 3), activations='m')"
    assert Layer(np.eye(2), np.zeros(2), np.array([True, True])).activation == "relu"
    assert Layer(np.eye(2), np.zeros(2), np.array([False, False])).activation == "linear"


@pytest.mark.parametrize(
    "mask, pattern",
    [(np.array([1, 0]), "bool array"), (np.array([True, False, True]), r"shape \(2,\)")],
)
def test_a_bad_mask_is_an_error_naming_what_is_expected(mask, pattern):
    with pytest.raises(InvalidNetworkError, match=pattern):
        Layer(np.eye(2), np.zeros(2), mask)


@pytest.mark.parametrize("formulation", ["bigm", "partition"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_inputs_reproduce_onnxruntime(tmp_path, formulation, seed):
    net = mixed_network(seed)
    path = tmp_path / "mixed.onnx"
    write_onnx(net, path, dtype="float64")
    assert read_onnx(path) == net  # written as Gemm + PRelu, read back as the same layers
    for x in np.random.default_rng(seed).uniform(BOX.lower, BOX.upper, size=(3, 2)):
        m = pyo.ConcreteModel()
        m.nn = NNBlock(str(path), input_bounds=BOX, formulation=formulation)
        for i, v in enumerate(x):
            m.nn.inputs[i].fix(float(v))
        m.obj = pyo.Objective(expr=m.nn.outputs[0])
        solve_optimal(m)
        np.testing.assert_allclose(
            m.nn.output_values(), run_onnxruntime(path, x[None])[0], atol=1e-6, rtol=0
        )


@pytest.mark.parametrize("method", ["interval", "lp", "milp"])
def test_bounds_contain_every_sampled_pre_activation(method):
    net = mixed_network(2)
    bounds = interval_bounds(net, BOX)
    if method != "interval":
        bounds = tighten_bounds(net, bounds=bounds, method=method)
    assert bounds.contains(net, grid(), tol=1e-7)
    # linear neurons are never unstable, and their bounds may be negative after "activation"
    lo, _ = bounds.post_activation(net, 0)
    assert np.any(lo[~net.layers[0].relu_mask] < 0.0)


def test_linear_neurons_get_no_binary():
    net = mixed_network(3)
    bounds = interval_bounds(net, BOX)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=BOX)
    for l, layer in enumerate(net.layers[:-1]):
        binaries = set(m.nn.layer[l].is_active.keys())
        unstable = (bounds.lower[l] < 0) & (bounds.upper[l] > 0)
        assert binaries == set(np.flatnonzero(unstable & layer.relu_mask))
        assert not binaries & set(np.flatnonzero(~layer.relu_mask))
    assert bounds.unstable_count(net) == sum(len(m.nn.layer[l].is_active) for l in range(3))


@pytest.mark.parametrize("formulation", ["bigm", "partition"])
def test_milp_minimum_is_below_sampling_and_exact_at_its_argmin(formulation):
    net = mixed_network(4)
    values = {}
    for relax in (False, True):
        m = pyo.ConcreteModel()
        m.nn = NNBlock(net, input_bounds=BOX, formulation=formulation, relax=relax)
        m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.minimize)
        solve_optimal(m)
        values[relax] = pyo.value(m.obj)
        if not relax:
            assert abs(net.forward(m.nn.input_values())[0, 0] - values[relax]) < 1e-6
            assert m.nn.check().max_abs_error < 1e-6
    assert values[False] <= net.forward(grid(201)).min() + 1e-9
    assert values[True] <= values[False] + 1e-9


def test_relaxation_backends_and_the_dual_bound_agree_on_mixed_layers():
    net = mixed_network(5)
    bounds = interval_bounds(net, BOX)
    X = np.random.default_rng(0).uniform(-0.5, 0.5, size=(5, 2))
    highs = solve_relaxations(net, bounds, X, [1.0], "min", lp_backend="highs")
    pyomo = solve_relaxations(net, bounds, X, [1.0], "min", lp_backend="pyomo")
    np.testing.assert_allclose(highs.value, pyomo.value, atol=1e-7)
    assert np.all(highs.value <= net.forward(X)[:, 0] + 1e-9)
    dual = dual_forward(net.layers, bounds.lower, bounds.upper, X, np.ones(1), [None] * 4)
    assert np.all(dual.value <= highs.value + 1e-7)


def test_backprop_through_mixed_layers_matches_finite_differences():
    layers = mixed_network(6).layers
    X = np.random.default_rng(1).uniform(-1, 1, size=(7, 2))

    def loss(ls):
        return float(Network(ls).forward(X).sum())

    net = Network(layers)
    from pyomo_nnrelax.network import forward_cache

    _, inputs, pre = forward_cache(net.layers, X)
    grads = backward(net.layers, inputs, pre, np.ones((7, 1)))
    assert_gradient(loss, layers, grads)


@pytest.mark.parametrize(
    "regularizer",
    [
        BoundWidth(),
        ReLUStability(),
        LPGap(samples=4, gap_method="exact_lp"),
        LPGap(samples=4, gap_method="dual_network"),
    ],
    ids=["bw", "rs", "lp", "dual"],
)
def test_regularizer_gradients_on_mixed_layers_match_finite_differences(regularizer):
    layers = mixed_network(7).layers
    X = np.random.default_rng(2).uniform(-0.5, 0.5, size=(6, 2))
    # the LP gap's gradient holds the bounds fixed (its default); the bound penalties' do not
    fixed = {"_ibp": ibp_forward(layers, *BOX)} if isinstance(regularizer, LPGap) else {}

    def value(ls):
        return regularizer.value_and_grad(reg_context(ls, BOX, X, **fixed))[0]

    grads = regularizer.value_and_grad(reg_context(layers, BOX, X, **fixed))[1]
    assert_gradient(value, layers, grads, rtol=2e-5)


def test_bound_penalties_count_only_relu_neurons():
    net = mixed_network(8)
    trace = interval_bounds(net, BOX)
    widths = np.concatenate(
        [(hi - lo)[layer.relu_mask] for layer, lo, hi in zip(net.layers, trace.lower, trace.upper)]
    )
    value = BoundWidth().value_and_grad(reg_context(net.layers, BOX, np.zeros((1, 2))))[0]
    assert value == pytest.approx(widths.mean())


# ---------------------------------------------------------------------- ties
def conv_like_tie() -> tuple[np.ndarray, WeightTie]:
    """A 1-D convolution of a 3-tap kernel over 5 inputs (3 outputs), zeros fixed."""
    kernel = np.array([0.5, -1.0, 2.0])
    index = np.full((3, 5), -1)
    for i in range(3):
        index[i, i : i + 3] = [0, 1, 2]
    tie = WeightTie(index, np.ones((3, 5)), np.zeros((3, 5)))
    return tie.weight(kernel), tie


def test_a_tie_rebuilds_its_weight_and_sums_gradients_over_shared_entries():
    weight, tie = conv_like_tie()
    np.testing.assert_array_equal(tie.parameters(weight), [0.5, -1.0, 2.0])
    grad = np.arange(15.0).reshape(3, 5)
    # d/d theta_k sum(grad * W(theta)) = sum of grad over the entries that hold theta_k
    np.testing.assert_array_equal(tie.gradient(grad), [0 + 6 + 12, 1 + 7 + 13, 2 + 8 + 14])
    factor = np.array([1.0, 2.0, -1.0])[:, None]
    scaled = tie.scaled(factor)
    w2 = scaled.weight(tie.parameters(weight))
    np.testing.assert_array_equal(w2, weight * factor)
    shifted = tie.scaled(factor, shift=0.25)  # tied entries get an offset, fixed ones move
    np.testing.assert_array_equal(shifted.weight(tie.parameters(weight)), weight * factor + 0.25)
    np.testing.assert_array_equal(shifted.parameters(weight * factor + 0.25), [0.5, -1.0, 2.0])


def test_a_weight_that_breaks_its_tie_is_an_error():
    weight, tie = conv_like_tie()
    broken = weight.copy()
    broken[1, 1] += 0.1
    with pytest.raises(InvalidNetworkError, match="does not follow its tie"):
        Layer(broken, np.zeros(3), "relu", tie)
    with pytest.raises(InvalidNetworkError, match="numbered 0, 1"):
        WeightTie(np.array([[0, 2]]), np.ones((1, 2)), np.zeros((1, 2)))
    with pytest.raises(InvalidNetworkError, match="zero or non-finite factor"):
        WeightTie(np.array([[0, 1]]), np.array([[1.0, 0.0]]), np.zeros((1, 2)))


def test_the_trainer_keeps_a_tie_and_lowers_the_loss():
    weight, tie = conv_like_tie()
    layers = (
        Layer(weight, np.zeros(3), "relu", tie),
        Layer(np.array([[1.0, -1.0, 0.5]]), np.zeros(1), "linear"),
    )
    net = Network(layers)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(256, 5))
    y = np.maximum(X[:, :3] - X[:, 1:4], 0).sum(axis=1) - X[:, 2]
    trainer = Trainer(
        net,
        X,
        y,
        epochs=30,
        lr=1e-2,
        seed=0,
        regularizer=BoundWidth(),
        lam=1e-3,
        input_bounds=[(-1.0, 1.0)] * 5,
    )
    before = trainer.held_out_loss(net)
    trained = trainer.fit().network.layers[0]
    assert trainer.held_out_loss(trainer.network_) < 0.5 * before
    assert trained.tie is tie
    np.testing.assert_array_equal(trained.weight[tie.index == -1], 0.0)
    theta = tie.parameters(trained.weight)
    np.testing.assert_allclose(trained.weight, tie.weight(theta), rtol=0)
    assert not np.allclose(theta, [0.5, -1.0, 2.0])


@pytest.mark.parametrize("formulation", ["bigm", "partition"])
def test_warm_start_satisfies_every_row_and_bound_of_a_mixed_network(formulation):
    net = mixed_network(9)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=BOX, formulation=formulation)
    x = m.nn.warm_start([0.4, 0.9])
    np.testing.assert_allclose(m.nn.output_values(), net.forward(x)[0], atol=1e-12)
    for con in m.component_data_objects(pyo.Constraint, active=True):
        body = pyo.value(con.body)
        assert con.lower is None or body >= pyo.value(con.lower) - 1e-9, con.name
        assert con.upper is None or body <= pyo.value(con.upper) + 1e-9, con.name
    for var in m.component_data_objects(pyo.Var):
        assert var.lb is None or var.value >= var.lb - 1e-9, var.name
        assert var.ub is None or var.value <= var.ub + 1e-9, var.name


def tied_network() -> Network:
    weight, tie = conv_like_tie()
    return Network(
        (
            Layer(weight, np.zeros(3), "relu", tie),
            Layer(np.array([[1.0, -1.0, 0.5]]), np.zeros(1), "linear"),
        ),
        input_bounds=InputBox(lower=-np.ones(5), upper=np.ones(5)),
    )


def test_a_network_read_back_from_onnx_keeps_its_ties_and_a_template_can_give_them(tmp_path):
    net = tied_network()
    write_onnx(net, tmp_path / "c.onnx", dtype="float64")
    back = read_onnx(tmp_path / "c.onnx")  # dense Gemm layers, the ties from metadata
    np.testing.assert_array_equal(back.layers[0].tie.index, net.layers[0].tie.index)
    np.testing.assert_array_equal(back.layers[0].tie.fixed, net.layers[0].tie.fixed)
    assert back == net and back.layers[1].tie is None
    dense = Network(tuple(Layer(l.weight, l.bias, l.activation) for l in back.layers))
    again = dense.with_structure_of(net)
    assert again.layers[0].tie is net.layers[0].tie and again == net
    broken = Network((Layer(np.ones((3, 5)), np.zeros(3), "relu"), net.layers[1]))
    with pytest.raises(InvalidNetworkError, match="layer 0: .*does not follow its tie"):
        broken.with_structure_of(net)
    other = Network((Layer(np.ones((3, 5)), np.zeros(3), "linear"), net.layers[1]))
    with pytest.raises(InvalidNetworkError, match="layer 0: its ReLU neurons differ"):
        other.with_structure_of(net)


def test_stored_ties_that_do_not_fit_the_weights_are_dropped_with_a_warning(tmp_path):
    import onnx

    net = tied_network()
    # a tie with factors other than 1: float32 rounds its entries apart
    scaled = net.layers[0].tie.scaled(np.array([1.0, 1.0 / 3.0, 1.0])[:, None])
    first = Layer(scaled.weight(np.array([0.1, 0.7, -0.3])), np.zeros(3), "relu", scaled)
    odd = net.with_layers([first, net.layers[1]])
    write_onnx(odd, tmp_path / "f64.onnx", dtype="float64")
    assert read_onnx(tmp_path / "f64.onnx").layers[0].tie is not None
    write_onnx(odd, tmp_path / "f32.onnx")
    with pytest.warns(UserWarning, match="do not follow the ties.*read without ties"):
        assert read_onnx(tmp_path / "f32.onnx").layers[0].tie is None
    model = onnx.load(tmp_path / "f64.onnx")
    next(p for p in model.metadata_props if p.key == "nnrelax.ties").value = "not base64!"
    with pytest.warns(UserWarning, match="'nnrelax.ties' cannot be read"):
        assert read_onnx(model).layers[0].tie is None


def test_restore_and_refine_keep_the_ties_of_the_network_they_train(tmp_path):
    from pyomo_nnrelax.refinement import refine

    net = tied_network()
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(128, 5))
    y = np.maximum(X[:, :3] - X[:, 1:4], 0).sum(axis=1)
    trainer = Trainer(net, X, y, epochs=2, seed=0)
    write_onnx(net, tmp_path / "c.onnx", dtype="float64")
    trainer.restore(read_onnx(tmp_path / "c.onnx"))
    trainer.fit()
    assert trainer.network_.layers[0].tie is net.layers[0].tie
    result = refine(
        net,
        X,
        y,
        rounds=2,
        epochs_per_round=2,
        regularizer=BoundWidth(),
        lam=1e-2,
        loss_budget=1.5,
        milp_time_limit=10,
        progress=False,
        output_dir=tmp_path / "r",
    )
    assert result.network.layers[0].tie is net.layers[0].tie
    np.testing.assert_array_equal(result.network.layers[0].weight[net.layers[0].tie.index < 0], 0)


@pytest.mark.parametrize("method", ["lp", "milp"])
def test_tightening_skips_copies_of_tightened_neurons_and_loses_nothing(monkeypatch, method):
    from pyomo_nnrelax.lp import tightening

    rng = np.random.default_rng(4)
    first = Layer(rng.normal(size=(6, 2)), rng.normal(0, 0.3, 6))
    # layer 1: four new ReLUs and copies of layer 0's outputs (a skip connection)
    w1 = np.vstack([rng.normal(size=(4, 6)), np.eye(6)])
    second = Layer(w1, np.r_[rng.normal(0, 0.3, 4), np.zeros(6)], np.r_[[True] * 4, [False] * 6])
    w2 = np.vstack([rng.normal(size=(3, 10)), np.eye(10)[4:]])  # copies of the copies
    third = Layer(w2, np.zeros(9), np.r_[[True] * 3, [False] * 6])
    net = Network((first, second, third, Layer(rng.normal(size=(1, 9)), np.zeros(1), "linear")))
    solved = []
    real = tightening.solve_work
    monkeypatch.setattr(tightening, "solve_work", lambda w: solved.append(w.cols.size) or real(w))
    skipping = tighten_bounds(net, bounds=interval_bounds(net, BOX), method=method)
    n_skipping = sum(solved)
    solved.clear()
    monkeypatch.setattr(tightening, "_copies", lambda layer, exact: np.zeros(layer.n_out, bool))
    solving = tighten_bounds(net, bounds=interval_bounds(net, BOX), method=method)
    for a, b in zip(skipping.lower + skipping.upper, solving.lower + solving.upper):
        np.testing.assert_allclose(a, b, atol=1e-7)
    assert n_skipping < sum(solved)


def test_stored_bounds_of_a_mixed_network_round_trip_and_go_stale_with_its_masks(tmp_path):
    from pyomo_nnrelax import StaleBoundsError
    from pyomo_nnrelax.onnx import read_stored_bounds

    net = mixed_network(10)
    bounds = tighten_bounds(net, bounds=interval_bounds(net, BOX), method="lp")
    write_onnx(net, tmp_path / "b.onnx", bounds=bounds, dtype="float64")
    stored = read_stored_bounds(tmp_path / "b.onnx")
    for a, b in zip(stored.lower + stored.upper, bounds.lower + bounds.upper):
        np.testing.assert_array_equal(a, b)
    # the same weights with another ReLU mask are another network: its bounds are stale
    flipped = list(net.layers)
    mask = flipped[0].relu_mask.copy()
    mask[[0, -1]] = ~mask[[0, -1]]
    flipped[0] = Layer(flipped[0].weight, flipped[0].bias, mask)
    with pytest.raises(StaleBoundsError):
        read_stored_bounds(tmp_path / "b.onnx", network=net.with_layers(flipped))
