"""Checks of scalar arguments shared by the trainer, the regularizers and the samplers."""

from __future__ import annotations

import numpy as np


def positive_int(name: str, value, allow_zero: bool = False) -> int:
    """``value`` as an int, after checking it is an integer >= 1 (>= 0 with ``allow_zero``)."""
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def positive_float(name: str, value, allow_zero: bool = False) -> float:
    """``value`` as a float, after checking it is finite and > 0 (>= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)
