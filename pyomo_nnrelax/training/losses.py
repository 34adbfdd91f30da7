"""Prediction losses: value and gradient with respect to the network's outputs.

The regression losses average over samples and outputs, so their scale does not depend on
the batch size or the number of outputs and ``lam`` keeps one meaning across problems; the
classification loss averages over samples (its outputs are one logit per class).
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


@dataclass(frozen=True)
class CrossEntropyLoss:
    """Softmax cross-entropy of a classifier: the outputs are one logit per class and ``y``
    (n, 1) holds each sample's class index, ``0 .. n_outputs - 1``; averaged over samples.

    >>> value, grad = CrossEntropyLoss()(np.array([[0.0, 0.0]]), np.array([[1]]))
    >>> round(value, 6), grad.round(3).tolist()
    (0.693147, [[0.5, -0.5]])
    """

    def __call__(self, pred: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        labels = np.asarray(y).reshape(-1).astype(np.int64)
        shifted = pred - pred.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        rows = np.arange(len(labels))
        value = float(np.mean(log_norm - shifted[rows, labels]))
        grad = np.exp(shifted - log_norm[:, None])
        grad[rows, labels] -= 1.0
        return value, grad / len(labels)
