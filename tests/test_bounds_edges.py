"""Edges of the bounds that the mutation run (``tools/mutation.py``) found unchecked: the box
interval bounds record, the mean big-M constant, and bounds reused over a smaller box."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Layer, Network, interval_bounds
from pyomo_nnrelax.bounds import bounds_on, ibp_forward
from pyomo_nnrelax.errors import InputBoundsError


def hand_network() -> Network:
    """z0 = x0 + 2, z1 = x1 - 3, z2 = x0 + x1, z3 = 2 x0 (ReLU), then a linear sum."""
    hidden = Layer(np.array([[1.0, 0], [0, 1], [1, 1], [2, 0]]), np.array([2.0, -3, 0, 0]))
    return Network((hidden, Layer(np.ones((1, 4)), np.zeros(1), "linear")))


def test_interval_bounds_record_the_box_they_were_computed_over():
    net = Network.mlp([2, 5, 3, 1], seed=0)
    box = InputBox([-1.0, 0.5], [2.0, 3.0])
    bounds = interval_bounds(net, box)
    assert bounds.input_box == box
    np.testing.assert_array_equal(bounds.input_lower, box.lower)
    np.testing.assert_array_equal(bounds.input_upper, box.upper)
    assert bounds.method == "interval"


def test_a_propagation_trace_gives_the_bounds_of_its_box():
    net = Network.mlp([2, 5, 3, 1], seed=0)
    box = InputBox([-1.0, 0.5], [2.0, 3.0])
    trace = ibp_forward(net.layers, box.lower, box.upper)
    bounds = trace.to_bounds()
    assert bounds.input_box == box and bounds.method == "interval"
    for l in range(len(net.layers)):
        np.testing.assert_array_equal(bounds.lower[l], trace.pre[l][0])
        np.testing.assert_array_equal(bounds.upper[l], trace.pre[l][1])


def test_mean_big_m_is_the_mean_of_max_minus_l_u_over_unstable_relus():
    net = hand_network()
    # over [-1, 1] x [-2, 1]: z2 in [-3, 2] (M = 3) and z3 in [-2, 2] (M = 2) are unstable
    assert interval_bounds(net, [(-1, 1), (-2, 1)]).mean_big_m(net) == 2.5
    assert interval_bounds(net, [(1, 1), (1, 1)]).mean_big_m(net) == 0.0  # none unstable


@pytest.fixture(scope="module")
def net() -> Network:
    return Network.mlp([2, 6, 4, 1], seed=3)


def test_bounds_over_their_own_box_are_used_as_they_are(net):
    bounds = interval_bounds(net, [(-2, 2), (-2, 2)])
    assert bounds_on(bounds, net, InputBox([-2, -2], [2, 2])) is bounds


def test_bounds_over_a_covering_box_are_tightened_over_the_smaller_one(net):
    wide = dataclasses.replace(interval_bounds(net, [(-2, 2), (-2, 2)]), method="lp")
    box = InputBox([-1.0, 0.0], [0.5, 0.5])
    narrow = interval_bounds(net, box)
    used = bounds_on(wide, net, box)
    assert used.input_box == box
    assert used.method == "lp"  # the method of the bounds that were reused
    for l in range(len(net.layers)):
        np.testing.assert_array_equal(used.lower[l], np.maximum(wide.lower[l], narrow.lower[l]))
        np.testing.assert_array_equal(used.upper[l], np.minimum(wide.upper[l], narrow.upper[l]))
    assert any(np.any(used.upper[l] < wide.upper[l]) for l in range(len(net.layers)))
    assert used.contains(net, box.sample(500, np.random.default_rng(0)), tol=0.0)


def test_bounds_are_refused_over_a_box_they_do_not_cover(net):
    narrow = interval_bounds(net, [(-1, 1), (-1, 1)])
    with pytest.raises(InputBoundsError, match=r"not valid over .*\[1\.0, 1\.5\].* do not cover"):
        bounds_on(narrow, net, InputBox([-1.0, -1.0], [1.0, 1.5]))
