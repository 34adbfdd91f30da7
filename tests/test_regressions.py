"""Regression tests: each one a bug found by an audit or shrunk by hypothesis
(``tests/test_properties.py``), kept as an ordinary test with the bug named in its docstring."""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import Network, NNBlock


def _violation(con) -> float:
    """How far a constraint's body lies outside its bounds at the current values."""
    body = pyo.value(con.body)
    lo = -np.inf if con.lower is None else pyo.value(con.lower)
    hi = np.inf if con.upper is None else pyo.value(con.upper)
    return max(lo - body, body - hi, 0.0)


# ---------------------------------------------------------------- F1: start values at build
@pytest.mark.parametrize("formulation", ["bigm", "partition"])
@pytest.mark.parametrize("relax", [False, True])
def test_every_block_variable_has_a_feasible_value_right_after_build(formulation, relax):
    """F1: variables were None until ``warm_start()`` or a solve, so ``value()`` before a solve
    failed and solvers reading warm starts got nothing.  Now they hold the forward pass at the
    centre of the box, which satisfies every row of the formulation."""
    net = Network.mlp([2, 4, 3, 1], seed=7)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=[(-1, 3), (-2, 0)], formulation=formulation, relax=relax)
    variables = list(m.nn.component_data_objects(pyo.Var))
    assert variables and all(v.value is not None for v in variables)
    np.testing.assert_array_equal(m.nn.input_values(), [1.0, -1.0])
    np.testing.assert_allclose(m.nn.output_values(), net.forward([[1.0, -1.0]])[0], atol=1e-12)
    worst = max(_violation(c) for c in m.nn.component_data_objects(pyo.Constraint))
    assert worst <= 1e-9
    assert all(v.lb - 1e-9 <= v.value <= v.ub + 1e-9 for v in variables)
