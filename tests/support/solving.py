"""Solving a test model that must reach a proven optimum."""

from __future__ import annotations

import pyomo.environ as pyo


def solve_optimal(model: pyo.ConcreteModel, solver: str = "highs", **options) -> None:
    """Solve ``model`` with ``solver`` (HiGHS options as keywords) and assert optimality."""
    kwargs = {"options": options} if options else {}
    result = pyo.SolverFactory(solver).solve(model, **kwargs)
    condition = result.solver.termination_condition
    assert condition == pyo.TerminationCondition.optimal, condition
