"""Sparse layers give what dense layers give, through the whole package.

Each network here is taken in both storages (``Network.in_storage``): an MLP with zero
weights, a network of mixed ReLU and linear neurons, and a convolutional network read from a
hand-built ONNX graph (its kernel shared, its padding fixed).  Forward passes, interval and
tightened bounds, the MILP at fixed inputs against onnxruntime, MILP optima under both
formulations, the LP relaxation and its dual bound, every gradient (against the dense one
and against central differences), and training agree to 1e-9.  A sparse layer's memory grows
with its stored entries, not with rows times columns.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyomo.environ as pyo
import pytest
from onnx import helper
from scipy import sparse

from pyomo_nnrelax import (
    InputBox,
    Layer,
    Network,
    NNBlock,
    Trainer,
    interval_bounds,
    read_onnx,
    run_onnxruntime,
    tighten_bounds,
    write_onnx,
)
from pyomo_nnrelax.matrices import to_dense
from pyomo_nnrelax.network import forward_cache
from pyomo_nnrelax.relaxation import solve_relaxations
from pyomo_nnrelax.training import (
    L1,
    L2,
    BoundWidth,
    LPGap,
    ReLUStability,
    StableNeuron,
    ibp_backward,
    ibp_forward,
)
from pyomo_nnrelax.training.backprop import backward
from pyomo_nnrelax.training.dual import dual_backward, dual_forward
from tests.support.gradients import assert_gradient, reg_context
from tests.support.onnx_graphs import model
from tests.support.solving import solve_optimal

TOL = 1e-9


def _mlp_with_zeros() -> Network:
    net = Network.mlp([3, 7, 6, 2], seed=4)
    layers = []
    for l, layer in enumerate(net.layers):
        w = layer.weight.copy()
        w[np.random.default_rng(l).random(w.shape) < 0.4] = 0.0  # structural zeros
        layers.append(Layer(w, layer.bias, layer.activation))
    return net.with_layers(layers)


def _mixed() -> Network:
    rng = np.random.default_rng(7)
    mask = np.array([True, False, True, True, False])
    return Network(
        (
            Layer(rng.normal(size=(5, 3)), rng.normal(size=5) * 0.3, mask),
            Layer(rng.normal(size=(4, 5)), rng.normal(size=4) * 0.3, "relu"),
            Layer(rng.normal(size=(1, 4)), rng.normal(size=1), "linear"),
        )
    )


def _cnn() -> Network:
    """Conv(1->2, 3x3, pad 1) on 1x4x4, Relu, Flatten, Gemm(32->3), Relu, Gemm(3->1)."""
    rng = np.random.default_rng(11)
    inits = {
        "k": rng.normal(size=(2, 1, 3, 3)),
        "kb": rng.normal(size=2) * 0.1,
        "w1": rng.normal(size=(32, 3)) * 0.3,
        "b1": rng.normal(size=3) * 0.1,
        "w2": rng.normal(size=(3, 1)),
        "b2": rng.normal(size=1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "k", "kb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu1"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "w1"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu2"),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="mm2"),
        helper.make_node("Add", ["m2", "b2"], ["y"], name="add2"),
    ]
    return read_onnx(model(nodes, inits, input_shape=(1, 4, 4), out_rank=2))


NETWORKS = {"mlp_with_zeros": _mlp_with_zeros, "mixed": _mixed, "cnn": _cnn}


@pytest.fixture(params=list(NETWORKS))
def pair(request) -> tuple[Network, Network, InputBox]:
    """The network stored dense and sparse, and a box over its inputs."""
    net = NETWORKS[request.param]()
    n = net.n_inputs
    box = InputBox(lower=np.full(n, -1.0), upper=np.full(n, 1.0))
    dense, sparse_net = net.in_storage("dense"), net.in_storage("sparse")
    assert all(not layer.is_sparse for layer in dense.layers)
    assert all(layer.is_sparse for layer in sparse_net.layers)
    return dense, sparse_net, box


def _points(box: InputBox, n: int = 9, seed: int = 0) -> np.ndarray:
    return box.sample(n, np.random.default_rng(seed))


def _gathered(layer: Layer, d_weight: np.ndarray) -> np.ndarray:
    """A dense layer's weight gradient at a sparse layer's stored entries."""
    return d_weight[
        np.repeat(np.arange(layer.n_out), np.diff(layer.weight.indptr)), layer.weight.indices
    ]


def assert_bounds_equal(a, b) -> None:
    for x, y in zip(a.lower + a.upper, b.lower + b.upper):
        np.testing.assert_allclose(x, y, rtol=0, atol=TOL)


def test_storage_round_trips_and_keeps_the_tie(pair):
    dense, sparse_net, _ = pair
    back = sparse_net.in_storage("dense")
    for a, b in zip(dense.layers, back.layers):
        np.testing.assert_array_equal(to_dense(a.weight), to_dense(b.weight))
        if a.tie is not None:  # the sparse tie scattered back is the dense one
            np.testing.assert_array_equal(a.tie.index, b.tie.index)
            np.testing.assert_allclose(a.tie.mult, b.tie.mult)
    for s in sparse_net.layers:
        if s.tie is not None:
            s.tie.check(s.entries, "sparse layer")


def test_forward_and_interval_bounds_agree(pair):
    dense, sparse_net, box = pair
    X = _points(box, 50)
    np.testing.assert_allclose(sparse_net.forward(X), dense.forward(X), rtol=0, atol=TOL)
    bounds = interval_bounds(sparse_net, box)
    assert_bounds_equal(bounds, interval_bounds(dense, box))
    assert bounds.contains(sparse_net, X)


def test_tightened_bounds_agree(pair):
    dense, sparse_net, box = pair
    for method in ("lp", "milp"):
        assert_bounds_equal(
            tighten_bounds(sparse_net, input_bounds=box, method=method),
            tighten_bounds(dense, input_bounds=box, method=method),
        )


@pytest.mark.parametrize("formulation", ["bigm", "partition"])
def test_fixed_inputs_reproduce_onnxruntime_and_optima_agree(pair, formulation, tmp_path):
    dense, sparse_net, box = pair
    path = tmp_path / "net.onnx"
    write_onnx(sparse_net, path, dtype="float64")  # the sparse layers written as dense Gemm
    for x in _points(box, 3):
        m = pyo.ConcreteModel()
        m.nn = NNBlock(sparse_net, input_bounds=box, formulation=formulation)
        for i, v in enumerate(x):
            m.nn.inputs[i].fix(float(v))
        m.obj = pyo.Objective(expr=m.nn.outputs[0])
        solve_optimal(m)
        expected = run_onnxruntime(path, x[None])[0]
        np.testing.assert_allclose(m.nn.output_values(), expected, rtol=0, atol=1e-6)
    optima = []
    for net in (dense, sparse_net):
        m = pyo.ConcreteModel()
        m.nn = NNBlock(net, input_bounds=box, formulation=formulation)
        m.obj = pyo.Objective(expr=m.nn.outputs[0])
        solve_optimal(m, mip_rel_gap=0.0)
        optima.append(pyo.value(m.obj))
    assert optima[0] == pytest.approx(optima[1], abs=1e-6)


@pytest.mark.parametrize("lp_backend", ["highs", "pyomo"])
def test_lp_relaxation_and_its_gradient_pieces_agree(pair, lp_backend):
    dense, sparse_net, box = pair
    X = _points(box, 4)
    w = np.ones(dense.n_outputs)
    a = solve_relaxations(dense, interval_bounds(dense, box), X, w, lp_backend=lp_backend)
    b = solve_relaxations(sparse_net, interval_bounds(sparse_net, box), X, w, lp_backend=lp_backend)
    np.testing.assert_allclose(a.value, b.value, rtol=0, atol=1e-7)
    for x, y in zip(
        a.affine_duals + a.lower_grad + a.upper_grad, b.affine_duals + b.lower_grad + b.upper_grad
    ):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def test_backprop_ibp_and_dual_gradients_agree_with_the_dense_ones(pair):
    dense, sparse_net, box = pair
    X = _points(box, 6)
    seed = np.random.default_rng(2).normal(size=(len(X), dense.n_outputs))
    pairs = []
    for net in (dense, sparse_net):
        _, inputs, pre = forward_cache(net.layers, X)
        trace = ibp_forward(net.layers, box.lower, box.upper)
        rng = np.random.default_rng(3)
        seeds_lo = [rng.normal(size=l.n_out) for l in net.layers]
        seeds_hi = [rng.normal(size=l.n_out) for l in net.layers]
        bound = dual_forward(
            net.layers,
            trace.lower,
            trace.upper,
            X,
            np.ones(net.n_outputs),
            [None] * len(net.layers),
        )
        pairs.append(
            (
                backward(net.layers, inputs, pre, seed),
                ibp_backward(net.layers, trace, seeds_lo, seeds_hi),
                dual_backward(net.layers, bound, 1.0).params,
                bound.value,
            )
        )
    np.testing.assert_allclose(pairs[0][3], pairs[1][3], rtol=0, atol=TOL)
    for grads_dense, grads_sparse in zip(pairs[0][:3], pairs[1][:3]):
        for layer, (wd, bd), (ws, bs) in zip(sparse_net.layers, grads_dense, grads_sparse):
            assert ws.shape == layer.entries.shape
            np.testing.assert_allclose(ws, _gathered(layer, wd), rtol=0, atol=TOL)
            np.testing.assert_allclose(bs, bd, rtol=0, atol=TOL)


REGULARIZERS = {
    "bw": BoundWidth,
    "sn": StableNeuron,
    "rs": ReLUStability,
    "l1": L1,
    "l2": L2,
    "lp_exact": lambda: LPGap(gap_method="exact_lp", samples=None, exact_bounds=True),
    "lp_dual": lambda: LPGap(samples=None, exact_bounds=True),
}


@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_sparse_regularizer_gradients_pass_central_differences(pair, name):
    _, sparse_net, box = pair
    X = _points(box, 5, seed=1)
    layers = sparse_net.layers

    def value(ls):
        return REGULARIZERS[name]().value_and_grad(reg_context(ls, box, X))[0]

    grads = REGULARIZERS[name]().value_and_grad(reg_context(layers, box, X))[1]
    assert_gradient(value, layers, grads, rtol=1e-4)


@pytest.mark.parametrize("name", ["mixed", "cnn"])
def test_training_is_the_same_in_both_storages(name):
    """Where the sparse pattern holds every trainable entry (no zeros, or zeros a tie fixes:
    a dense layer's free zeros are trainable, a sparse pattern's missing entries are not)."""
    net = NETWORKS[name]()
    box = InputBox(lower=np.full(net.n_inputs, -1.0), upper=np.full(net.n_inputs, 1.0))
    dense, sparse_net = net.in_storage("dense"), net.in_storage("sparse")
    X = _points(box, 96, seed=5)
    y = np.sin(X.sum(axis=1))
    results = []
    for net in (dense, sparse_net):
        trainer = Trainer(
            net, X, np.tile(y[:, None], (1, net.n_outputs)), input_bounds=box,
            regularizer=BoundWidth() + LPGap(exact_bounds=True), lam=1e-2, epochs=2,
            batch_size=32, seed=0,
        )  # fmt: skip
        results.append(trainer.fit())
    for a, b in zip(results[0].history, results[1].history):
        assert a.train_loss == pytest.approx(b.train_loss, abs=TOL)
    trained = results[1].network
    assert all(layer.is_sparse for layer in trained.layers)
    np.testing.assert_allclose(trained.forward(X), results[0].network.forward(X), rtol=0, atol=1e-8)


def test_a_sparse_layers_memory_grows_with_its_entries():
    """A banded 20,000 x 20,000 layer (60,000 entries; dense it would take 3.2 GB): forward
    passes, interval bounds and gradients stay within a few MB."""
    n = 20_000
    band = sparse.diags(
        [np.full(n - 1, 0.5), np.ones(n), np.full(n - 1, -0.5)], [-1, 0, 1], format="csr"
    )
    net = Network(
        (Layer(band, np.zeros(n), "relu"), Layer(sparse.eye(1, n, format="csr"), [0.0], "linear"))
    )
    X = np.random.default_rng(0).uniform(-1, 1, (8, n))
    tracemalloc.start()
    try:
        net.forward(X)
        box = InputBox(lower=-np.ones(n), upper=np.ones(n))
        bounds = interval_bounds(net, box)
        BoundWidth().value_and_grad(reg_context(net.layers, box, X[:2]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert bounds.upper[0][1] == pytest.approx(2.0)
    assert peak < 50e6, f"peak {peak / 1e6:.1f} MB"
