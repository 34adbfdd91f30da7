"""Deprecated alias of :mod:`pyomo_nnrelax.experiments.measure` (the 0.1 module name), kept so
that code written for it keeps working."""

import warnings

from .experiments.measure import (
    Difficulty,
    SolveStats,
    difficulty,
    objective_expression,
    solve_block,
    solve_model,
)

__all__ = [
    "Difficulty",
    "SolveStats",
    "difficulty",
    "objective_expression",
    "solve_block",
    "solve_model",
]

warnings.warn(
    "pyomo_nnrelax.measure is a deprecated alias: import from pyomo_nnrelax.experiments.measure",
    DeprecationWarning,
    stacklevel=2,
)
