"""Training convolutional and residual networks read from ONNX through their weight ties:
the gradient with respect to the shared parameters matches central differences for the loss
and every regularizer, and training keeps the kernels shared."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from pyomo_nnrelax import InputBox, Network
from pyomo_nnrelax.network import forward_cache
from pyomo_nnrelax.onnx import read_onnx
from pyomo_nnrelax.training import (
    L1,
    L2,
    BoundWidth,
    LPGap,
    RegContext,
    ReLUStability,
    StableNeuron,
    Trainer,
    ibp_forward,
)
from pyomo_nnrelax.training.backprop import backward
from pyomo_nnrelax.training.parameters import parameter_grads, parameters, with_parameters

RNG = np.random.default_rng(11)


def cnn(make_onnx_model) -> Network:
    """Conv(1->2, 3x3, pad 1, stride 2) - Relu - Conv(2->2, 2x2) - LeakyRelu - Flatten - Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "k1", "c1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "k2", "c2"], ["b"]),
        helper.make_node("LeakyRelu", ["b"], ["s"], alpha=0.2),
        helper.make_node("Flatten", ["s"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w", "c"], ["y"], transB=1),
    ]
    inits = {
        "k1": RNG.normal(size=(2, 1, 3, 3)),
        "c1": RNG.normal(0, 0.3, 2),
        "k2": RNG.normal(size=(2, 2, 2, 2)) / 2,
        "c2": RNG.normal(0, 0.3, 2),
        "w": RNG.normal(size=(1, 2)),
        "c": np.array([0.1]),
    }
    return read_onnx(make_onnx_model(nodes, inits, input_shape=(1, 4, 4)))


def residual(make_onnx_model) -> Network:
    """relu(W0 x) -> h + relu(W1 h) -> W2 (.)."""
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "b0"], ["z"], transB=1),
        helper.make_node("Relu", ["z"], ["h"]),
        helper.make_node("Gemm", ["h", "w1", "b1"], ["u"], transB=1),
        helper.make_node("Relu", ["u"], ["v"]),
        helper.make_node("Add", ["h", "v"], ["s"]),
        helper.make_node("Gemm", ["s", "w2", "b2"], ["y"], transB=1),
    ]
    inits = {
        "w0": RNG.normal(size=(4, 3)),
        "b0": RNG.normal(0, 0.3, 4),
        "w1": RNG.normal(size=(4, 4)) / 2,
        "b1": RNG.normal(0, 0.3, 4),
        "w2": RNG.normal(size=(1, 4)),
        "b2": np.zeros(1),
    }
    return read_onnx(make_onnx_model(nodes, inits))


NETWORKS = {"cnn": cnn, "residual": residual}


def box(net: Network) -> InputBox:
    return InputBox(lower=-np.ones(net.n_inputs), upper=np.ones(net.n_inputs))


def flat(params) -> np.ndarray:
    return np.concatenate([p.ravel() for p in params])


def unflat(layers, theta: np.ndarray):
    out, i = [], 0
    for p in parameters(layers):
        out.append(theta[i : i + p.size].reshape(p.shape))
        i += p.size
    return with_parameters(layers, out)


def assert_parameter_gradient(value, layers, grads, eps=1e-6, atol=2e-5, kinks=False):
    """Finite differences of ``value(layers)`` over the tied parameters and biases.

    With ``kinks``, entries whose one-sided differences disagree are skipped (the value has
    a kink there: an LP whose solution sits on a bound that a carried copy makes exact, so
    no derivative exists), and at least 80% of the entries must be checked.
    """
    theta = flat(parameters(layers))
    v0 = value(layers)
    up, down = np.empty_like(theta), np.empty_like(theta)
    for k in range(theta.size):
        step = np.zeros_like(theta)
        step[k] = eps
        up[k] = (value(unflat(layers, theta + step)) - v0) / eps
        down[k] = (v0 - value(unflat(layers, theta - step))) / eps
    numeric = (up + down) / 2
    analytic = flat(parameter_grads(layers, grads))
    scale = max(1.0, np.abs(numeric).max())
    smooth = np.abs(up - down) <= 1e-3 * scale if kinks else np.ones(theta.size, bool)
    assert smooth.mean() >= 0.8, f"only {smooth.sum()} of {smooth.size} entries are smooth"
    np.testing.assert_allclose(analytic[smooth], numeric[smooth], rtol=0, atol=atol * scale)
    assert np.abs(numeric).max() > 1e-3, "the check is vacuous: the gradient is zero"


@pytest.mark.parametrize("name", NETWORKS)
def test_the_networks_are_tied_and_have_mixed_layers(make_onnx_model, name):
    net = NETWORKS[name](make_onnx_model)
    assert any(
        layer.tie is not None and layer.tie.n_params < layer.weight.size for layer in net.layers
    )
    assert any(layer.kind == "mixed" for layer in net.layers)


@pytest.mark.parametrize("name", NETWORKS)
def test_the_loss_gradient_with_respect_to_shared_parameters(make_onnx_model, name):
    layers = NETWORKS[name](make_onnx_model).layers
    X = RNG.uniform(-1, 1, size=(9, layers[0].n_in))

    def value(ls):
        return float(forward_cache(ls, X)[0].sum())

    _, inputs, pre = forward_cache(layers, X)
    grads = backward(layers, inputs, pre, np.ones((9, 1)))
    assert_parameter_gradient(value, layers, grads)


REGULARIZERS = {
    "L1": L1(),
    "L2": L2(),
    "BW": BoundWidth(),
    "SN": StableNeuron(),
    "RS": ReLUStability(),
    "LP": LPGap(samples=3, gap_method="exact_lp"),
    "LP dual": LPGap(samples=3, gap_method="dual_network"),
}


@pytest.mark.parametrize("reg", REGULARIZERS)
@pytest.mark.parametrize("name", NETWORKS)
def test_regularizer_gradients_with_respect_to_shared_parameters(make_onnx_model, name, reg):
    net = NETWORKS[name](make_onnx_model)
    layers, domain, regularizer = net.layers, box(net), REGULARIZERS[reg]
    X = RNG.uniform(-0.5, 0.5, size=(5, net.n_inputs))
    # the LP gap's gradient holds the bounds fixed (its default); the bound penalties' do not.
    # Bounds over a larger box: exact ones (a carried copy's) would make the LP degenerate
    # at X, where it has one-sided derivatives only.
    wide = ibp_forward(layers, 2 * domain.lower, 2 * domain.upper)
    fixed = {"_ibp": wide} if "LP" in reg else {}

    def ctx(ls):
        rng = np.random.default_rng(0)
        return RegContext(tuple(ls), domain.lower, domain.upper, X, rng, **fixed)

    grads = regularizer.value_and_grad(ctx(layers))[1]
    value = lambda ls: regularizer.value_and_grad(ctx(ls))[0]  # noqa: E731
    assert_parameter_gradient(value, layers, grads, kinks=reg == "LP")


@pytest.mark.parametrize("name", NETWORKS)
def test_training_with_bw_lp_keeps_every_tie_and_lowers_the_loss(make_onnx_model, name):
    net = NETWORKS[name](make_onnx_model)
    X = RNG.uniform(-1, 1, size=(200, net.n_inputs))
    y = np.sin(3 * X.sum(axis=1))
    trainer = Trainer(
        net,
        X,
        y,
        epochs=20,
        lr=1e-2,
        seed=0,
        input_bounds=box(net),
        regularizer=BoundWidth() + LPGap(samples=4, gap_method="dual_network"),
        lam=1e-3,
    )
    before = trainer.held_out_loss(net)
    trained = trainer.fit().network
    assert trainer.held_out_loss(trained) < before
    for old, new in zip(net.layers, trained.layers):
        assert (new.tie is None) == (old.tie is None)
        if old.tie is not None:
            np.testing.assert_array_equal(new.tie.index, old.tie.index)
            np.testing.assert_allclose(new.tie.mult, old.tie.mult, rtol=1e-12)
            fixed = old.tie.index < 0
            np.testing.assert_array_equal(new.weight[fixed], old.weight[fixed])
            assert not np.array_equal(new.weight[~fixed], old.weight[~fixed])
