"""Interval bound propagation with a reverse pass.

IBP bounds are piecewise linear in the weights and biases, so bound-based regularizers get
exact (sub)gradients from one reverse sweep: seed ``dR/dL^l`` and ``dR/dU^l`` per layer and
read off ``dR/dW^l`` and ``dR/db^l`` (method.md section 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..bounds import NetworkBounds, affine_interval
from ..network import Layer
from .backprop import Grads


@dataclass(frozen=True)
class IBPTrace:
    """IBP bounds of every layer and the post-activation bounds they were computed from.

    Attributes
    ----------
    lower, upper : list of ndarray
        Pre-activation bounds ``L^l``, ``U^l`` of layer ``l``.
    in_lower, in_upper : list of ndarray
        Bounds of the input of layer ``l`` (``lh^(l-1)``, ``uh^(l-1)``; the box for l = 0).
    """

    lower: list[np.ndarray]
    upper: list[np.ndarray]
    in_lower: list[np.ndarray]
    in_upper: list[np.ndarray]

    def to_bounds(self) -> NetworkBounds:
        """The bounds as a :class:`NetworkBounds` (method "interval")."""
        return NetworkBounds(
            self.in_lower[0], self.in_upper[0], tuple(self.lower), tuple(self.upper), "interval"
        )


def ibp_forward(layers: Sequence[Layer], lower: np.ndarray, upper: np.ndarray) -> IBPTrace:
    """IBP over the box ``[lower, upper]``, keeping what :func:`ibp_backward` needs."""
    h_lo, h_hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    trace = IBPTrace([], [], [], [])
    for layer in layers:
        z_lo, z_hi = affine_interval(layer.weight, h_lo, h_hi)
        z_lo, z_hi = z_lo + layer.bias, z_hi + layer.bias
        trace.in_lower.append(h_lo)
        trace.in_upper.append(h_hi)
        trace.lower.append(z_lo)
        trace.upper.append(z_hi)
        if layer.activation == "relu":
            h_lo, h_hi = np.maximum(z_lo, 0.0), np.maximum(z_hi, 0.0)
        else:
            h_lo, h_hi = z_lo, z_hi
    return trace


def ibp_backward(
    layers: Sequence[Layer],
    trace: IBPTrace,
    seed_lower: Sequence[np.ndarray | None],
    seed_upper: Sequence[np.ndarray | None],
) -> Grads:
    """Gradient of ``sum_l seed_lower[l] . L^l + seed_upper[l] . U^l`` w.r.t. (W^l, b^l).

    ``seed_*[l]`` may be None for layers without a seed.  At the kinks (W = 0, or a bound
    exactly 0 before a ReLU) one valid subgradient is taken: the positive-weight branch and a
    zero ReLU slope.
    """
    grads: Grads = []
    g_lo = np.zeros(layers[-1].n_out)
    g_hi = np.zeros(layers[-1].n_out)
    for l in range(len(layers) - 1, -1, -1):
        layer = layers[l]
        if seed_lower[l] is not None:
            g_lo = g_lo + seed_lower[l]
        if seed_upper[l] is not None:
            g_hi = g_hi + seed_upper[l]
        positive = layer.weight > 0.0
        h_lo, h_hi = trace.in_lower[l], trace.in_upper[l]
        d_weight = np.where(
            positive,
            np.outer(g_lo, h_lo) + np.outer(g_hi, h_hi),
            np.outer(g_lo, h_hi) + np.outer(g_hi, h_lo),
        )
        grads.append((d_weight, g_lo + g_hi))
        if l == 0:
            break
        w_pos, w_neg = np.maximum(layer.weight, 0.0), np.minimum(layer.weight, 0.0)
        gh_lo = w_pos.T @ g_lo + w_neg.T @ g_hi
        gh_hi = w_neg.T @ g_lo + w_pos.T @ g_hi
        if layers[l - 1].activation == "relu":
            gh_lo = gh_lo * (trace.lower[l - 1] > 0.0)
            gh_hi = gh_hi * (trace.upper[l - 1] > 0.0)
        g_lo, g_hi = gh_lo, gh_hi
    return grads[::-1]
