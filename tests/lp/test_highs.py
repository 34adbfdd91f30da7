"""The HiGHS wrapper: values and duals of an LP, a MILP with its dual bound, costs changed in
place, and a basis kept across a reload."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import Network, interval_bounds
from pyomo_nnrelax.formulations.bigm import bigm_model
from pyomo_nnrelax.formulations.matrix_model import MatrixModelBuilder
from pyomo_nnrelax.lp.highs import HighsModel


def lp(rhs: float = 4.0, integer: bool = False):
    """min -x - 2y  s.t.  x + y <= rhs,  x - y >= -1,  0 <= x, y <= 3."""
    builder = MatrixModelBuilder()
    v = builder.add_vars("v", [0.0, 0.0], [3.0, 3.0], integer=integer)
    builder.add_rows("cap", [(v, np.array([[1.0, 1.0]]))], -np.inf, rhs)
    builder.add_rows("gap", [(v, np.array([[1.0, -1.0]]))], -1.0, np.inf)
    return builder.build()


def test_lp_value_point_and_duals_as_derivatives():
    model = HighsModel(lp(4.0), relax=True)
    model.set_objective(np.array([0, 1]), np.array([-1.0, -2.0]))
    result = model.solve()
    assert result.optimal and result.status == "Optimal"
    assert result.objective == pytest.approx(-6.5)  # x + y = 4 and x - y = -1: (1.5, 2.5)
    np.testing.assert_allclose(result.x, [1.5, 2.5])
    step = 1e-3  # the cap row's dual is d objective / d rhs
    moved = HighsModel(lp(4.0 + step), relax=True)
    moved.set_objective(np.array([0, 1]), np.array([-1.0, -2.0]))
    assert result.row_dual[0] == pytest.approx((moved.solve().objective + 6.5) / step)
    assert result.row_dual[0] == pytest.approx(-1.5)  # the optimum moves to (1.5 + h/2, 2.5 + h/2)


def test_a_milp_reports_its_incumbent_and_a_proven_bound():
    model = HighsModel(lp(4.5, integer=True))
    model.set_objective(np.array([0, 1]), np.array([-1.0, -2.0]))
    result = model.solve()
    assert result.optimal and result.objective == pytest.approx(-6.0)  # integers: (2, 2)
    assert result.bound == pytest.approx(-6.0) and result.row_dual is None
    relaxed = HighsModel(lp(4.5, integer=True), relax=True)
    relaxed.set_objective(np.array([0, 1]), np.array([-1.0, -2.0]))
    assert relaxed.solve().objective == pytest.approx(-7.25)  # (1.75, 2.75)


def test_costs_and_bounds_change_in_place_and_sense_flips():
    model = HighsModel(lp(), relax=True)
    model.set_objective(np.array([0]), np.array([1.0]), sense="max")
    assert model.solve().objective == pytest.approx(3.0)  # x at its upper bound
    model.set_col_bounds(np.array([0]), 0.0, 1.0)
    assert model.solve().objective == pytest.approx(1.0)


def test_a_reload_with_the_same_layout_keeps_the_basis():
    net = Network.mlp([2, 20, 20, 1], seed=0)
    bounds = interval_bounds(net, [(-1, 1), (-1, 1)])
    first = bigm_model(net, bounds, relax=True)
    model = HighsModel(first, relax=True)
    cols = first.cols("outputs")
    model.set_objective(cols, np.ones(cols.size))
    model.solve()
    cold = model.highs.getInfo().simplex_iteration_count
    model.load(first, keep_basis=True)
    model.set_objective(cols, np.ones(cols.size))
    model.solve()
    assert model.highs.getInfo().simplex_iteration_count < max(cold, 1)


def test_the_threads_option_is_refused_with_the_reason():
    """A ``threads`` count differing from the process's HiGHS thread pool makes every later
    solve return "Not Set" with no solution; HighsModel refuses the option instead."""
    builder = MatrixModelBuilder()
    x = builder.add_vars("x", np.zeros(2), 1.0)
    builder.add_rows("r", [(x, np.ones(2))], 1.0, 2.0)
    with pytest.raises(ValueError, match="thread pool"):
        HighsModel(builder.build(), threads=1)
