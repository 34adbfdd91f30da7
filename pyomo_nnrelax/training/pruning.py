"""Pruning of tiny weights before verification (Xiao et al. 2019, section 4: weights that
training with an L1 penalty has brought near zero are set to zero, so that the interval and LP
bounds of a ball lose their contributions and more ReLUs are stable).

A layer keeps its storage and its weight ties: a sparse layer keeps its pattern (a pruned
entry is a stored zero), and a tied layer (a convolution's kernel) prunes its shared
parameters, so every position of a kernel entry is pruned together and a pruned network is
still written back as the graph it was read from.
"""

from __future__ import annotations

import numpy as np

from ..checks import positive_float
from ..network import Layer, Network


def prune(network: Network, threshold: float) -> Network:
    """The network with every weight entry of magnitude below ``threshold`` set to zero.

    Parameters
    ----------
    network : Network
    threshold : float
        Finite and >= 0; entries ``w`` with ``|w| < threshold`` become 0, the others are
        kept as they are (0 prunes nothing).

    Returns
    -------
    Network
        The same architecture (storage, activations, ties, names, origin) with pruned
        weights; biases and fixed entries of a tie (padding zeros, skip-path ones) are
        never pruned.

    Notes
    -----
    In a tied layer an entry is ``offset + mult * theta[index]``: a parameter ``theta[p]`` is
    set to zero when every entry tied to it is below ``threshold`` in magnitude, so its
    entries become their offsets (zero, except after a folded batch normalisation's shift)
    and the tie stays consistent.  For a convolution, whose entries of one parameter all
    have the same value, that is exactly "entries below the threshold are zero".

    >>> import numpy as np
    >>> from pyomo_nnrelax import Layer, Network
    >>> net = Network((Layer(np.array([[0.5, -1e-4], [2e-4, -0.3]]), np.zeros(2), "linear"),))
    >>> prune(net, 1e-3).layers[0].weight
    array([[ 0.5,  0. ],
           [ 0. , -0.3]])
    """
    threshold = positive_float("threshold", threshold, allow_zero=True)
    return network.with_layers([_pruned(layer, threshold) for layer in network.layers])


def _pruned(layer: Layer, threshold: float) -> Layer:
    """One layer with its small free entries, or small tied parameters, set to zero."""
    entries = layer.entries
    if layer.tie is None:
        return layer.with_entries(np.where(np.abs(entries) < threshold, 0.0, entries), layer.bias)
    tie = layer.tie
    theta = tie.parameters(entries)
    tied = tie.tied.reshape(-1)
    params = tie.index.reshape(-1)[tied]
    magnitude = np.abs(entries.reshape(-1)[tied])
    largest = np.zeros(theta.size)
    np.maximum.at(largest, params, magnitude)
    theta = np.where(largest < threshold, 0.0, theta)
    return layer.with_entries(tie.weight(theta), layer.bias)
