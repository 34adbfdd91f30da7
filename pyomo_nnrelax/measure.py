"""Deprecated alias of :mod:`pyomo_nnrelax.experiments.measure` (the 0.1 module name), kept so
that code written for it keeps working."""

import warnings

from .experiments.measure import *  # noqa: F403
from .experiments.measure import __all__  # noqa: F401

warnings.warn(
    "pyomo_nnrelax.measure is a deprecated alias: import from pyomo_nnrelax.experiments.measure",
    DeprecationWarning,
    stacklevel=2,
)
