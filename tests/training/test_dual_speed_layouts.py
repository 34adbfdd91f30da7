"""The layouts the fast training step relies on: every neuron side by side
(``NeuronLayout``), one bound per sample handled like the same bound row by row, and the
slope store keeping a row per training sample (its checkpoint format)."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import Layer, Network
from pyomo_nnrelax.bounds import neuron_stability
from pyomo_nnrelax.box import InputBox
from pyomo_nnrelax.training import ibp_forward
from pyomo_nnrelax.training.dual import (
    SlopeLayout,
    SlopeStore,
    dual_backward,
    dual_bound,
    dual_forward,
    dual_plan,
)
from pyomo_nnrelax.training.ibp import NeuronLayout
from pyomo_nnrelax.training.optim import SlopeAdam

BOX = InputBox(lower=[-1.0, -0.5], upper=[1.0, 1.5])


def _mixed_network() -> Network:
    """An MLP whose middle layer has linear neurons among its ReLUs."""
    layers = list(Network.mlp([2, 5, 4, 2], seed=3).layers)
    middle = layers[1]
    layers[1] = Layer(middle.weight, middle.bias, np.array([True, False, True, False]))
    return Network(layers)


def test_an_mlp_has_its_relu_neurons_in_one_slice():
    neurons = NeuronLayout.of(Network.mlp([2, 5, 4, 3], seed=0).layers)
    assert neurons.spans == (slice(0, 5), slice(5, 9), slice(9, 12))
    assert neurons.size == 12 and neurons.kind == "mixed"
    assert neurons.hidden == slice(0, 9)
    assert SlopeLayout.of(Network.mlp([2, 5, 4, 3], seed=0).layers).neurons == slice(5, 9)


def test_the_layout_classifies_every_neuron_like_its_own_layer():
    net = _mixed_network()
    neurons = NeuronLayout.of(net.layers)
    assert np.array_equal(neurons.hidden, [0, 1, 2, 3, 4, 5, 7])
    trace = ibp_forward(net.layers, *BOX)
    each = [neuron_stability(*args) for args in zip(net.layers, trace.lower, trace.upper)]
    lower, upper = np.concatenate(trace.lower), np.concatenate(trace.upper)
    assert np.array_equal(neuron_stability(neurons, lower, upper), np.concatenate(each))


@pytest.mark.parametrize("mixed", [False, True])
def test_per_sample_bounds_give_each_row_its_own_bound(mixed):
    """Bounds with a row per input (the balls) give, row by row, the value, the bounds'
    derivatives and (summed) the weights' derivatives of the same pass with that row's bounds
    shared."""
    net = _mixed_network() if mixed else Network.mlp([2, 6, 5, 2], seed=1)
    rng = np.random.default_rng(0)
    X = rng.uniform(BOX.lower, BOX.upper, size=(4, 2))
    balls = ibp_forward(net.layers, np.maximum(X - 0.3, BOX.lower), np.minimum(X + 0.3, BOX.upper))
    bounds = np.concatenate(balls.pre, axis=-1)  # (2, n, N)
    layout = SlopeLayout.of(net.layers)
    alpha = rng.random((layout.width, len(X)))
    c = np.array([0.3, 0.7])
    together = dual_bound(net.layers, dual_plan(net.layers, bounds, X), c, alpha)
    grads = dual_backward(net.layers, together, 1.0)
    params = None
    for i in range(len(X)):
        plan = dual_plan(net.layers, bounds[:, i], X[i : i + 1])
        alone = dual_bound(net.layers, plan, c, alpha[:, i : i + 1])
        np.testing.assert_allclose(together.value[i], alone.value[0], rtol=1e-12, atol=1e-12)
        row = dual_backward(net.layers, alone, 1.0)
        for mine, theirs in zip(grads.lower + grads.upper, row.lower + row.upper):
            np.testing.assert_allclose(mine[i], theirs, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grads.slope_rows[:, i], row.slope_rows[:, 0], atol=1e-12)
        summed = [w for pair in row.params for w in pair]
        params = summed if params is None else [a + b for a, b in zip(params, summed)]
    for mine, theirs in zip([w for pair in grads.params for w in pair], params):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-12)


def test_packed_slopes_are_the_per_layer_slopes():
    """Slopes given per layer (None: the heuristic start) sit in the rows of their layer."""
    net = Network.mlp([2, 6, 5, 4, 1], seed=2)
    trace = ibp_forward(net.layers, *BOX)
    X = np.random.default_rng(1).uniform(BOX.lower, BOX.upper, size=(3, 2))
    per_layer = [None, np.random.default_rng(2).random((3, 5)), None, None]
    bound = dual_forward(net.layers, trace.lower, trace.upper, X, np.ones(1), per_layer)
    alpha = bound.plan.pack(per_layer)
    assert alpha.shape == (9, 3) and np.array_equal(alpha[:5].T, per_layer[1])
    assert np.array_equal(alpha[5:].T, np.broadcast_to(bound.plan.start_slopes()[5:], (3, 4)))
    again = dual_bound(net.layers, bound.plan, np.ones(1), alpha)
    assert np.array_equal(again.value, bound.value)


def test_the_slope_store_keeps_a_row_per_sample():
    """``arrays`` (what a checkpoint saves) has a row per training sample: slopes, moments,
    step count; a store read back from it continues where the first one was."""
    layout = SlopeLayout.of(Network.mlp([2, 3, 4, 1], seed=0).layers)
    store = SlopeStore()
    rows = np.array([4, 1])
    slopes, unseen = store.read(layout, rows)
    assert unseen.all() and slopes.alpha.shape == (2, 4)
    slopes.reset(unseen, np.array([1.0, 0.0, 1.0, 0.0]))
    descent = np.arange(8.0).reshape(4, 2) - 3.0
    slopes.step(SlopeAdam(0.1), descent)
    store.write(rows, slopes)
    packed = store.arrays()["packed"]
    assert packed.shape == (5, 3 * 4 + 1)
    assert np.array_equal(packed[rows, :4], slopes.alpha)
    assert np.array_equal(packed[rows, 4:8], slopes.m) and np.array_equal(packed[rows, -1], [1, 1])
    assert np.array_equal(slopes.m, -(1.0 - 0.9) * descent.T)  # the ascent direction's moment
    again, unseen = SlopeStore.from_arrays(store.arrays()).read(layout, rows)
    assert not unseen.any() and np.array_equal(again.packed, slopes.packed)
