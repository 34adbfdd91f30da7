"""What the optimiser updates: each layer's free parameters and bias.

A layer without a :class:`~pyomo_nnrelax.ties.WeightTie` is trained entry by entry; a tied
one (a convolution, a skip path, the rows a LeakyReLU or a clip is folded into) through its
shared parameters, so training keeps the structure the network was read with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..network import Layer
from .backprop import Grads


def parameters(layers: Sequence[Layer]) -> list[np.ndarray]:
    """``[theta_0, b_0, theta_1, b_1, ...]``: a tied layer's parameters, else its entries; a
    tied bias's parameters, else the bias."""
    out = []
    for layer in layers:
        theta = layer.entries if layer.tie is None else layer.tie.parameters(layer.entries)
        beta = layer.bias if layer.bias_tie is None else layer.bias_tie.parameters(layer.bias)
        out += [theta, beta]
    return out


def parameter_grads(layers: Sequence[Layer], grads: Grads) -> list[np.ndarray]:
    """The gradients of :func:`parameters` from the gradients of every (weight, bias)."""
    out = []
    for layer, (d_weight, d_bias) in zip(layers, grads):
        out.append(d_weight if layer.tie is None else layer.tie.gradient(d_weight))
        out.append(d_bias if layer.bias_tie is None else layer.bias_tie.gradient(d_bias))
    return out


def with_parameters(layers: Sequence[Layer], params: Sequence[np.ndarray]) -> tuple[Layer, ...]:
    """The layers with new :func:`parameters` (fixed entries of a tie are kept)."""
    out = []
    for i, layer in enumerate(layers):
        theta, bias = params[2 * i], params[2 * i + 1]
        if layer.bias_tie is not None:
            bias = layer.bias_tie.weight(bias)
        if layer.tie is None:
            out.append(layer.with_entries(theta, bias))
        else:
            out.append(layer.with_tied_parameters(theta, bias))
    return tuple(out)
