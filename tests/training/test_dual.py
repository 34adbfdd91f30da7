"""The dual-network bound on the LP relaxation at fixed inputs (``LPGap``'s default):
valid against the exact LP (``lp/projected.py``), equal to it at the LP's own slopes, with
gradients checked against the LP's duals and central differences, and training that closes
the exactly measured LP gap like ``gap_method="exact_lp"`` does."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import Layer, Network, interval_bounds
from pyomo_nnrelax.bounds import neuron_stability
from pyomo_nnrelax.box import InputBox
from pyomo_nnrelax.lp.projected import solve_batch
from pyomo_nnrelax.training import LPGap, RegContext, Trainer, ibp_forward
from pyomo_nnrelax.training.dual import (
    dual_backward,
    dual_forward,
    heuristic_slopes,
)

BOX = InputBox(lower=[-1.0, -0.5], upper=[1.0, 1.5])


def _random_case(seed: int):
    """A random MLP (1-3 hidden layers, 1-3 outputs), its IBP trace, points in the box and a
    random non-negative objective."""
    rng = np.random.default_rng(seed)
    depth, width, n_out = int(rng.integers(1, 4)), int(rng.integers(3, 9)), int(rng.integers(1, 4))
    net = Network.mlp([2] + [width] * depth + [n_out], seed=seed).with_input_bounds(*BOX)
    trace = ibp_forward(net.layers, *BOX)
    X = rng.uniform(BOX.lower, BOX.upper, size=(6, 2))
    c = rng.random(n_out)
    return net, trace, X, c / c.sum(), rng


def _exact(net, trace, X, c, sense):
    batch = solve_batch(net, trace.to_bounds(), X, np.broadcast_to(c, (len(X), c.size)), sense)
    assert batch.ok.all()
    return batch


def _bound(net, trace, X, c, sense, slopes):
    """The bound on the LP value in the LP's own sense (``-B(-c)`` for a maximum)."""
    sign = 1.0 if sense == "min" else -1.0
    return sign * dual_forward(net.layers, trace.lower, trace.upper, X, sign * c, slopes).value


def _random_slopes(net, n, rng):
    return [
        None if l == 0 or layer.activation != "relu" else rng.random((n, layer.n_out))
        for l, layer in enumerate(net.layers)
    ]


def _slopes_from_lp(net, batch, c):
    """Lower slopes read off the LP's duals: ``alpha_j = mu_j / lam_j`` with ``mu = dV/db`` and
    ``lam = W' mu_next`` (the LP's own choice of line, docs/method.md section 4)."""
    slopes = [None] * len(net.layers)
    for l in range(1, len(net.layers)):
        if net.layers[l].activation != "relu":
            continue
        nu = batch.affine_duals[l]
        if l + 1 < len(net.layers):
            lam = batch.affine_duals[l + 1] @ net.layers[l + 1].weight
        else:
            lam = np.broadcast_to(c, nu.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            slopes[l] = np.where(np.abs(lam) > 1e-12, np.clip(nu / lam, 0.0, 1.0), 0.5)
    return slopes


@pytest.mark.parametrize("seed", range(25))
def test_bound_is_valid_for_any_slopes(seed):
    net, trace, X, c, rng = _random_case(seed)
    for sense in ("min", "max"):
        value = _exact(net, trace, X, c, sense).value
        for slopes in (_random_slopes(net, len(X), rng), [None] * len(net.layers)):
            bound = _bound(net, trace, X, c, sense, slopes)
            if sense == "min":
                assert np.all(bound <= value + 1e-9)
            else:
                assert np.all(bound >= value - 1e-9)


def test_bounds_are_loose_at_some_random_slopes():
    """The validity check is not vacuous: random slopes leave a visible slack somewhere."""
    slack = 0.0
    for seed in range(10):
        net, trace, X, c, rng = _random_case(seed)
        value = _exact(net, trace, X, c, "min").value
        bound = _bound(net, trace, X, c, "min", _random_slopes(net, len(X), rng))
        slack = max(slack, float(np.max(value - bound)))
    assert slack > 1e-2


@pytest.mark.parametrize("seed", range(15))
def test_bound_equals_the_lp_at_the_lps_slopes(seed):
    net, trace, X, c, _ = _random_case(seed)
    for sense in ("min", "max"):
        batch = _exact(net, trace, X, c, sense)
        bound = _bound(net, trace, X, c, sense, _slopes_from_lp(net, batch, c))
        np.testing.assert_allclose(bound, batch.value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_gradient_at_the_lps_slopes_matches_the_lp_duals(seed):
    """At the LP's slopes, the reverse pass gives the envelope gradient of the LP value:
    ``dV/db = nu``, ``dV/dW = nu h*'``, ``dV/dL``, ``dV/dU`` (docs/method.md, section 3); its
    adjoint of ``lam^l`` is the LP's primal ``h^l``.  Samples where an unstable neuron has a
    zero coefficient (``lam_j = 0`` up to rounding) are left out: there the optimal primal is
    not unique (the neuron's output may sit anywhere in its interval), and ``V`` has a kink."""
    net, trace, X, c, _ = _random_case(seed)
    checked = 0
    for sense in ("min", "max"):
        sign = 1.0 if sense == "min" else -1.0
        batch = _exact(net, trace, X, c, sense)
        slopes = _slopes_from_lp(net, batch, c)
        fwd = dual_forward(net.layers, trace.lower, trace.upper, X, sign * c, slopes)
        unique = np.ones(len(X), dtype=bool)
        for l, layer in enumerate(net.layers[:-1]):
            unstable = neuron_stability(layer, trace.lower[l], trace.upper[l]) == 0
            unique &= ~np.any(unstable & (np.abs(fwd.lam[l]) < 1e-9), axis=1)
        grads = dual_backward(net.layers, fwd, sign * unique)
        for l, (d_w, d_b) in enumerate(grads.params):
            nu, h = batch.affine_duals[l][unique], batch.activations[l][unique]
            np.testing.assert_allclose(d_b, nu.sum(axis=0), atol=1e-6)
            np.testing.assert_allclose(d_w, nu.T @ h, atol=1e-6)
            for mine, lp in ((grads.lower, batch.lower_grad), (grads.upper, batch.upper_grad)):
                np.testing.assert_allclose(mine[l], lp[l][unique].sum(axis=0), atol=1e-6)
            if l + 1 < len(net.layers):
                primal = sign * grads.primal[l][unique]
                np.testing.assert_allclose(primal, batch.activations[l + 1][unique], atol=1e-6)
        checked += int(unique.sum())
    assert checked >= 2


def _perturbed(layers, l, which, index, eps):
    layer = layers[l]
    weight, bias = layer.weight.copy(), layer.bias.copy()
    (weight if which == "W" else bias)[index] += eps
    return tuple(Layer(weight, bias, L.activation) if k == l else L for k, L in enumerate(layers))


@pytest.mark.parametrize("seed", [1, 3, 6])
def test_reverse_pass_against_central_differences(seed):
    """Every derivative of the reverse pass (weights, biases, bounds, slopes) at fixed slopes."""
    net, trace, X, c, rng = _random_case(seed)
    layers, lower, upper = net.layers, trace.lower, trace.upper
    slopes = _random_slopes(net, len(X), rng)
    seed_rows = rng.normal(size=len(X))

    def value(ls=layers, lo=lower, hi=upper, al=slopes):
        return float(seed_rows @ dual_forward(ls, lo, hi, X, c, al).value)

    grads = dual_backward(layers, dual_forward(layers, lower, upper, X, c, slopes), seed_rows)
    eps, checked = 1e-6, 0.0
    for l, layer in enumerate(layers):
        for which, shape, analytic in (
            ("W", layer.weight.shape, grads.params[l][0]),
            ("b", layer.bias.shape, grads.params[l][1]),
        ):
            for index in np.ndindex(shape):
                up = value(_perturbed(layers, l, which, index, eps))
                down = value(_perturbed(layers, l, which, index, -eps))
                assert analytic[index] == pytest.approx((up - down) / (2 * eps), abs=1e-6)
                checked = max(checked, abs(analytic[index]))
        for bounds, analytic, name in (
            (lower, grads.lower[l], "lo"),
            (upper, grads.upper[l], "hi"),
        ):
            for j in range(layer.n_out):
                moved = [b.copy() for b in bounds]
                moved[l][j] += eps
                up = value(**{name: moved})
                moved[l][j] -= 2 * eps
                down = value(**{name: moved})
                assert analytic[j] == pytest.approx((up - down) / (2 * eps), abs=1e-6)
        if slopes[l] is not None:
            for index in np.ndindex(slopes[l].shape):
                moved = [None if a is None else a.copy() for a in slopes]
                moved[l][index] += eps
                up = value(al=moved)
                moved[l][index] -= 2 * eps
                down = value(al=moved)
                assert grads.slopes[l][index] == pytest.approx((up - down) / (2 * eps), abs=1e-6)
    assert checked > 1e-3


def _ctx(layers, X, rows=None, seed=0, **kwargs) -> RegContext:
    return RegContext(tuple(layers), *BOX, X, np.random.default_rng(seed), rows=rows, **kwargs)


@pytest.mark.parametrize(
    "sense, exact_bounds", [("min", False), ("max", False), ("both", False), ("min", True)]
)
def test_lpgap_dual_gradient_against_central_differences(sense, exact_bounds):
    """``LPGap(gap_method="dual_network")`` without stored slopes is a function of the weights (the
    heuristic slopes, piecewise constant in L, U); its gradient passes central differences,
    with L, U held fixed or (``exact_bounds``) through the IBP reverse pass."""
    layers = Network.mlp([2, 6, 6, 2], seed=4).layers
    X = np.random.default_rng(1).uniform(BOX.lower, BOX.upper, size=(5, 2))
    trace = ibp_forward(layers, *BOX)
    reg = LPGap(sense=sense, gap_method="dual_network", exact_bounds=exact_bounds, slope_steps=0)
    fixed = None if exact_bounds else trace

    def gap(ls):
        return reg.value_and_grad(_ctx(ls, X, _ibp=fixed))[0]

    value, grads = reg.value_and_grad(_ctx(layers, X, _ibp=fixed))
    assert value > 0
    eps, theta = 1e-6, []
    for l, layer in enumerate(layers):
        for which, shape, analytic in (
            ("W", layer.weight.shape, grads[l][0]),
            ("b", layer.bias.shape, grads[l][1]),
        ):
            for index in np.ndindex(shape):
                up = gap(_perturbed(layers, l, which, index, eps))
                down = gap(_perturbed(layers, l, which, index, -eps))
                numeric = (up - down) / (2 * eps)
                assert analytic[index] == pytest.approx(numeric, abs=1e-5)
                theta.append(abs(numeric))
    assert max(theta) > 1e-3


def test_lpgap_dual_is_an_upper_bound_on_the_lp_gap_and_matches_lp_at_optimal_slopes():
    """With ``sense="both"`` the dual gap is never below the exact LP gap, and after enough
    slope steps (kept per sample between calls; a small step, 0.2, to settle) it comes within
    1e-3 of it."""
    net = Network.mlp([2, 8, 8, 1], seed=2).with_input_bounds(*BOX)
    X = np.random.default_rng(3).uniform(BOX.lower, BOX.upper, size=(8, 2))
    exact = LPGap(sense="both", samples=None, gap_method="exact_lp").value_and_grad(
        _ctx(net.layers, X)
    )[0]
    reg = LPGap(sense="both", gap_method="dual_network", slope_steps=4, slope_lr=0.2)
    values = [reg.value_and_grad(_ctx(net.layers, X, rows=np.arange(8)))[0] for _ in range(40)]
    assert all(v >= exact - 1e-9 for v in values)
    assert values[0] - exact > 1e-2  # the heuristic slopes are not the optimum here
    assert values[-1] - exact < 1e-3 * max(1.0, exact)
    for store in reg._slopes.values():
        assert np.all((store.state.alpha >= 0.0) & (store.state.alpha <= 1.0))


def test_slopes_are_kept_per_training_row():
    net = Network.mlp([2, 5, 5, 1], seed=0)
    X = np.random.default_rng(0).uniform(BOX.lower, BOX.upper, size=(6, 2))
    reg = LPGap(gap_method="dual_network", slope_steps=3)
    reg.value_and_grad(_ctx(net.layers, X[:3], rows=np.array([7, 2, 4])))
    store = reg._slopes["min"]
    alpha = store.layout.split(store.state.alpha)[1]
    assert alpha.shape == (8, 5)
    assert store.seen.tolist() == [False, False, True, False, True, False, False, True]
    t = store.state.t
    assert np.all(t[[2, 4, 7]] == 4) and np.all(t[[0, 1, 3, 5, 6]] == 0)
    trace = ibp_forward(net.layers, *BOX)
    unstable = neuron_stability(net.layers[1], trace.lower[1], trace.upper[1]) == 0
    start = heuristic_slopes(trace.lower[1], trace.upper[1])
    moved = np.abs(alpha[[2, 4, 7]] - start)[:, unstable]
    assert moved.max() > 0  # the steps changed some slope of an unstable neuron
    kept = alpha[[2, 4, 7]].copy()
    reg.value_and_grad(_ctx(net.layers, X[3:5], rows=np.array([0, 1])))
    again = store.layout.split(store.state.alpha)[1]
    np.testing.assert_array_equal(again[[2, 4, 7]], kept)  # rows outside the batch keep theirs
    assert store.seen.tolist() == [True, True, True, False, True, False, False, True]
    assert np.all(store.state.t[[0, 1]] == 4) and np.all(store.state.t[[2, 4, 7]] == 4)


def test_lpgap_rejects_bad_dual_parameters():
    accepted = r"gap_method must be one of \('dual_network', 'exact_lp'\)"
    with pytest.raises(ValueError, match=accepted):
        LPGap(gap_method="crown")
    with pytest.raises(ValueError, match="slope_steps"):
        LPGap(gap_method="dual_network", slope_steps=-1)
    with pytest.raises(ValueError, match="slope_lr"):
        LPGap(gap_method="dual_network", slope_lr=0.0)
    assert (
        LPGap(gap_method="exact_lp").samples == 8
        and LPGap(gap_method="dual_network").samples is None
    )
    assert LPGap(samples=None, gap_method="exact_lp").samples is None


def test_dual_training_closes_the_lp_gap_like_the_exact_lp():
    """Train the same small network with no regularizer, ``gap_method="exact_lp"`` and
    ``gap_method="dual_network"``; measure the exact LP gap at training points after each."""
    from pyomo_nnrelax.experiments.functions import box, latin_hypercube, peaks

    domain = box("peaks")
    X = latin_hypercube(300, domain, seed=0)

    def mean_gap(net):
        batch = solve_batch(net, interval_bounds(net, domain), X[:40], np.ones((40, 1)), "min")
        assert batch.ok.all()
        return float(np.mean(net.forward(X[:40])[:, 0] - batch.value))

    gaps = {}
    for name, reg, lam in (
        ("none", None, 0.0),
        ("lp", LPGap(samples=4, gap_method="exact_lp"), 0.1),
        ("dual", LPGap(gap_method="dual_network"), 0.1),
    ):
        trainer = Trainer(
            Network.mlp([2, 8, 8, 1], seed=0),
            X,
            peaks(X),
            input_bounds=domain,
            regularizer=reg,
            lam=lam,
            epochs=6,
            batch_size=32,
            lr=3e-3,
        )
        gaps[name] = mean_gap(trainer.fit().network)
    assert gaps["lp"] < 0.5 * gaps["none"]
    assert gaps["dual"] < 0.5 * gaps["none"]
    assert gaps["dual"] < 2.0 * gaps["lp"] + 1e-3 * gaps["none"]


def test_bound_with_the_kept_slopes_of_a_trained_network_is_valid():
    """After training with the dual-network ``LPGap``, the slopes kept for each training
    point give a bound at most the exact LP value there (for the final weights), and within a few
    percent of the LP gap at most points."""
    from pyomo_nnrelax.experiments.functions import box, latin_hypercube, peaks
    from pyomo_nnrelax.training import BoundWidth
    from pyomo_nnrelax.training.dual import SlopeLayout

    domain = box("peaks")
    X = latin_hypercube(400, domain, seed=0)
    reg = LPGap(gap_method="dual_network")
    trainer = Trainer(
        Network.mlp([2, 10, 10, 1], seed=0), X, peaks(X), input_bounds=domain,
        regularizer=BoundWidth() + reg, lam=1e-2, epochs=8, batch_size=32, lr=3e-3,
    )  # fmt: skip
    trainer.fit()
    layers, (lo, hi) = trainer._layers, trainer.input_bounds
    trace = ibp_forward(layers, lo, hi)
    net = Network(layers).with_input_bounds(lo, hi)
    exact = solve_batch(net, trace.to_bounds(), X, np.ones((len(X), 1)), "min")
    assert exact.ok.all()
    layout = SlopeLayout.of(layers)
    kept, unseen = reg._slopes["min"].read(layout, np.arange(len(X)))
    assert not unseen.any()
    bound = dual_forward(layers, trace.lower, trace.upper, X, np.ones(1), layout.split(kept.alpha))
    assert np.all(bound.value <= exact.value + 1e-7)
    f = net.forward(X)[:, 0]
    overstatement = (exact.value - bound.value) / np.maximum(f - exact.value, 1e-9)
    assert np.median(overstatement) < 0.05
