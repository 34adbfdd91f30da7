"""The reverse pass of interval bound propagation (the forward pass is
:func:`pyomo_nnrelax.bounds.ibp_forward`).

IBP bounds are piecewise linear in the weights and biases, so bound-based regularizers get
exact (sub)gradients from one reverse sweep: seed ``dR/dL^l`` and ``dR/dU^l`` per layer and
read off ``dR/dW^l`` and ``dR/db^l`` (docs/method.md, section 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..bounds import IBPTrace, ibp_forward
from ..network import Layer
from .backprop import Grads

__all__ = ["IBPTrace", "ibp_backward", "ibp_forward"]


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
