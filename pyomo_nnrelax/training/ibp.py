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

__all__ = ["IBPTrace", "ibp_backward", "ibp_backward_stacked", "ibp_forward"]


def ibp_backward(
    layers: Sequence[Layer],
    trace: IBPTrace,
    seed_lower: Sequence[np.ndarray | None],
    seed_upper: Sequence[np.ndarray | None],
) -> Grads:
    """Gradient of ``sum_l seed_lower[l] . L^l + seed_upper[l] . U^l`` w.r.t. (W^l, b^l).

    ``seed_*[l]`` may be None for layers without a seed.  At the kinks (W = 0, or a bound
    exactly 0 before a ReLU) one valid subgradient is taken: the negative-weight branch and a
    zero ReLU slope.
    """
    seeds = []
    for layer, lo, hi in zip(layers, seed_lower, seed_upper):
        if lo is None and hi is None:
            seeds.append(None)
            continue
        zero = np.zeros(layer.n_out)
        seeds.append(np.stack([zero if lo is None else lo, zero if hi is None else hi]))
    return ibp_backward_stacked(layers, trace, seeds)


def ibp_backward_stacked(
    layers: Sequence[Layer], trace: IBPTrace, seeds: Sequence[np.ndarray | None]
) -> Grads:
    """:func:`ibp_backward` with the seeds of both ends stacked, ``seeds[l] = [g_L; g_U]``
    (2, n_out_l) or None.

    The seeds travel together as ``G = [g_L; g_U]``: ``dR/dW`` is ``G' [lh; uh]`` on
    positive weights and ``G' [uh; lh]`` on the others, and the seeds of the layer below are
    ``G W+`` plus ``G W-`` with its rows swapped (docs/method.md, section 4).
    """
    grads: Grads = []
    g = np.zeros((2, layers[-1].n_out))
    for l in range(len(layers) - 1, -1, -1):
        if seeds[l] is not None:
            g = g + seeds[l]
        h = trace.inputs[l]
        d_weight = np.where(trace.w_pos[l] > 0.0, g.T @ h, g.T @ h[::-1])
        grads.append((d_weight, g[0] + g[1]))
        if l == 0:
            break
        g = g @ trace.w_pos[l] + (g @ trace.w_neg[l])[::-1]
        if layers[l - 1].has_relu:
            g = g * layers[l - 1].passes(trace.pre[l - 1])
    return grads[::-1]
