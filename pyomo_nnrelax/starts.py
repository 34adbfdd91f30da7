"""Starting points for a block that respect the user's model (``NNBlock.warm_start``).

A start is one forward pass per copy, so the block's own rows hold exactly; what can break
are the model's other constraints on the block's inputs and outputs (``x0 + x1 >= -3``, a
ramp between periods).  :func:`best_sample` picks, among sampled inputs of one copy, the
best for the model's objective of those that satisfy every constraint it can evaluate from
the block's inputs and outputs alone; :func:`relaxation_inputs` takes the inputs of the LP
relaxation of the whole model, which satisfy every linear constraint on them at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.visitor import identify_variables

from .errors import SolverError
from .solve import solve_model

FEASIBILITY = 1e-6
"""How far a sampled start may break a constraint and still count as satisfying it."""


def evaluable_constraints(block: pyo.Block, variables: Sequence) -> list:
    """The active constraints of ``block``'s model outside the block whose every variable is
    one of ``variables`` (the block's inputs and outputs) or fixed."""
    known = {id(v) for v in variables}
    inside = {id(c) for c in block.component_data_objects(pyo.Constraint, active=True)}
    found = []
    for con in block.model().component_data_objects(pyo.Constraint, active=True):
        if id(con) in inside:
            continue
        if all(id(v) in known or v.fixed for v in identify_variables(con.body)):
            found.append(con)
    return found


def best_sample(
    inputs: Sequence, outputs: Sequence, X: np.ndarray, Y: np.ndarray, constraints: Sequence
) -> int | None:
    """The row of ``X`` whose forward pass ``Y``, set into ``inputs`` and ``outputs`` for a
    moment, satisfies ``constraints`` and gives the best value of the model's one active
    objective (the first satisfying row when the objective cannot be evaluated from them);
    None when no row satisfies them."""
    variables = [*inputs, *outputs]
    model = variables[0].model()
    objectives = list(model.component_data_objects(pyo.Objective, active=True))
    objective = objectives[0] if len(objectives) == 1 else None
    sign = 1.0 if objective is None or objective.sense == pyo.minimize else -1.0
    saved = [v.value for v in variables]
    best, best_value = None, math.inf
    try:
        for row, point in enumerate(np.hstack([X, Y]).tolist()):
            for var, value in zip(variables, point):
                var.set_value(value, skip_validation=True)
            if not all(_holds(con) for con in constraints):
                continue
            value = None if objective is None else pyo.value(objective.expr, exception=False)
            if value is None:
                return row if best is None else best
            if sign * value < best_value:
                best, best_value = row, sign * value
    finally:
        for var, value in zip(variables, saved):
            var.set_value(value, skip_validation=True)
    return best


def relaxation_inputs(block: pyo.Block, input_keys: Sequence) -> np.ndarray | None:
    """The values the LP relaxation of ``block``'s whole model gives the block's inputs
    (keys of ``block.inputs``), or None when that LP has no optimum."""
    model = block.model()
    relaxed = model.clone()
    pyo.TransformationFactory("core.relax_integer_vars").apply_to(relaxed)
    copy = relaxed.find_component(block.name) if block is not model else relaxed
    try:
        stats = solve_model(relaxed, load=True)
    except SolverError:  # no feasible point: no start from it
        return None
    if not stats.optimal and stats.incumbent == "none":
        return None
    values = [copy.inputs[key].value for key in input_keys]
    if any(v is None for v in values):
        return None
    return np.asarray(values, dtype=np.float64)


def _holds(con) -> bool:
    body = pyo.value(con.body, exception=False)
    if body is None:
        return False
    lower, upper = pyo.value(con.lower), pyo.value(con.upper)
    return (lower is None or body >= lower - FEASIBILITY) and (
        upper is None or body <= upper + FEASIBILITY
    )
