"""Deprecated alias of :mod:`pyomo_nnrelax.experiments.functions`."""

from ..experiments.functions import ackley, box, himmelblau, latin_hypercube, peaks

__all__ = ["ackley", "box", "himmelblau", "latin_hypercube", "peaks"]
