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
    """``[theta_0, b_0, theta_1, b_1, ...]``: a tied layer's parameters, else its weight."""
    out = []
    for layer in layers:
        theta = layer.weight if layer.tie is None else layer.tie.parameters(layer.weight)
        out += [theta, layer.bias]
    return out


def parameter_grads(layers: Sequence[Layer], grads: Grads) -> list[np.ndarray]:
    """The gradients of :func:`parameters` from the gradients of every (weight, bias)."""
    return [
        g
        for layer, (d_weight, d_bias) in zip(layers, grads)
        for g in (d_weight if layer.tie is None else layer.tie.gradient(d_weight), d_bias)
    ]


def with_parameters(layers: Sequence[Layer], params: Sequence[np.ndarray]) -> tuple[Layer, ...]:
    """The layers with new :func:`parameters` (fixed entries of a tie are kept)."""
    out = []
    for i, layer in enumerate(layers):
        theta, bias = params[2 * i], params[2 * i + 1]
        if layer.tie is None:
            out.append(layer.with_weights(theta, bias))
        else:
            out.append(layer.with_tied_parameters(theta, bias))
    return tuple(out)
