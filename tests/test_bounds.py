"""Pre-activation bounds: interval propagation contains every reachable value, is exact on
the first layer, and the per-layer statistics match counts worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Layer, Network, NetworkBounds, interval_bounds
from pyomo_nnrelax.bounds import big_m_summary, ibp_forward, is_unstable, layer_statistics
from pyomo_nnrelax.errors import InvalidNetworkError

RANDOM_SHAPES = [[2, 8, 1], [3, 10, 10, 2], [4, 6, 6, 6, 3], [5, 12, 9, 7, 5, 1]]


@pytest.mark.parametrize("sizes", RANDOM_SHAPES)
def test_interval_bounds_contain_every_sampled_pre_activation(sizes):
    net = Network.mlp(sizes, seed=5)
    box = InputBox(-np.ones(sizes[0]), 2 * np.ones(sizes[0]))
    bounds = interval_bounds(net, box)
    X = np.vstack([box.sample(20000, np.random.default_rng(0)), box.lower, box.upper])
    assert bounds.contains(net, X, tol=0.0)


def test_first_layer_bounds_are_attained_at_box_vertices():
    net = Network.mlp([3, 5, 1], seed=1)
    box = InputBox([-1, 0, 2], [1, 3, 2.5])
    bounds = interval_bounds(net, box)
    corners = np.array(np.meshgrid(*zip(box.lower, box.upper))).reshape(3, -1).T
    z = net.pre_activations(corners)[0]
    np.testing.assert_allclose(bounds.lower[0], z.min(axis=0), atol=1e-12)
    np.testing.assert_allclose(bounds.upper[0], z.max(axis=0), atol=1e-12)


def hand_network() -> Network:
    """Over [-1, 1]^2: z0 = x0 + 2 in [1, 3], z1 = x1 - 3 in [-4, -2], z2 = x0 + x1 in [-2, 2],
    z3 = 2 x0 in [-2, 2]; the ReLUs feed a linear output 1'h in [0, 3 + 0 + 2 + 2]."""
    hidden = Layer(np.array([[1.0, 0], [0, 1], [1, 1], [2, 0]]), np.array([2.0, -3, 0, 0]))
    return Network((hidden, Layer(np.ones((1, 4)), np.zeros(1), "linear")))


def test_stability_counts_and_big_m_by_hand():
    net = hand_network()
    bounds = interval_bounds(net, [(-1, 1), (-1, 1)])
    np.testing.assert_allclose(bounds.lower[0], [1, -4, -2, -2])
    np.testing.assert_allclose(bounds.upper[0], [3, -2, 2, 2])
    np.testing.assert_allclose([bounds.lower[1][0], bounds.upper[1][0]], [1, 7])
    assert bounds.stability(0).tolist() == [1, -1, 0, 0]
    assert bounds.unstable_count(net) == 2
    first, out = layer_statistics(net, bounds)
    assert (first["unstable"], first["stable_active"], first["stable_inactive"]) == (2, 1, 1)
    assert (first["mean_big_m"], first["max_big_m"]) == (2.0, 2.0)
    assert out["unstable"] == 0 and out["activation"] == "linear"
    assert big_m_summary([first, out]) == (2, 2.0)


def test_a_bound_of_exactly_zero_is_stable():
    assert is_unstable(np.array([-1.0, 0.0, -1.0]), np.array([0.0, 1.0, 1.0])).tolist() == [
        False,
        False,
        True,
    ]


def test_ibp_trace_and_interval_bounds_agree_and_intersect_keeps_the_tighter():
    net = Network.mlp([2, 6, 6, 1], seed=3)
    box = InputBox([-1, -1], [1, 1])
    trace = ibp_forward(net.layers, *box)
    bounds = interval_bounds(net, box)
    for a, b in zip(trace.lower + trace.upper, bounds.lower + bounds.upper):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(trace.in_lower[1], np.maximum(bounds.lower[0], 0))
    shrunk = NetworkBounds(
        box.lower,
        box.upper,
        tuple(lo + 0.1 for lo in bounds.lower),
        tuple(hi + 0.1 for hi in bounds.upper),
        "lp",
    )
    both = bounds.intersect(shrunk)
    assert both.method == "lp"
    for lo, hi, a, b in zip(both.lower, both.upper, shrunk.lower, bounds.upper):
        np.testing.assert_array_equal(lo, a)
        np.testing.assert_array_equal(hi, b)
    assert bounds.input_box == box


def test_interval_bounds_that_overflow_raise_naming_the_layer():
    # regression (fuzzing): finite weights of 1e200 overflowed the second layer's bounds to
    # inf/NaN, and NNBlock failed inside Pyomo with a raw ValueError on an `inf*` coefficient
    layers = [
        Layer(np.full((2, 2), 1e200), np.zeros(2), "relu"),
        Layer(np.full((1, 2), 1e200), np.zeros(1), "linear"),
    ]
    net = Network(tuple(layers))

    with pytest.raises(InvalidNetworkError, match="layer 1 overflow"):
        interval_bounds(net, [(-1, 1), (-1, 1)])
    assert np.isfinite(interval_bounds(Network(tuple(layers[:1])), [(-1, 1)] * 2).upper[0]).all()
