"""Deprecated alias of :mod:`pyomo_nnrelax.experiments.refine` (0.1's place for the refinement
loop, which measures through Pyomo and so does not belong in the numpy-only trainer)."""

import warnings

from ..experiments.refine import RefineHistory, RefineResult, refine

__all__ = ["RefineHistory", "RefineResult", "refine"]

warnings.warn(
    "pyomo_nnrelax.training.refine is a deprecated alias: import from "
    "pyomo_nnrelax.experiments.refine",
    DeprecationWarning,
    stacklevel=2,
)
