"""Deprecated alias of :mod:`pyomo_nnrelax.experiments.functions` (0.1's name, which clashed
with the repository's ``benchmarks/`` scripts); kept so that code written for it keeps working."""

import warnings

from ..experiments.functions import ackley, box, himmelblau, latin_hypercube, peaks

__all__ = ["ackley", "box", "himmelblau", "latin_hypercube", "peaks"]

warnings.warn(
    "pyomo_nnrelax.benchmarks is a deprecated alias: import from "
    "pyomo_nnrelax.experiments.functions",
    DeprecationWarning,
    stacklevel=2,
)
