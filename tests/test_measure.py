"""Difficulty measurements through the block: counts, LP gap, MILP statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyomo_nnrelax import Network, interval_bounds
from pyomo_nnrelax.experiments.measure import difficulty, solve_block

BOX = [(-2.0, 2.0), (-2.0, 2.0)]


def test_difficulty_counts_unstable_neurons_and_measures_the_lp_gap():
    net = Network.mlp([2, 10, 10, 1], seed=0)
    d = difficulty(net, BOX, "min", milp_time_limit=60)
    assert d.unstable == interval_bounds(net, BOX).unstable_count(net)
    assert d.milp is not None and d.milp.optimal
    grid = np.stack(np.meshgrid(*[np.linspace(-2, 2, 201)] * 2), -1).reshape(-1, 2)
    assert d.milp.objective <= net.forward(grid).min() + 1e-9
    assert d.lp_value <= d.milp.objective + 1e-9
    assert d.lp_gap == pytest.approx(d.milp.objective - d.lp_value)


def test_maximisation_gap_is_non_negative_and_matches_sampling():
    net = Network.mlp([2, 8, 8, 1], seed=3)
    d = difficulty(net, BOX, "max", milp_time_limit=60)
    grid = np.stack(np.meshgrid(*[np.linspace(-2, 2, 201)] * 2), -1).reshape(-1, 2)
    assert d.milp.objective >= net.forward(grid).max() - 1e-9
    assert d.lp_value >= d.milp.objective - 1e-9
    assert d.lp_gap == pytest.approx(d.lp_value - d.milp.objective)


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
    from pyomo_nnrelax.experiments.measure import solve_model

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
