"""The projected LP (triangle relaxation on the layer outputs) against the big-M LP it replaces:
same optimum, same derivatives, on every kind of layer and bound the big-M model accepts."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Layer, Network, NetworkBounds, interval_bounds, tighten_bounds
from pyomo_nnrelax.lp.projected import ProjectedLPSolver, nearest_neighbour_path, projected_lp
from pyomo_nnrelax.relaxation import solve_relaxations

BOX = InputBox(lower=np.full(2, -1.0), upper=np.full(2, 1.0))
FIELDS = ("affine_duals", "weight_grads", "lower_grad", "upper_grad")


def linear_middle() -> Network:
    """ReLU, then a hidden layer without activation, then ReLU and a linear output."""
    net = Network.mlp([2, 6, 5, 6, 1], seed=11)
    layers = list(net.layers)
    layers[1] = Layer(layers[1].weight, layers[1].bias, "linear")
    return net.with_layers(layers)


def relu_output() -> Network:
    """Two outputs, both behind a ReLU."""
    net = Network.mlp([2, 7, 7, 2], seed=4)
    layers = list(net.layers)
    layers[-1] = Layer(layers[-1].weight, layers[-1].bias + 0.3, "relu")
    return net.with_layers(layers)


def with_stable_neurons(net: Network) -> Network:
    """``net`` with the second layer's biases moved so that it has neurons of every kind."""
    layers = list(net.layers)
    shift = np.resize([3.0, -3.0, 0.0], layers[1].n_out)
    layers[1] = Layer(layers[1].weight, layers[1].bias + shift, layers[1].activation)
    return net.with_layers(layers)


def raised_lower_bounds(net: Network) -> NetworkBounds:
    """LP-tightened bounds, with the lower bound of every stable-inactive neuron raised halfway
    to its upper bound: a cut the earlier layers' bounds do not imply, so it needs a row."""
    tight = tighten_bounds(net, interval_bounds(net, BOX), "lp")
    lower = [lo.copy() for lo in tight.lower]
    for l in range(len(net.layers) - 1):
        inactive = tight.upper[l] <= 0
        lower[l][inactive] = 0.5 * (tight.lower[l][inactive] + tight.upper[l][inactive])
    return NetworkBounds(tight.input_lower, tight.input_upper, tuple(lower), tight.upper, "test")


CASES = {
    "interval": (with_stable_neurons(Network.mlp([2, 8, 8, 8, 1], seed=2)), None),
    "linear hidden layer": (linear_middle(), None),
    "relu outputs": (relu_output(), None),
    "tightened bounds with cuts": (
        with_stable_neurons(Network.mlp([2, 8, 8, 1], seed=9)),
        raised_lower_bounds,
    ),
    "no hidden layer": (Network.mlp([2, 3], seed=0), None),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("sense", ["min", "max"])
def test_projected_lp_matches_the_big_m_lp(case, sense):
    net, make_bounds = CASES[case]
    bounds = make_bounds(net) if make_bounds else interval_bounds(net, BOX)
    X = np.random.default_rng(1).uniform(-1, 1, size=(8, 2))
    weights = np.linspace(1.0, 2.0, net.n_outputs)
    fast = solve_relaxations(net, bounds, X, weights, sense)
    big_m = solve_relaxations(net, bounds, X, weights, sense, lp_backend="pyomo")
    np.testing.assert_array_equal(fast.ok, big_m.ok)
    assert fast.ok.sum() >= 4
    np.testing.assert_allclose(fast.value, big_m.value, atol=1e-7)
    for name in FIELDS:
        # primal values alone may differ where the optimum is not unique; dV/dW may not
        a_list, b_list = (
            b.weight_grads() if name == "weight_grads" else getattr(b, name) for b in (fast, big_m)
        )
        for a, b in zip(a_list, b_list):
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"{case}: {name}")


def test_cuts_on_inactive_neurons_become_rows_and_implied_ones_do_not():
    net = with_stable_neurons(Network.mlp([2, 8, 8, 1], seed=9))
    ibp = interval_bounds(net, BOX)
    implied = projected_lp(net, ibp)
    kinds = np.concatenate([rows.kind for rows in implied.layers[1:-1]])
    assert {-1, 0, 1} <= set(kinds.tolist())
    assert all((rows.range < 0).all() for rows in implied.layers)
    cut = projected_lp(net, raised_lower_bounds(net))
    assert sum(int((rows.range >= 0).sum()) for rows in cut.layers) > 0


def test_points_outside_the_box_are_infeasible_as_in_the_big_m_lp():
    net = Network.mlp([2, 6, 6, 1], seed=3)
    bounds = interval_bounds(net, BOX)
    X = np.array([[0.2, 0.1], [3.0, -3.0], [-0.5, 0.9]])
    fast = solve_relaxations(net, bounds, X, [1.0])
    big_m = solve_relaxations(net, bounds, X, [1.0], lp_backend="pyomo")
    np.testing.assert_array_equal(fast.ok, [True, False, True])
    np.testing.assert_array_equal(big_m.ok, fast.ok)
    assert np.isnan(fast.value[1])
    assert all(not g[1].any() for g in fast.affine_duals + fast.upper_grad)


def test_projected_lp_is_about_half_the_big_m_lp():
    from pyomo_nnrelax.formulations.bigm import bigm_model

    net = Network.mlp([2, 25, 25, 25, 1], seed=0)
    bounds = interval_bounds(net, BOX)
    small, big = projected_lp(net, bounds), bigm_model(net, bounds, relax=True)
    assert small.n_rows + small.n_cols < 0.6 * (big.n_rows + big.n_cols)


def test_a_new_network_with_the_same_layout_starts_from_the_old_basis():
    net = Network.mlp([2, 10, 10, 1], seed=6)
    X = np.random.default_rng(2).uniform(-1, 1, size=(16, 2))
    ones = np.ones((16, 1))
    solver = ProjectedLPSolver(net, interval_bounds(net, BOX))
    solver.solve(X, ones, "min")
    layers = [Layer(L.weight * 1.0001, L.bias, L.activation) for L in net.layers]
    moved = net.with_layers(layers)
    moved_bounds = interval_bounds(moved, BOX)
    assert projected_lp(moved, moved_bounds).signature() == solver.lp.signature()
    solver.update(moved, moved_bounds)
    solver.solve(X[-1:], ones[:1], "min")
    warm = solver.highs.getInfo().simplex_iteration_count
    cold = ProjectedLPSolver(moved, moved_bounds)
    cold.solve(X[-1:], ones[:1], "min")
    assert warm < cold.highs.getInfo().simplex_iteration_count


def test_samples_are_visited_along_a_nearest_neighbour_path():
    points = np.array([[0.0], [10.0], [1.0], [9.0], [2.0]])
    order = list(nearest_neighbour_path(points, np.arange(5), np.array([8.5])))
    assert order == [3, 1, 4, 2, 0]
    assert list(nearest_neighbour_path(points, np.array([4, 2]), None)) == [4, 2]


def test_badly_scaled_networks_still_match_without_solver_scaling():
    """The projected LP runs without HiGHS's scaling; bounds up to ~1e8 must still agree."""
    net = Network.mlp([2, 25, 25, 25, 1], seed=4)
    net = net.with_layers([Layer(L.weight * 20, L.bias * 50, L.activation) for L in net.layers])
    box = InputBox(lower=np.full(2, -50.0), upper=np.full(2, 50.0))
    bounds = interval_bounds(net, box)
    assert max(hi.max() for hi in bounds.upper) > 1e8
    X = np.random.default_rng(0).uniform(-50, 50, size=(10, 2))
    for sense in ("min", "max"):
        fast = solve_relaxations(net, bounds, X, [1.0], sense)
        big_m = solve_relaxations(net, bounds, X, [1.0], sense, lp_backend="pyomo")
        assert fast.ok.all() and big_m.ok.all()
        np.testing.assert_allclose(fast.value, big_m.value, rtol=1e-9)
        for a, b in zip(fast.affine_duals, big_m.affine_duals):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(b).max())
