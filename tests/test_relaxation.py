"""LP relaxation at fixed inputs: values, dual-based gradients against finite differences,
Pyomo and highspy backends, parallel solves."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Layer, Network, NetworkBounds, interval_bounds
from pyomo_nnrelax.formulations.bigm import bigm_model
from pyomo_nnrelax.lp.highs import HighsModel
from pyomo_nnrelax.lp.projected import ProjectedLPSolver
from pyomo_nnrelax.relaxation import solve_relaxations

BOX = InputBox(lower=np.full(2, -1.0), upper=np.full(2, 1.0))
EPS = 1e-6


@pytest.fixture(scope="module")
def net() -> Network:
    return Network.mlp([2, 8, 8, 1], seed=3)


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(6, 2))


def values(network: Network, bounds: NetworkBounds, X, sense: str) -> np.ndarray:
    return solve_relaxations(network, bounds, X, [1.0], sense).value


def with_param(network: Network, l: int, name: str, index: tuple, delta: float) -> Network:
    """``network`` with entry ``index`` of layer ``l``'s weight or bias moved by ``delta``."""
    layer = network.layers[l]
    weight, bias = layer.weight.copy(), layer.bias.copy()
    (weight if name == "weight" else bias)[index] += delta
    layers = list(network.layers)
    layers[l] = Layer(weight, bias, layer.activation)
    return network.with_layers(layers)


def with_bound(bounds: NetworkBounds, l: int, which: str, j: int, delta: float) -> NetworkBounds:
    """``bounds`` with ``lower[l][j]`` or ``upper[l][j]`` moved by ``delta``."""
    lower, upper = list(bounds.lower), list(bounds.upper)
    target = lower if which == "lower" else upper
    target[l] = target[l].copy()
    target[l][j] += delta
    return NetworkBounds(bounds.input_lower, bounds.input_upper, tuple(lower), tuple(upper))


def assert_matches_fd(v0, v_plus, v_minus, analytic, min_checked: int) -> int:
    """Compare ``analytic`` with central differences where both one-sided ones agree.

    Where the one-sided differences disagree the LP is degenerate in that direction (a kink
    of V) and the derivative does not exist, so those entries are not compared.
    """
    forward, backward = (v_plus - v0) / EPS, (v0 - v_minus) / EPS
    smooth = np.abs(forward - backward) < 1e-4
    np.testing.assert_allclose(
        analytic[smooth], ((v_plus - v_minus) / (2 * EPS))[smooth], atol=1e-4
    )
    assert smooth.sum() >= min_checked
    return int(smooth.sum())


@pytest.mark.parametrize("sense", ["min", "max"])
def test_value_matches_direct_solve_and_bounds_the_network(net, points, sense):
    bounds = interval_bounds(net, BOX)
    batch = solve_relaxations(net, bounds, points, [1.0], sense)
    assert batch.ok.all() and batch.failures == 0
    relaxed = HighsModel(bigm_model(net, bounds, relax=True), relax=True)
    milp = HighsModel(bigm_model(net, bounds), relax=False)
    f = net.forward(points)[:, 0]
    for x, v, fx in zip(points, batch.value, f):
        for model in (relaxed, milp):
            model.set_objective(model.model.cols("outputs"), [1.0], sense)
            model.set_col_bounds(model.model.cols("inputs"), x, x)
        assert relaxed.solve().objective == pytest.approx(v, abs=1e-8)
        assert milp.solve().objective == pytest.approx(fx, abs=1e-6)
        assert (v <= fx + 1e-9) if sense == "min" else (v >= fx - 1e-9)


@pytest.mark.parametrize("sense", ["min", "max"])
def test_affine_duals_and_weight_gradients_match_finite_differences(net, points, sense):
    bounds = interval_bounds(net, BOX)
    batch = solve_relaxations(net, bounds, points, [1.0], sense)
    v0 = batch.value
    weight_grads = batch.weight_grads()
    checked = 0
    for l, layer in enumerate(net.layers):
        params = [("bias", (j,)) for j in range(layer.n_out)]
        params += [("weight", idx) for idx in np.ndindex(layer.weight.shape)]
        for name, idx in params:
            v_plus = values(with_param(net, l, name, idx, EPS), bounds, points, sense)
            v_minus = values(with_param(net, l, name, idx, -EPS), bounds, points, sense)
            grad = (
                batch.affine_duals[l][:, idx[0]]
                if name == "bias"
                else weight_grads[l][(slice(None), *idx)]
            )
            checked += assert_matches_fd(v0, v_plus, v_minus, grad, 0)
    assert checked > 0.8 * len(points) * sum(L.n_out * (L.n_in + 1) for L in net.layers)


@pytest.mark.parametrize("sense", ["min", "max"])
def test_bound_gradients_match_finite_differences(net, points, sense):
    bounds = interval_bounds(net, BOX)
    batch = solve_relaxations(net, bounds, points, [1.0], sense)
    checked, nonzero = 0, 0
    for l in range(len(net.layers)):
        for which, grads in (("lower", batch.lower_grad), ("upper", batch.upper_grad)):
            for j in range(net.layers[l].n_out):
                value = (bounds.lower if which == "lower" else bounds.upper)[l][j]
                if abs(value) < 10 * EPS:  # moving it would change the neuron's stability
                    continue
                v_plus = values(net, with_bound(bounds, l, which, j, EPS), points, sense)
                v_minus = values(net, with_bound(bounds, l, which, j, -EPS), points, sense)
                checked += assert_matches_fd(batch.value, v_plus, v_minus, grads[l][:, j], 0)
                nonzero += int(np.count_nonzero(np.abs(grads[l][:, j]) > 1e-8))
    assert checked > 0.8 * len(points) * 2 * sum(L.n_out for L in net.layers)
    assert nonzero > 0


def test_active_bound_of_a_stable_neuron_gets_its_column_dual():
    """A stable-active neuron (z, xh in [L, U]) whose upper bound U caps the LP: dV/dU = 1."""
    net = Network(
        (
            Layer(np.array([[1.0], [-1.0]]), np.zeros(2)),
            Layer(np.array([[1.0, 1.0]]), np.array([1.0])),
            Layer(np.array([[1.0]]), np.zeros(1), "linear"),
        )
    )
    ibp = interval_bounds(net, (np.array([-1.0]), np.array([1.0])))
    # z^1 = xh_0 + xh_1 + 1 is 1.5 at x = 0.5 and 2 in the relaxation; cap it at 1.8
    bounds = with_bound(ibp, 1, "upper", 0, 1.8 - ibp.upper[1][0])
    assert bounds.stability(1)[0] == 1
    batch = solve_relaxations(net, bounds, [[0.5]], [1.0], "max")
    assert batch.value[0] == pytest.approx(1.8)
    assert batch.upper_grad[1][0, 0] == pytest.approx(1.0)
    v_plus = values(net, with_bound(bounds, 1, "upper", 0, EPS), [[0.5]], "max")
    v_minus = values(net, with_bound(bounds, 1, "upper", 0, -EPS), [[0.5]], "max")
    assert_matches_fd(batch.value, v_plus, v_minus, batch.upper_grad[1][:, 0], 1)


def test_pyomo_backend_agrees_with_highs(net, points):
    bounds = interval_bounds(net, BOX)
    for sense in ("min", "max"):
        fast = solve_relaxations(net, bounds, points, [1.0], sense)
        slow = solve_relaxations(net, bounds, points, [1.0], sense, lp_backend="pyomo")
        assert slow.ok.all()
        np.testing.assert_allclose(slow.value, fast.value, atol=1e-6)
        for field in ("affine_duals", "activations", "lower_grad", "upper_grad"):
            for a, b in zip(getattr(slow, field), getattr(fast, field)):
                np.testing.assert_allclose(a, b, atol=1e-6, err_msg=field)


def test_parallel_executor_gives_the_serial_result(points):
    net = Network.mlp([2, 10, 10, 2], seed=5)
    bounds = interval_bounds(net, BOX)
    X = np.vstack([points, -points])
    serial = solve_relaxations(net, bounds, X, [0.3, 0.7], "min")
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = solve_relaxations(net, bounds, X, [0.3, 0.7], "min", executor=pool)
    np.testing.assert_allclose(parallel.value, serial.value, atol=1e-9)
    for a, b in zip(
        parallel.affine_duals + parallel.upper_grad, serial.affine_duals + serial.upper_grad
    ):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_solver_update_warm_starts_a_changed_network(net, points):
    bounds = interval_bounds(net, BOX)
    ones = np.ones((len(points), 1))
    solver = ProjectedLPSolver(net, bounds)
    solver.solve(points, ones, "min")
    moved = with_param(net, 0, "bias", (0,), 1e-3)
    moved_bounds = interval_bounds(moved, BOX)
    solver.update(moved, moved_bounds)
    fresh = ProjectedLPSolver(moved, moved_bounds).solve(points, ones, "min")
    np.testing.assert_allclose(solver.solve(points, ones, "min").value, fresh.value, atol=1e-9)


def test_per_sample_weights_and_errors(points):
    net = Network.mlp([2, 6, 2], seed=1)
    bounds = interval_bounds(net, BOX)
    W = np.tile([[1.0, 0.0], [0.0, 1.0]], (3, 1))
    batch = solve_relaxations(net, bounds, points, W)
    first = solve_relaxations(net, bounds, points, [1.0, 0.0]).value
    np.testing.assert_allclose(batch.value[::2], first[::2], atol=1e-9)
    with pytest.raises(ValueError, match="sense"):
        solve_relaxations(net, bounds, points, [1.0, 0.0], "minimise")
    with pytest.raises(ValueError, match="backend"):
        solve_relaxations(net, bounds, points, [1.0, 0.0], lp_backend="gurobi")


def test_failed_lps_are_marked_with_nan_values_and_zero_gradients(net, points):
    solver = ProjectedLPSolver(net, interval_bounds(net, BOX))
    solver.set_option("presolve", "off")
    solver.set_option("simplex_iteration_limit", 0)
    batch = solver.solve(points, np.ones((len(points), 1)), "min")
    assert batch.failures == len(points) and not batch.ok.any()
    assert np.isnan(batch.value).all()
    for grads in (batch.affine_duals, batch.lower_grad, batch.upper_grad, batch.activations[1:]):
        assert all(not g.any() for g in grads)
