"""Difficulty measurements through the block: counts, LP gap, MILP statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyomo_nnrelax import Layer, Network
from pyomo_nnrelax.measure import difficulty, solve_block
from tests.support import arrangements, reference

BOX = [(-2.0, 2.0), (-2.0, 2.0)]


def triangle_lp_minimum(net: Network, box) -> float:
    """An independent reference for one hidden ReLU layer and one output: the big-M LP
    relaxation's minimum over the box, written as an epigraph LP for scipy.

    The output is ``b + sum_j c_j h_j``; relaxed, ``h_j`` ranges over the triangle of
    ``z_j = w_j x + d_j`` with interval bounds ``[L_j, U_j]``.  For ``c_j > 0`` the minimum takes
    the triangle's lower edge ``max(0, z_j)`` (a variable ``t_j >= 0, t_j >= z_j``); for
    ``c_j < 0`` its upper edge ``s_j (z_j - L_j)`` with ``s_j = U_j / (U_j - L_j)``.  Stable
    neurons are exact: ``h = z`` (active) or ``h = 0`` (inactive).
    """
    from scipy.optimize import linprog

    hidden, out = net.layers
    (lo, hi) = np.array(box, dtype=float).T
    W, d, c, b = hidden.weight, hidden.bias, out.weight[0], out.bias[0]
    L = np.maximum(W, 0) @ lo + np.minimum(W, 0) @ hi + d
    U = np.maximum(W, 0) @ hi + np.minimum(W, 0) @ lo + d
    n, m = W.shape[1], W.shape[0]
    cost, const = np.zeros(n + m), b
    rows, rhs = [], []
    for j in range(m):
        if U[j] <= 0:
            continue
        if L[j] >= 0 or c[j] > 0:
            if L[j] >= 0:  # active: h = z
                cost[:n] += c[j] * W[j]
                const += c[j] * d[j]
            else:  # t_j >= z_j, t_j >= 0
                cost[n + j] = c[j]
                row = np.zeros(n + m)
                row[:n], row[n + j] = W[j], -1.0
                rows.append(row)
                rhs.append(-d[j])
        else:  # c_j < 0 on an unstable neuron: the upper edge
            s_j = U[j] / (U[j] - L[j])
            cost[:n] += c[j] * s_j * W[j]
            const += c[j] * s_j * (d[j] - L[j])
    bounds = [(a, z) for a, z in zip(lo, hi)] + [(0, None)] * m
    res = linprog(cost, rows or None, rhs or None, bounds=bounds, method="highs")
    assert res.status == 0
    return res.fun + const


def exact_extremes(net: Network, box) -> tuple[float, float]:
    """The network's exact minimum and maximum over the box (one hidden layer, two inputs)."""
    hidden, out = net.layers
    (lo, hi) = np.array(box, dtype=float).T
    low, high = arrangements.exact_extremes(
        hidden.weight, hidden.bias, out.weight, out.bias, lo, hi
    )
    return float(low[0]), float(high[0])


def with_stable_neurons(net: Network) -> Network:
    """``net`` with hidden neurons 0-2 pushed active and 3-4 inactive over BOX (|z| < 7)."""
    hidden, out = net.layers
    bias = hidden.bias.copy()
    bias[:3], bias[3:5] = 8.0, -8.0
    return net.with_layers([Layer(hidden.weight, bias), out])


def test_difficulty_counts_unstable_neurons_and_measures_the_lp_gap():
    net = with_stable_neurons(Network.mlp([2, 12, 1], seed=4))
    d = difficulty(net, BOX, "min", milp_time_limit=60)
    assert d.unstable == 7
    assert d.lp_value == pytest.approx(triangle_lp_minimum(net, BOX), abs=1e-7)
    true_min = exact_extremes(net, BOX)[0]
    assert d.milp.optimal and d.milp.objective == pytest.approx(true_min, abs=1e-7)
    assert d.milp.bound <= true_min + 1e-7
    assert d.lp_gap == pytest.approx(true_min - triangle_lp_minimum(net, BOX), abs=1e-7)


def test_maximisation_measures_the_gap_above_the_network():
    net = with_stable_neurons(Network.mlp([2, 12, 1], seed=5))
    flipped = net.with_layers(
        [net.layers[0], type(net.layers[1])(-net.layers[1].weight, -net.layers[1].bias, "linear")]
    )
    d = difficulty(net, BOX, "max", milp_time_limit=60)
    true_max = exact_extremes(net, BOX)[1]
    assert d.milp.optimal and d.milp.objective == pytest.approx(true_max, abs=1e-7)
    assert d.milp.bound >= true_max - 1e-7
    assert d.lp_value == pytest.approx(-triangle_lp_minimum(flipped, BOX), abs=1e-7)
    assert d.lp_gap == pytest.approx(-triangle_lp_minimum(flipped, BOX) - true_max, abs=1e-7)


def test_the_exact_extremes_are_those_of_a_dense_grid_within_its_lipschitz_tolerance():
    """The vertex enumeration of ``tests/support/arrangements.py`` against the grid: never
    beyond the grid's values, and within the grid's Lipschitz tolerance of them."""
    net = with_stable_neurons(Network.mlp([2, 12, 1], seed=4))
    lo, hi = np.array(BOX).T
    layers = [(layer.weight, layer.bias) for layer in net.layers]
    values = reference.forward(layers, reference.grid(lo, hi, 201))[:, 0]
    tolerance = reference.grid_tolerance(layers, lo, hi, 201)[0]
    low, high = exact_extremes(net, BOX)
    assert values.min() - tolerance <= low <= values.min() + 1e-12
    assert values.max() - 1e-12 <= high <= values.max() + tolerance


def test_a_time_limited_milp_reports_its_bound_not_an_optimum():
    net = Network.mlp([2, 30, 30, 30, 1], seed=0)
    stats = solve_block(net, BOX, "min", time_limit=0.5)
    assert not stats.optimal and stats.status == "maxTimeLimit"
    assert stats.bound <= net.forward(np.random.default_rng(0).uniform(-2, 2, (5000, 2))).min()
    assert math.isnan(stats.objective) or stats.objective >= stats.bound


def test_skipping_the_milp_leaves_no_gap():
    d = difficulty(Network.mlp([2, 5, 1], seed=0), BOX, milp_time_limit=None)
    assert d.milp is None and d.lp_gap is None
    assert math.isnan(d.as_dict()["milp_seconds"])


def test_a_milp_solved_by_the_caller_is_reused_with_its_solution_loaded():
    import pyomo.environ as pyo

    from pyomo_nnrelax import NNBlock
    from pyomo_nnrelax.measure import solve_model

    net = Network.mlp([2, 8, 8, 1], seed=2)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=BOX)
    m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.minimize)
    stats = solve_model(m, time_limit=60, load=True)
    assert stats.optimal and pyo.value(m.obj) == pytest.approx(stats.objective)
    assert m.nn.check().max_abs_error < 1e-6
    reused = difficulty(net, BOX, "min", milp=stats)
    assert reused.milp is stats
    assert reused.lp_gap == pytest.approx(difficulty(net, BOX, "min", milp_time_limit=60).lp_gap)


def test_unknown_sense_names_the_allowed_values():
    with pytest.raises(ValueError, match="sense must be one of"):
        solve_block(Network.mlp([2, 3, 1]), BOX, "minimum")
