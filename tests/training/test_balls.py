"""Bound regularizers over each sample's eps-ball (Xiao et al. 2019): the bounds of every
mini-batch sample's L-infinity ball, clipped to the box, propagated at once; values against
one interval propagation per ball, gradients against central differences, on dense and
sparse layers."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Network, interval_bounds
from pyomo_nnrelax.training import (
    BoundWidth,
    LPGap,
    ReLUStability,
    StableNeuron,
    Trainer,
    parse_regularizer,
)
from tests.support.gradients import assert_gradient, reg_context

BOX = InputBox(lower=[0.0, 0.0, 0.0], upper=[1.0, 1.0, 1.0])
EPS = 0.15
X = np.array([[0.05, 0.5, 0.9], [0.5, 0.5, 0.5], [0.99, 0.2, 0.3], [0.3, 0.7, 0.1]])


@pytest.fixture(params=["dense", "sparse"])
def net(request) -> Network:
    return Network.mlp([3, 6, 5, 2], seed=2).in_storage(request.param)


def _per_ball(net: Network, regularizer) -> float:
    """The penalty computed ball by ball: one interval propagation per clipped ball."""
    values = []
    for x in X:
        box = InputBox(np.clip(x - EPS, 0, 1), np.clip(x + EPS, 0, 1))
        single = type(regularizer)()  # the same penalty over this one box
        values.append(single.value_and_grad(reg_context(net.layers, box, x[None]))[0])
    return float(np.mean(values))


@pytest.mark.parametrize("penalty", [BoundWidth, StableNeuron, ReLUStability])
def test_a_ball_penalty_is_the_mean_over_the_samples_balls(net, penalty):
    value, _ = penalty(ball=EPS).value_and_grad(reg_context(net.layers, BOX, X))
    assert value == pytest.approx(_per_ball(net, penalty()), rel=1e-12)
    whole_box, _ = penalty().value_and_grad(reg_context(net.layers, BOX, X))
    assert value != pytest.approx(whole_box)  # the balls are not the box


def test_balls_are_clipped_to_the_box_and_tighter_than_it(net):
    ctx = reg_context(net.layers, BOX, X)
    trace = ctx.ball_ibp(EPS)
    np.testing.assert_array_equal(trace.inputs[0][0], np.clip(X - EPS, 0, 1))
    np.testing.assert_array_equal(trace.inputs[0][1], np.clip(X + EPS, 0, 1))
    box = interval_bounds(net, BOX)
    for l, (lo, hi) in enumerate(zip(trace.lower, trace.upper)):
        assert np.all(lo >= box.lower[l] - 1e-12) and np.all(hi <= box.upper[l] + 1e-12)
        assert lo.shape == (len(X), net.layers[l].n_out)
    assert ctx.ball_ibp(EPS) is trace  # computed once per step


REGULARIZERS = {
    "bw": lambda: BoundWidth(ball=EPS),
    "sn": lambda: StableNeuron(ball=EPS),
    "rs": lambda: ReLUStability(ball=EPS),
    "lp_dual": lambda: LPGap(ball=EPS, samples=None, exact_bounds=True),
    "lp_dual_subsample": lambda: LPGap(ball=EPS, samples=2, exact_bounds=True),
}


@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_ball_gradients_pass_central_differences(net, name):
    def value(layers):
        return REGULARIZERS[name]().value_and_grad(reg_context(layers, BOX, X, seed=4))[0]

    grads = REGULARIZERS[name]().value_and_grad(reg_context(net.layers, BOX, X, seed=4))[1]
    assert_gradient(value, net.layers, grads, rtol=1e-4)


def test_the_dual_bound_over_balls_is_at_most_the_network():
    """Each sample's dual-network bound over its own ball is a valid lower bound on the
    network at that sample: the gap is never negative."""
    net = Network.mlp([3, 8, 8, 1], seed=5)
    gap = LPGap(ball=EPS, samples=None)
    value, _ = gap.value_and_grad(reg_context(net.layers, BOX, X))
    assert value >= -1e-12


def test_ball_needs_the_dual_network_and_a_positive_radius():
    with pytest.raises(ValueError, match="ball= needs gap_method='dual_network'"):
        LPGap(gap_method="exact_lp", ball=0.1)
    with pytest.raises(ValueError, match="ball must be a finite number > 0"):
        ReLUStability(ball=0.0)


def test_specs_take_the_ball_and_training_runs_on_it():
    reg = parse_regularizer("rs+0.5*bw+lp", ball=0.1)
    assert repr(reg).count("ball=0.1") == 3
    rng = np.random.default_rng(0)
    Xt = rng.uniform(0, 1, (64, 3))
    trainer = Trainer(
        Network.mlp([3, 6, 1], seed=0), Xt, Xt.sum(axis=1), input_bounds=BOX,
        regularizer=ReLUStability(ball=0.1), lam=0.1, epochs=2, batch_size=16,
    )  # fmt: skip
    history = trainer.fit().history
    assert all(np.isfinite(e.regularizer) and e.regularizer < 0 for e in history)
