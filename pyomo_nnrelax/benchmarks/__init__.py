"""Benchmark functions and sampling for the training experiments (method.md section 4)."""

from .functions import ackley, box, himmelblau, latin_hypercube, peaks

__all__ = ["ackley", "box", "himmelblau", "latin_hypercube", "peaks"]
