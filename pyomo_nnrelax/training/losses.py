"""Prediction losses: value and gradient with respect to the network's outputs.

Both losses average over samples and outputs, so their scale does not depend on the batch
size or the number of outputs and ``lam`` keeps one meaning across problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Loss(Protocol):
    """A prediction loss ``(pred, y) -> (value, d value / d pred)``.

    ``pred`` is (n, n_outputs); ``y`` is (n, n_outputs) or (n, 1) (broadcast over outputs).
    """

    def __call__(self, pred: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]: ...


@dataclass(frozen=True)
class MSELoss:
    """Mean squared error over samples and outputs."""

    def __call__(self, pred: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        residual = pred - y
        return float(np.mean(residual**2)), 2.0 * residual / residual.size


@dataclass(frozen=True)
class PinballLoss:
    """Pinball (quantile) loss, output ``k`` estimating quantile ``quantiles[k]`` of ``y``.

    ``rho_tau(r) = max(tau r, (tau - 1) r)`` with ``r = y - pred``, averaged over samples and
    outputs.  A single target column is shared by all outputs (K quantiles of one quantity).
    """

    quantiles: tuple[float, ...]

    def __init__(self, quantiles: Sequence[float]) -> None:
        object.__setattr__(self, "quantiles", tuple(float(q) for q in quantiles))

    def __call__(self, pred: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        tau = np.asarray(self.quantiles)
        residual = np.broadcast_to(y, pred.shape) - pred
        above = residual > 0.0
        value = np.where(above, tau * residual, (tau - 1.0) * residual)
        d_pred = np.where(above, -tau, 1.0 - tau) / residual.size
        return float(np.mean(value)), d_pred
