"""Backward pass of a layer stack in float64 numpy (the forward pass with its cache is
:func:`pyomo_nnrelax.network.forward_cache`, shared with :meth:`Network.pre_activations`).

The trainer, the losses and the LP-gap regularizer all need ``f(X)`` and the gradient of a
scalar of ``f(X)`` with respect to every weight and bias; this module is that one computation.
Layers are :class:`pyomo_nnrelax.Layer` objects: ``weight`` (n_out, n_in), ``bias`` (n_out,)
and a ReLU or linear activation per neuron (``relu_mask``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import matrices
from ..network import Layer, forward_cache

Grads = list[tuple[np.ndarray, np.ndarray]]


def backward(
    layers: Sequence[Layer],
    inputs: Sequence[np.ndarray],
    pre: Sequence[np.ndarray],
    d_out: np.ndarray,
) -> Grads:
    """Gradient of ``sum(d_out * out)`` with respect to every (weight, bias).

    ``d_out`` (n, n_outputs) is the seed on the outputs; the batch is summed, so a mean loss
    passes ``d_out`` already divided by the batch size.  ReLU uses the subgradient 0 at z = 0.
    The weight's gradient is shaped like the layer's :attr:`~pyomo_nnrelax.Layer.entries`
    (a sparse layer's: its stored entries only).
    """
    return backpropagate(layers, inputs, pre, d_out)[0]


def input_gradient(
    layers: Sequence[Layer],
    inputs: Sequence[np.ndarray],
    pre: Sequence[np.ndarray],
    d_out: np.ndarray,
) -> np.ndarray:
    """Gradient of ``sum(d_out * out)`` with respect to the inputs, row by row (n, n_inputs):
    the same backward pass as :func:`backward`, without the weights' gradients (what an
    adversarial attack follows)."""
    return backpropagate(layers, inputs, pre, d_out, weights=False)[1]


def backpropagate(
    layers: Sequence[Layer],
    inputs: Sequence[np.ndarray],
    pre: Sequence[np.ndarray],
    d_out: np.ndarray,
    weights: bool = True,
) -> tuple[Grads, np.ndarray]:
    """The one backward pass: the gradients of every (weight, bias) (empty without
    ``weights``) and of the inputs."""
    grads: Grads = []
    delta = np.asarray(d_out, dtype=np.float64)
    for layer, h, z in zip(reversed(layers), reversed(inputs), reversed(pre)):
        if layer.has_relu:
            delta = delta * layer.passes(z)
        if weights:
            grads.append((weight_gradient(layer, delta, h), delta.sum(axis=0)))
        delta = delta @ layer.weight if not layer.is_sparse else matrices.times(delta, layer.weight)
    return grads[::-1], delta


def weight_gradient(layer: Layer, delta: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``delta.T @ h`` at the layer's entries: the gradient of ``sum(delta * (h @ W.T))``."""
    if not layer.is_sparse:
        return delta.T @ h
    return matrices.outer_entries(delta, h, layer.weight, layer.outer_plan)


def predict(layers: Sequence[Layer], X: np.ndarray) -> np.ndarray:
    """Outputs of the stack for a batch ``X`` (n, n_inputs)."""
    return forward_cache(layers, X)[0]


def add_grads(a: Grads, b: Grads, weight: float = 1.0) -> Grads:
    """``a + weight * b``, layer by layer."""
    if weight == 1.0:
        return [(wa + wb, ba + bb) for (wa, ba), (wb, bb) in zip(a, b)]
    return [(wa + weight * wb, ba + weight * bb) for (wa, ba), (wb, bb) in zip(a, b)]


def scale_grads(grads: Grads, weight: float) -> Grads:
    """``weight * grads`` (``grads`` itself when the weight is 1)."""
    if weight == 1.0:
        return grads
    return [(weight * w, weight * b) for w, b in grads]


def zero_grads(layers: Sequence[Layer]) -> Grads:
    """Zero gradients shaped like the layers."""
    return [(np.zeros_like(layer.entries), np.zeros_like(layer.bias)) for layer in layers]
