"""Deprecated alias of :mod:`pyomo_nnrelax.lp.tightening` (the 0.1 module name), kept so that
code written for it keeps working; use ``pyomo_nnrelax.tighten_bounds`` instead."""

import warnings

from .lp.tightening import tighten_bounds
from .options import TIGHTENING_METHODS as METHODS

__all__ = ["METHODS", "tighten_bounds"]

warnings.warn(
    "pyomo_nnrelax.tightening is a deprecated alias: import from pyomo_nnrelax.lp.tightening",
    DeprecationWarning,
    stacklevel=2,
)
