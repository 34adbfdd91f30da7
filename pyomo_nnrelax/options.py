"""Every option list of the package, once: a ``Literal`` type per option and its checker.

>>> check_option("sense", "max", SENSES)
'max'
>>> check_option("sense", "maximise", SENSES)
Traceback (most recent call last):
...
ValueError: sense must be one of ('min', 'max'), got 'maximise'
"""

from __future__ import annotations

from typing import Literal, get_args

Sense = Literal["min", "max"]
"""Optimisation sense of a MILP or LP."""
GapSense = Literal["min", "max", "both"]
"""Which LP gap a regularizer closes: below the network (min), above it (max), or both."""
LPBackend = Literal["highs", "pyomo"]
"""How LP relaxations at fixed inputs are solved: the projected LP in highspy, or the block's
big-M LP through a Pyomo solver."""
GapMethod = Literal["dual_network", "exact_lp"]
"""How the LP-gap regularizer gets the LP relaxation's value: the dual-network bound (no LP
solver; the default everywhere), or solving the LP exactly."""
BoundMethod = Literal["interval", "lp", "milp", "stored"]
"""How pre-activation bounds are obtained."""
TighteningMethod = Literal["lp", "milp"]
"""What bound tightening solves per neuron."""
FormulationName = Literal["bigm", "partition"]
"""MILP formulations of ReLU neurons."""
SplitStrategy = Literal["equal_size", "equal_range", "random"]
"""How the partition formulation splits a neuron's inputs."""
LossName = Literal["mse", "pinball", "cross_entropy"]
"""Prediction losses of the trainer (the last for classifiers: one logit per class)."""
LossReference = Literal["start", "unregularized"]
"""What a refinement's loss budget is relative to: the starting network, or an unregularized
training of it."""

SENSES: tuple[str, ...] = get_args(Sense)
GAP_SENSES: tuple[str, ...] = get_args(GapSense)
LP_BACKENDS: tuple[str, ...] = get_args(LPBackend)
GAP_METHODS: tuple[str, ...] = get_args(GapMethod)
BOUND_METHODS: tuple[str, ...] = get_args(BoundMethod)
TIGHTENING_METHODS: tuple[str, ...] = get_args(TighteningMethod)
FORMULATIONS: tuple[str, ...] = get_args(FormulationName)
SPLIT_STRATEGIES: tuple[str, ...] = get_args(SplitStrategy)
LOSSES: tuple[str, ...] = get_args(LossName)
LOSS_REFERENCES: tuple[str, ...] = get_args(LossReference)


def check_option(name: str, value, allowed: tuple[str, ...]):
    """``value`` itself, after checking it is one of ``allowed`` (ValueError naming both)."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value
