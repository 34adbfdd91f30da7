"""Deprecated alias of :mod:`pyomo_nnrelax.lp.tightening` (the 0.1 module name), kept so that
code written for it keeps working; use ``pyomo_nnrelax.tighten_bounds`` instead."""

from .lp.tightening import METHODS, tighten_bounds

__all__ = ["METHODS", "tighten_bounds"]
