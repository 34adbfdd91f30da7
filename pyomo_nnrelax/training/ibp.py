"""The reverse pass of interval bound propagation (the forward pass is
:func:`pyomo_nnrelax.bounds.ibp_forward`).

IBP bounds are piecewise linear in the weights and biases, so bound-based regularizers get
exact (sub)gradients from one reverse sweep: seed ``dR/dL^l`` and ``dR/dU^l`` per layer and
read off ``dR/dW^l`` and ``dR/db^l`` (docs/method.md, section 4).

The regularizers look at every neuron of every layer at once, in arrays that hold the
layers' neurons side by side (:class:`NeuronLayout`): one numpy call for the whole network
instead of one per layer, which is what a training step on small layers costs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..bounds import IBPTrace, ibp_forward
from ..matrices import times
from ..network import Layer
from .backprop import Grads, weight_gradient

__all__ = ["IBPTrace", "NeuronLayout", "ibp_backward", "ibp_backward_stacked", "ibp_forward"]


@dataclass(frozen=True, eq=False)
class NeuronLayout:
    """Where each layer's neurons sit among all the network's neurons, counted layer by layer.

    ``kind`` and ``relu_mask`` read like those of one layer holding every neuron, so that
    :func:`~pyomo_nnrelax.bounds.neuron_stability` takes the layout in place of a layer and
    classifies the whole network in one call.

    Attributes
    ----------
    spans : tuple of slice
        The positions of each layer's neurons.
    size : int
        The number of neurons.
    relu_mask : ndarray (size,) of bool
        Which neurons are followed by a ReLU.
    kind : {"relu", "linear", "mixed"}
        Whether all, none or some of them are.
    hidden : slice or ndarray
        The positions of the ReLU neurons (a slice when they are consecutive, as in an MLP).
    """

    spans: tuple[slice, ...]
    size: int
    relu_mask: np.ndarray
    kind: str
    hidden: slice | np.ndarray

    @classmethod
    def of(cls, layers: Sequence[Layer]) -> NeuronLayout:
        """The layout of ``layers`` (one object per shape and activations of a network)."""
        return _layout_of(tuple((layer.n_out, _activation_key(layer)) for layer in layers))

    def split(self, array: np.ndarray) -> list[np.ndarray]:
        """Per-layer views of an array over all neurons (on its last axis)."""
        return [array[..., span] for span in self.spans]


def _activation_key(layer: Layer) -> str | bytes:
    activation = layer.activation
    return activation if isinstance(activation, str) else activation.tobytes()


@functools.lru_cache(maxsize=64)
def _layout_of(shape: tuple[tuple[int, str | bytes], ...]) -> NeuronLayout:
    spans, masks, start = [], [], 0
    for width, activation in shape:
        spans.append(slice(start, start + width))
        if isinstance(activation, bytes):
            masks.append(np.frombuffer(activation, dtype=bool))
        else:
            masks.append(np.full(width, activation == "relu"))
        start += width
    relu = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
    relu.flags.writeable = False
    kind = "relu" if relu.all() else "linear" if not relu.any() else "mixed"
    return NeuronLayout(tuple(spans), start, relu, kind, positions(np.flatnonzero(relu)))


def positions(index: np.ndarray) -> slice | np.ndarray:
    """Sorted distinct positions as a slice when they are consecutive (indexing with it gives
    a view), else as they are."""
    if index.size == 0 or index[-1] - index[0] + 1 == index.size:
        start = int(index[0]) if index.size else 0
        return slice(start, start + index.size)
    return index


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
    neurons = NeuronLayout.of(layers)
    seeds = np.zeros((*trace.pre[0].shape[:-1], neurons.size))
    for seed, lo, hi in zip(neurons.split(seeds), seed_lower, seed_upper):
        if lo is not None:
            seed[0] = lo
        if hi is not None:
            seed[1] = hi
    return ibp_backward_stacked(layers, trace, seeds)


def ibp_backward_stacked(layers: Sequence[Layer], trace: IBPTrace, seeds: np.ndarray) -> Grads:
    """:func:`ibp_backward` with the seeds of both ends of every neuron in one array:
    ``seeds = [g_L; g_U]`` (2, N), the layers side by side (:class:`NeuronLayout`); with one
    box per sample (a batched trace), (2, n, N), and the gradient sums over the samples.

    The seeds travel together as ``G = [g_L; g_U]``: ``dR/dW`` is ``G' [lh; uh]`` on
    positive weights and ``G' [uh; lh]`` on the others, and the seeds of the layer below are
    ``G W+`` plus ``G W-`` with its rows swapped (docs/method.md, section 4).  Each layer's
    ``G`` is accumulated in place of its seeds, so the biases' gradients are one sum.
    """
    neurons = NeuronLayout.of(layers)
    total = seeds.copy()  # each layer's G: its seed plus what comes from above
    count = math.prod(total.shape[:-1])  # both ends, times the samples of a batched trace
    weights = []
    for l in range(len(layers) - 1, -1, -1):
        layer, h = layers[l], trace.inputs[l]
        rows = total[..., neurons.spans[l]].reshape(count, layer.n_out)
        same = weight_gradient(layer, rows, h.reshape(count, layer.n_in))
        swapped = weight_gradient(layer, rows, h[::-1].reshape(count, layer.n_in))
        weights.append(np.where(layer.entries > 0.0, same, swapped))
        if l > 0:
            below = times(rows, trace.w_pos[l]).reshape(*total.shape[:-1], -1)
            below += times(rows, trace.w_neg[l]).reshape(below.shape)[::-1]
            if layers[l - 1].has_relu:
                below *= layers[l - 1].passes(trace.pre[l - 1])
            total[..., neurons.spans[l - 1]] += below
    biases = neurons.split(total.reshape(count, neurons.size).sum(axis=0))
    return list(zip(weights[::-1], biases))
