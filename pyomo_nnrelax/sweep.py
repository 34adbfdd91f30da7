"""Deprecated alias of :mod:`pyomo_nnrelax.experiments.sweep` (the 0.1 module name), kept so
that code written for it keeps working."""

import warnings

from .experiments.data import read_data, split_data
from .experiments.plots import pareto_mask
from .experiments.sweep import RunConfig, grid, run_config, run_sweep
from .training.regularizers import parse_regularizer

__all__ = [
    "RunConfig",
    "grid",
    "pareto_mask",
    "parse_regularizer",
    "read_data",
    "run_config",
    "run_sweep",
    "split_data",
]

warnings.warn(
    "pyomo_nnrelax.sweep is a deprecated alias: import from pyomo_nnrelax.experiments.sweep",
    DeprecationWarning,
    stacklevel=2,
)
