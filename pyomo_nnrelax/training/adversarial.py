"""Adversarial training: each mini-batch replaced by its worst points in small L-infinity
balls, found by projected gradient ascent on the loss (PGD; Madry et al. 2018, as Xiao et al.
2019 train verifiable networks).  The input's gradient comes from the trainer's own backward
pass (:func:`~pyomo_nnrelax.training.backprop.input_gradient`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..box import ball_ends
from ..checks import positive_float, positive_int
from ..network import Layer, forward_cache
from .backprop import input_gradient
from .losses import Loss


@dataclass(frozen=True)
class PGD:
    """Projected gradient ascent in each sample's L-infinity ball of radius ``eps``,
    clipped to the input box: ``steps`` signed steps of ``step_size`` from a uniform random
    start in the ball (Xiao et al. 2019: eps 0.1, 8 steps of 0.03 on MNIST).

    >>> PGD(eps=0.1)
    PGD(eps=0.1, steps=8, step_size=0.03)
    """

    eps: float
    steps: int = 8
    step_size: float = 0.03

    def __post_init__(self) -> None:
        positive_float("eps", self.eps)
        positive_int("steps", self.steps)
        positive_float("step_size", self.step_size)

    def attack(
        self,
        layers: Sequence[Layer],
        X: np.ndarray,
        y: np.ndarray,
        loss: Loss,
        lower: np.ndarray | None,
        upper: np.ndarray | None,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Points of the clipped balls around the rows of ``X`` with a high ``loss``."""
        lo, hi = ball_ends(X, self.eps, lower, upper)
        x = lo + (hi - lo) * rng.random(X.shape)
        for _ in range(self.steps):
            out, inputs, pre = forward_cache(layers, x)
            d_out = loss(out, y)[1]
            x = np.clip(
                x + self.step_size * np.sign(input_gradient(layers, inputs, pre, d_out)), lo, hi
            )
        return x
