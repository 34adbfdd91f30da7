"""Gradient checks of the IBP reverse pass and of every regularizer (central differences)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.optimize import linprog

from pyomo_nnrelax import Layer, Network, interval_bounds, relaxation
from pyomo_nnrelax.box import InputBox
from pyomo_nnrelax.lp.projected import ProjectedLPSolver
from pyomo_nnrelax.training import (
    L1,
    L2,
    BoundWidth,
    Combination,
    LPGap,
    RegContext,
    ReLUStability,
    StableNeuron,
    Trainer,
    ibp_backward,
    ibp_forward,
)
from tests.support.gradients import assert_gradient, flat_grads, reg_context

BOX = InputBox(lower=[-1.0, -0.5], upper=[1.0, 1.5])


@pytest.fixture
def layers() -> tuple[Layer, ...]:
    return Network.mlp([2, 8, 8, 2], seed=3).layers


def _ctx(layers, X=None, seed=0, **kwargs) -> RegContext:
    return reg_context(layers, BOX, X, seed, **kwargs)


def test_ibp_forward_matches_interval_bounds(layers):
    trace = ibp_forward(layers, *BOX)
    ref = interval_bounds(Network(layers), BOX)
    for mine, theirs in zip(trace.lower + trace.upper, ref.lower + ref.upper):
        np.testing.assert_allclose(mine, theirs)


def test_ibp_reverse_pass_gradient(layers):
    rng = np.random.default_rng(1)
    seeds_lo = [rng.normal(size=l.n_out) for l in layers]
    seeds_hi = [rng.normal(size=l.n_out) for l in layers]

    def value(ls):
        t = ibp_forward(ls, *BOX)
        return sum(a @ lo + b @ hi for a, b, lo, hi in zip(seeds_lo, seeds_hi, t.lower, t.upper))

    trace = ibp_forward(layers, *BOX)
    assert_gradient(value, layers, ibp_backward(layers, trace, seeds_lo, seeds_hi))


def test_ibp_reverse_pass_with_missing_seeds(layers):
    trace = ibp_forward(layers, *BOX)

    def value(ls):
        return ibp_forward(ls, *BOX).upper[1].sum()

    grads = ibp_backward(layers, trace, [None] * 3, [None, np.ones(8), None])
    assert_gradient(value, layers, grads)


REGULARIZERS = {
    "L1": L1(),
    "L2": L2(),
    "BoundWidth": BoundWidth(),
    "StableNeuron": StableNeuron(),
    "ReLUStability": ReLUStability(),
    "combination": 0.5 * BoundWidth() + StableNeuron() * 2 + L2(),
}


@pytest.mark.parametrize("name", REGULARIZERS)
def test_regularizer_gradient(name, layers):
    reg = REGULARIZERS[name]
    _, grads = reg.value_and_grad(_ctx(layers))
    assert_gradient(lambda ls: reg.value_and_grad(_ctx(ls))[0], layers, grads)


def test_relu_stability_is_checked_where_tanh_is_not_saturated():
    layers = Network.mlp([2, 6, 1], seed=0).layers
    scaled = (Layer(layers[0].weight * 0.3, layers[0].bias * 0.3), layers[1])
    _, grads = ReLUStability().value_and_grad(_ctx(scaled))
    assert_gradient(lambda ls: ReLUStability().value_and_grad(_ctx(ls))[0], scaled, grads)


def test_bound_width_value_is_mean_hidden_width(layers):
    b = interval_bounds(Network(layers), BOX)
    widths = np.concatenate([b.upper[0] - b.lower[0], b.upper[1] - b.lower[1]])
    assert BoundWidth().value_and_grad(_ctx(layers))[0] == pytest.approx(widths.mean())


def test_stable_neuron_value_and_zero_gradient_when_all_stable():
    layers = (
        Layer(np.array([[1.0, 0.0], [0.0, -1.0]]), np.array([2.0, -2.0])),
        Layer(np.ones((1, 2)), np.zeros(1), "linear"),
    )
    value, grads = StableNeuron().value_and_grad(_ctx(layers))
    assert value == 0.0
    assert all(not dw.any() and not db.any() for dw, db in grads)


def test_composition_flattens_and_weights():
    reg = 0.5 * (BoundWidth() + 2.0 * L1()) + L2()
    assert isinstance(reg, Combination)
    names = [(w, type(r).__name__) for w, r in reg.terms]
    assert names == [(0.5, "BoundWidth"), (1.0, "L1"), (1.0, "L2")]
    assert reg.uses_bounds and not (L1() + L2()).uses_bounds


def test_lpgap_rejects_bad_parameters():
    with pytest.raises(ValueError, match="sense"):
        LPGap(sense="minimise", gap_method="exact_lp")
    with pytest.raises(ValueError, match="samples"):
        LPGap(samples=0, gap_method="exact_lp")


# ---------------------------------------------------------------------- LP gap
def _reference_lp(network, bounds, x, omega, sense):
    """Big-M LP relaxation at a fixed input with scipy: value, duals of the affine rows, primals.

    Variables per layer l: z^l (in [L, U]); per hidden layer also xh^l >= 0 and a^l in [0, 1].
    """
    layers = network.layers
    sizes = [l.n_out for l in layers]
    offsets, n_var = [], 0
    for l, layer in enumerate(layers):
        hidden = layer.activation == "relu"
        offsets.append((n_var, n_var + sizes[l], n_var + 2 * sizes[l]))
        n_var += sizes[l] * (3 if hidden else 1)
    c = np.zeros(n_var)
    c[offsets[-1][0] : offsets[-1][0] + sizes[-1]] = omega if sense == "min" else -omega
    a_eq, b_eq, a_ub, b_ub, var_bounds = [], [], [], [], [(None, None)] * n_var
    for l, layer in enumerate(layers):
        z0, h0, a0 = offsets[l]
        lo, hi = bounds.lower[l], bounds.upper[l]
        for j in range(sizes[l]):
            row = np.zeros(n_var)
            row[z0 + j] = 1.0
            if l == 0:
                rhs = layer.bias[j] + layer.weight[j] @ x
            else:
                row[offsets[l - 1][1] : offsets[l - 1][1] + sizes[l - 1]] = -layer.weight[j]
                rhs = layer.bias[j]
            a_eq.append(row)
            b_eq.append(rhs)
            var_bounds[z0 + j] = (lo[j], hi[j])
            if layer.activation != "relu":
                continue
            var_bounds[h0 + j], var_bounds[a0 + j] = (0.0, None), (0.0, 1.0)
            # z - xh <= 0;  xh - z - L a <= -L;  xh - U a <= 0
            for coef, rhs in (
                ({z0 + j: 1.0, h0 + j: -1.0}, 0.0),
                ({h0 + j: 1.0, z0 + j: -1.0, a0 + j: -lo[j]}, -lo[j]),
                ({h0 + j: 1.0, a0 + j: -hi[j]}, 0.0),
            ):
                row = np.zeros(n_var)
                row[list(coef)] = list(coef.values())
                a_ub.append(row)
                b_ub.append(rhs)
    res = linprog(c, a_ub, b_ub, a_eq, b_eq, var_bounds, method="highs")
    sign = 1.0 if sense == "min" else -1.0
    duals = sign * res.eqlin.marginals
    split = np.cumsum(sizes)[:-1]
    acts = [x] + [res.x[offsets[l][1] : offsets[l][1] + sizes[l]] for l in range(len(layers) - 1)]
    return sign * res.fun, np.split(duals, split), acts, res.status == 0


@pytest.fixture
def lp_layers() -> tuple[Layer, ...]:
    return Network.mlp([2, 5, 5, 2], seed=7).layers


LP_X = np.array([[0.3, 0.2], [-0.6, 1.1], [0.8, -0.3]])


def _failing_every_second_sample(monkeypatch) -> None:
    """Make the highspy LP solver report every second sample of a batch as failed."""
    solve = ProjectedLPSolver.solve

    def flaky(self, X, weights, sense):
        batch = solve(self, X, weights, sense)
        failed = np.zeros(len(X), dtype=bool)
        failed[::2] = True

        def cut(arrays):
            return [np.where(failed[:, None], 0.0, a) for a in arrays]

        return replace(
            batch,
            value=np.where(failed, np.nan, batch.value),
            affine_duals=cut(batch.affine_duals),
            activations=cut(batch.activations),
            lower_grad=cut(batch.lower_grad),
            upper_grad=cut(batch.upper_grad),
            ok=batch.ok & ~failed,
        )

    monkeypatch.setattr(ProjectedLPSolver, "solve", flaky)


def test_lpgap_counts_and_skips_failed_solves(lp_layers, monkeypatch):
    _failing_every_second_sample(monkeypatch)
    ctx = _ctx(lp_layers, LP_X)
    value, _ = LPGap(samples=3, gap_method="exact_lp").value_and_grad(ctx)
    assert ctx.lp_failures == 2 and value > 0


def test_trainer_counts_lp_failures_per_epoch(monkeypatch):
    _failing_every_second_sample(monkeypatch)
    X = np.random.default_rng(0).uniform(*BOX, size=(40, 2))
    trainer = Trainer(
        Network.mlp([2, 4, 1], seed=0),
        X,
        X.sum(axis=1),
        input_bounds=BOX,
        regularizer=LPGap(samples=3, gap_method="exact_lp"),
        lam=0.1,
        epochs=2,
        batch_size=20,
    )
    history = trainer.fit().history
    assert [h.lp_failures for h in history] == [4, 4]
    assert all(h.regularizer > 0 for h in history)


def test_trainer_runs_the_pyomo_backend_with_the_highs_backends_values(monkeypatch):
    """``lp_backend="pyomo"`` goes through the block and a Pyomo solver; on the first step
    (same weights) its LP gap equals the highspy path's."""
    calls = []
    real = relaxation.solve_relaxations

    def spy(*args, **kwargs):
        calls.append(kwargs.get("lp_backend"))
        return real(*args, **kwargs)

    monkeypatch.setattr(relaxation, "solve_relaxations", spy)
    X = np.random.default_rng(0).uniform(*BOX, size=(20, 2))
    first_values = {}
    for backend in ("pyomo", "highs"):
        trainer = Trainer(
            Network.mlp([2, 6, 6, 1], seed=0),
            X,
            X.sum(axis=1),
            input_bounds=BOX,
            regularizer=LPGap(samples=4, gap_method="exact_lp"),
            lam=0.1,
            epochs=1,
            batch_size=20,
            lp_backend=backend,
            seed=1,
        )
        trainer._start()
        first_values[backend] = trainer._step(trainer.X, trainer._y_train)[1]
        assert sum(h.lp_failures for h in trainer.fit().history) == 0
    assert set(calls) == {"pyomo"} and len(calls) == 2
    assert first_values["pyomo"] > 1e-3
    np.testing.assert_allclose(first_values["pyomo"], first_values["highs"], rtol=1e-6)


def test_lp_gap_training_shrinks_the_gap():
    from pyomo_nnrelax.experiments.functions import box, latin_hypercube, peaks

    domain = box("peaks")
    X = latin_hypercube(300, domain, seed=0)

    def mean_gap(net):
        batch = relaxation.solve_relaxations(net, interval_bounds(net, domain), X[:40], np.ones(1))
        assert batch.ok.all()
        return np.mean(net.forward(X[:40])[:, 0] - batch.value)

    gaps = {}
    for lam in (0.0, 0.1):
        trainer = Trainer(
            Network.mlp([2, 8, 8, 1], seed=0),
            X,
            peaks(X),
            input_bounds=domain,
            regularizer=LPGap(samples=4, gap_method="exact_lp"),
            lam=lam,
            epochs=6,
            batch_size=32,
            lr=3e-3,
        )
        result = trainer.fit()
        assert sum(h.lp_failures for h in result.history) == 0
        gaps[lam] = mean_gap(result.network)
    assert gaps[0.1] < 0.2 * gaps[0.0]


@pytest.mark.parametrize(
    "sense, exact_bounds",
    [("min", False), ("max", False), ("both", False), ("min", True), ("max", True)],
)
def test_lpgap_gradient_with_relaxation_module(sense, exact_bounds, lp_layers):
    """With the real LP solver: fixed-bounds gradient, and the total derivative through L, U."""
    trace = ibp_forward(lp_layers, *BOX)
    reg = LPGap(sense=sense, samples=2, exact_bounds=exact_bounds, gap_method="exact_lp")
    fixed = None if exact_bounds else trace

    def gap(ls):
        return reg.value_and_grad(_ctx(ls, LP_X, _ibp=fixed))[0]

    value, grads = reg.value_and_grad(_ctx(lp_layers, LP_X, _ibp=fixed))
    assert value > 1e-3
    assert_gradient(gap, lp_layers, grads)
    if exact_bounds:  # the term through L and U matters at this point
        envelope = LPGap(sense=sense, samples=2, gap_method="exact_lp").value_and_grad(
            _ctx(lp_layers, LP_X)
        )[1]
        assert np.abs(flat_grads(grads) - flat_grads(envelope)).max() > 0.1


@pytest.mark.parametrize("backend", ["highs", "pyomo"])
def test_reference_lp_agrees_with_relaxation_module(lp_layers, backend):
    """Values and the duals of the affine rows (dV/db) against an independent scipy LP."""
    network = Network(lp_layers)
    bounds = interval_bounds(network, BOX)
    omega = np.array([0.3, 0.7])
    for sense in ("min", "max"):
        batch = relaxation.solve_relaxations(
            network, bounds, LP_X, omega, sense=sense, lp_backend=backend
        )
        reference = [_reference_lp(network, bounds, x, omega, sense) for x in LP_X]
        np.testing.assert_allclose(batch.value, [r[0] for r in reference], atol=1e-7)
        for l in range(len(lp_layers)):
            np.testing.assert_allclose(
                batch.affine_duals[l], [r[1][l] for r in reference], atol=1e-6
            )


def test_lpgap_value_is_the_mean_gap_to_the_reference_lp(lp_layers):
    """``R_LP`` for ``sense="both"`` is the min gap plus the max gap at the sampled points."""
    ctx = _ctx(lp_layers, LP_X, seed=4)
    value = LPGap(sense="both", samples=3, gap_method="exact_lp").value_and_grad(ctx)[0]
    rng = np.random.default_rng(4)
    rows = np.sort(rng.choice(len(LP_X), size=3, replace=False))
    omega = rng.random(2)
    omega /= omega.sum()
    network = Network(lp_layers)
    bounds = interval_bounds(network, BOX)
    f = network.forward(LP_X[rows]) @ omega
    v_min = [_reference_lp(network, bounds, x, omega, "min")[0] for x in LP_X[rows]]
    v_max = [_reference_lp(network, bounds, x, omega, "max")[0] for x in LP_X[rows]]
    assert value == pytest.approx(np.mean(f - v_min) + np.mean(np.array(v_max) - f), abs=1e-7)


@pytest.mark.parametrize("method", ["exact_lp", "dual_network"])
def test_deferred_output_seeds_give_the_same_value_and_gradient(method):
    """The trainer asks regularizers to leave their gradient through ``f(X)`` as a seed on the
    outputs (one backward pass for the loss and the gap): that seed, backpropagated, plus the
    returned gradient equals the gradient computed directly, weights of a sum included."""
    from pyomo_nnrelax.network import forward_cache
    from pyomo_nnrelax.training.backprop import add_grads, backward

    layers = Network.mlp([2, 6, 6, 2], seed=4).layers
    X = np.random.default_rng(1).uniform(BOX.lower, BOX.upper, size=(12, 2))
    reg = 0.5 * BoundWidth() + 2.0 * LPGap(sense="min", gap_method=method, samples=5)
    direct = RegContext(layers, *BOX, X, np.random.default_rng(0))
    deferred = RegContext(layers, *BOX, X, np.random.default_rng(0), defer_output=True)
    value, grads = reg.value_and_grad(direct)
    value_deferred, rest = reg.value_and_grad(deferred)
    assert deferred.output_seed is not None and np.abs(deferred.output_seed).max() > 1e-3
    _, inputs, pre = forward_cache(layers, X)
    total = add_grads(rest, backward(layers, inputs, pre, deferred.output_seed))
    assert value_deferred == pytest.approx(value, abs=1e-12)
    for (w, b), (w_d, b_d) in zip(grads, total):
        np.testing.assert_allclose(w_d, w, atol=1e-12)
        np.testing.assert_allclose(b_d, b, atol=1e-12)


def test_lazy_lp_gap_computes_every_kth_step_with_a_k_times_gradient():
    """``LPGap(every=3)``: calls 1, 4, 7, ... give the gap's value and 3 times its gradient;
    the calls between give zero gradient and repeat the last value."""
    layers = Network.mlp([2, 6, 6, 1], seed=4).layers
    X = np.random.default_rng(1).uniform(BOX.lower, BOX.upper, size=(12, 2))
    eager = LPGap(gap_method="dual_network", slope_steps=0)
    lazy = LPGap(gap_method="dual_network", slope_steps=0, every=3)
    value, grads = eager.value_and_grad(RegContext(layers, *BOX, X, np.random.default_rng(0)))
    for call in range(7):
        v, g = lazy.value_and_grad(RegContext(layers, *BOX, X, np.random.default_rng(0)))
        assert v == pytest.approx(value)
        factor = 3.0 if call % 3 == 0 else 0.0
        for (w, b), (w_l, b_l) in zip(grads, g):
            np.testing.assert_allclose(w_l, factor * w, atol=1e-12)
            np.testing.assert_allclose(b_l, factor * b, atol=1e-12)
    with pytest.raises(ValueError, match="every"):
        LPGap(every=0, gap_method="exact_lp")


def test_lazy_lp_gap_follows_the_trainers_steps_not_its_own_calls():
    """With the trainer's step in the context, one ``LPGap(every=2)`` object held twice in a
    sum is computed (or skipped) by both terms at the same steps, so ``lp + 0.5 * lp`` is 1.5
    times ``lp``; a second trainer reusing the object starts computing at its own step 0."""
    layers = Network.mlp([2, 6, 6, 1], seed=4).layers
    X = np.random.default_rng(1).uniform(BOX.lower, BOX.upper, size=(12, 2))
    lazy = LPGap(gap_method="dual_network", every=2)
    twice = lazy + 0.5 * lazy
    reference = LPGap(gap_method="dual_network", every=2)
    for step in range(4):
        _, g = twice.value_and_grad(_ctx(layers, X, step=step))
        _, g_ref = reference.value_and_grad(_ctx(layers, X, step=step))
        for (w, b), (w_r, b_r) in zip(g, g_ref):
            np.testing.assert_allclose(w, 1.5 * w_r, atol=1e-12)
            np.testing.assert_allclose(b, 1.5 * b_r, atol=1e-12)
        assert any(np.abs(w).max() > 0 for w, _ in g) == (step % 2 == 0)
    lazy.value_and_grad(_ctx(layers, X, step=1))  # 9 calls of the object so far
    _, g = lazy.value_and_grad(_ctx(layers, X, step=0))  # a new trainer's first step
    assert any(np.abs(w).max() > 0 for w, _ in g)


def test_lp_gap_with_fixed_weights_closes_the_gap_of_that_objective():
    """``LPGap(weights=w)``: the gap of ``w' f`` (in user units: scaled by the trainer's
    target scale, then normalised to sum 1), not of a random objective; the wrong number of
    weights is refused."""
    layers = Network.mlp([2, 6, 6, 3], seed=4).layers
    X = np.random.default_rng(1).uniform(BOX.lower, BOX.upper, size=(10, 2))
    w, scale = np.array([0.5, 0.2, 0.3]), np.array([2.0, 1.0, 4.0])
    for method in ("exact_lp", "dual_network"):
        fixed = LPGap(gap_method=method, weights=w, samples=None)
        ctx = RegContext(layers, *BOX, X, np.random.default_rng(0), output_scale=scale)
        value, _ = fixed.value_and_grad(ctx)
        scaled = LPGap(gap_method=method, weights=w * scale, samples=None)
        ctx = RegContext(layers, *BOX, X, np.random.default_rng(0))
        assert value == pytest.approx(scaled.value_and_grad(ctx)[0], rel=1e-9)
        single = [LPGap(gap_method=method, samples=None, weights=np.eye(3)[k]) for k in range(3)]
        parts = [
            r.value_and_grad(RegContext(layers, *BOX, X, np.random.default_rng(0)))[0]
            for r in single
        ]
        if method == "exact_lp":  # the LP gap of a sum is at most the sum of the gaps
            total = (w * scale).sum()  # the objective is normalised to sum 1
            assert total * scaled.value_and_grad(ctx)[0] <= np.dot(w * scale, parts) + 1e-9
    with pytest.raises(ValueError, match="3 entries; the network has 2 outputs"):
        LPGap(weights=w, gap_method="exact_lp").value_and_grad(
            RegContext(Network.mlp([2, 4, 2], seed=0).layers, *BOX, X, np.random.default_rng(0))
        )
    with pytest.raises(ValueError, match="finite vector"):
        LPGap(weights=[np.nan, 1.0], gap_method="exact_lp")
