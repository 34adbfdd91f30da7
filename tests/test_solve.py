"""Solving a model with a named solver: checks before solving, the best known point at a
limit, and Ctrl-C that stops HiGHS instead of being lost."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import Network, NNBlock, SolverError
from pyomo_nnrelax.solve import check_solver, solve_model

BOX = [(-2.0, 2.0), (-2.0, 2.0)]


def model(net: Network, sense=pyo.minimize) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=BOX)
    m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=sense)
    return m


def test_unknown_and_unavailable_solvers_are_refused_before_solving():
    from pyomo.contrib.solver.common.factory import SolverFactory

    with pytest.raises(ValueError, match=r"unknown solver 'nope'.*'highs'"):
        check_solver("nope")
    assert check_solver("highs").contrib and not check_solver("appsi_highs").contrib
    if SolverFactory("gurobi_direct").available():
        pytest.skip("gurobipy with a licence is installed here")
    with pytest.raises(SolverError, match="'gurobi_direct' is not available here"):
        check_solver("gurobi_direct")


@pytest.mark.parametrize("sense", [pyo.minimize, pyo.maximize])
def test_a_solve_stopped_early_reports_a_feasible_point_its_bound_and_gap(sense):
    net = Network.mlp([2, 40, 40, 40, 1], seed=0)
    m = model(net, sense)
    stats = solve_model(m, time_limit=0.3, load=True, start=m.nn)
    assert not stats.optimal and stats.status == "maxTimeLimit"
    assert stats.incumbent in ("solver", "start") and math.isfinite(stats.objective)
    x = m.nn.input_values()
    assert stats.objective == pytest.approx(net.forward(x)[0, 0], abs=1e-6)
    assert m.nn.check().max_abs_error < 1e-6
    sign = 1.0 if sense == pyo.minimize else -1.0
    assert sign * (stats.objective - stats.bound) >= -1e-9
    assert stats.gap == pytest.approx(abs(stats.objective - stats.bound))


def test_the_start_respects_a_constraint_of_the_model_on_the_inputs():
    """The warm start satisfies the user's own row on the block's inputs; when it is the
    point reported, the loaded values satisfy it."""
    net = Network.mlp([2, 40, 40, 40, 1], seed=0)
    m = model(net)
    m.side = pyo.Constraint(expr=m.nn.inputs[0] + m.nn.inputs[1] >= 3.99)
    start = m.nn.warm_start()
    assert start.sum() >= 3.99 - 1e-6 and np.all(np.abs(start) <= 2.0)
    stats = solve_model(m, time_limit=0.05, load=True, start=m.nn)
    assert stats.incumbent in ("solver", "start")
    assert m.nn.input_values().sum() >= 3.99 - 1e-6
    assert stats.objective == pytest.approx(net.forward(m.nn.input_values())[0, 0], abs=1e-6)


def test_a_start_that_breaks_the_model_is_not_reported():
    """No sampled point and not the LP relaxation's reaches outputs this low: the start the
    block falls back to breaks the row, and is never the point reported."""
    net = Network.mlp([2, 40, 40, 40, 1], seed=0)
    m = model(net)
    X = np.random.default_rng(0).uniform(-2, 2, (4096, 2))
    low = float(net.forward(X).min()) - 0.5
    m.side = pyo.Constraint(expr=m.nn.outputs[0] <= low)
    start = m.nn.warm_start()
    assert net.forward(start[None])[0, 0] > low  # the start breaks the row
    try:
        stats = solve_model(m, time_limit=0.05, load=True, start=m.nn)
    except SolverError:  # HiGHS proved the row unreachable: nothing reported at all
        return
    assert stats.incumbent != "start"


def test_a_solved_model_reports_the_solvers_optimum():
    net = Network.mlp([2, 8, 8, 1], seed=2)
    m = model(net)
    stats = solve_model(m, load=True, start=m.nn)
    assert stats.optimal and stats.incumbent == "solver"
    grid = np.stack(np.meshgrid(*[np.linspace(-2, 2, 101)] * 2), -1).reshape(-1, 2)
    assert stats.objective <= net.forward(grid).min() + 1e-9


@pytest.mark.slow
def test_ctrl_c_stops_a_highs_solve_and_raises_keyboard_interrupt(tmp_path):
    script = tmp_path / "long_solve.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal, sys, time
            import pyomo.environ as pyo

            # Ctrl-C as in a terminal, even when the test runner was started with SIGINT
            # ignored (a background job of a non-interactive shell), which children inherit
            signal.signal(signal.SIGINT, signal.default_int_handler)
            from pyomo_nnrelax import NNBlock, Network
            from pyomo_nnrelax.solve import solve_model

            m = pyo.ConcreteModel()
            m.nn = NNBlock(Network.mlp([2, 40, 40, 40, 1], seed=0), input_bounds=[(-2, 2)] * 2)
            m.obj = pyo.Objective(expr=m.nn.outputs[0])
            print("solving", flush=True)
            try:
                solve_model(m, time_limit=120)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "solving"
    time.sleep(2.0)
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert "interrupted" in out, err
    assert time.perf_counter() - sent < 30


def test_a_start_with_a_fractional_integer_variable_is_not_feasible():
    from pyomo_nnrelax.solve import _feasible

    m = pyo.ConcreteModel()
    m.b = pyo.Var(within=pyo.Binary)
    m.b.set_value(0.5, skip_validation=True)
    assert not _feasible(m)
    m.b.set_value(1.0)
    assert _feasible(m)


def test_a_node_limited_solve_reports_its_incumbent_bound_and_gap_not_an_optimum():
    """HiGHS stopped after its first branch-and-bound node (``mip_max_nodes``: the same stop on
    any machine) holds an incumbent that is not the optimum: it is reported as the solver's
    point, with a finite bound below the optimum and a positive gap, and not optimal."""
    net = Network.mlp([2, 10, 10, 1], seed=1)
    optimum = solve_model(model(net), load=False)
    assert optimum.optimal
    m = model(net)
    stats = solve_model(m, load=True, options={"mip_max_nodes": 1})
    assert stats.status == "iterationLimit" and stats.nodes == 1
    assert not stats.optimal and stats.incumbent == "solver"
    assert math.isfinite(stats.bound) and math.isfinite(stats.objective)
    assert stats.bound <= optimum.objective + 1e-9 < stats.objective - 1e-3  # not the optimum
    assert stats.gap == pytest.approx(stats.objective - stats.bound) and stats.gap > 1e-3
    assert stats.objective == pytest.approx(net.forward(m.nn.input_values())[0, 0], abs=1e-6)
    assert not stats.check_failed and stats.check_error <= stats.check_tolerance


def test_solver_options_reach_a_legacy_solver_too():
    m = model(Network.mlp([2, 10, 10, 1], seed=1))
    stats = solve_model(m, solver="appsi_highs", options={"mip_max_nodes": 1})
    assert not stats.optimal and stats.incumbent == "solver"
    with pytest.raises(TypeError, match="options must be a dict"):
        solve_model(m, options=[("mip_max_nodes", 1)])
