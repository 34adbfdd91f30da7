"""Pre-activation bounds over an input box, and interval bound propagation (IBP).

:class:`NetworkBounds` holds, for every layer, a lower and upper bound on each neuron's
pre-activation ``z``.  Formulations read them; tightening (:mod:`pyomo_nnrelax.lp.tightening`)
replaces them with tighter ones.  All arrays are float64.

Interval bound propagation is written once: :func:`interval_step` is the affine map on
both ends of an interval at once, and :func:`ibp_forward` applies it layer by layer
(``docs/method.md``, section 1); :func:`affine_interval` and :func:`layer_interval` are the
same step for one layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .box import InputBox, resolve_box
from .errors import InvalidNetworkError
from .network import Layer, Network


def is_unstable(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Which ReLU neurons with pre-activation bounds ``[lower, upper]`` need a binary:
    ``lower < 0 < upper``.  The one definition every formulation and regularizer uses."""
    return (lower < 0.0) & (upper > 0.0)


def relu_stability(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Per ReLU neuron with pre-activation bounds ``[lower, upper]``: +1 stable-active
    (``L >= 0``), -1 stable-inactive (``U <= 0``), 0 unstable."""
    return np.where(is_unstable(lower, upper), 0, np.where(lower >= 0.0, 1, -1))


def neuron_stability(layer: Layer, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """:func:`relu_stability` of the neurons of ``layer``, with +1 for its linear neurons,
    which behave as stable-active ones everywhere (``h = z``).  The one place that rule is
    written."""
    stab = relu_stability(lower, upper)
    return stab if layer.kind == "relu" else np.where(layer.relu_mask, stab, 1)


def unstable_relus(layer: Layer, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Which neurons of ``layer`` need a binary: unstable ones with a ReLU."""
    return neuron_stability(layer, lower, upper) == 0


@dataclass(frozen=True, eq=False)
class NetworkBounds:
    """Input box and per-layer pre-activation bounds of a network.

    Attributes
    ----------
    input_lower, input_upper : ndarray (n_inputs,)
    lower, upper : tuple of ndarray
        ``lower[l][j] <= z^l_j <= upper[l][j]`` for every input in the box.
    method : str
        How the bounds were obtained ("interval", "lp", "milp", ...).
    """

    input_lower: np.ndarray
    input_upper: np.ndarray
    lower: tuple[np.ndarray, ...]
    upper: tuple[np.ndarray, ...]
    method: str = "interval"

    def __post_init__(self) -> None:
        for lo, hi in zip(self.lower, self.upper):
            if lo.shape != hi.shape:
                raise InvalidNetworkError("lower and upper bounds of a layer differ in shape")

    @property
    def input_box(self) -> InputBox:
        """The input box the bounds were computed over."""
        return InputBox(self.input_lower, self.input_upper)

    def post_activation(self, network: Network, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on the output of ``layer`` (after its activation); ``-1`` gives the input box."""
        if layer < 0:
            return self.input_lower, self.input_upper
        return activation_interval(network.layers[layer], self.lower[layer], self.upper[layer])

    def stability(self, layer: int, network: Network | None = None) -> np.ndarray:
        """Per neuron of ``layer``: +1 stable-active (L >= 0), -1 stable-inactive (U <= 0),
        0 unstable.  With ``network``, linear neurons count as stable-active (``h = z``)."""
        lo, hi = self.lower[layer], self.upper[layer]
        if network is None:
            return relu_stability(lo, hi)
        return neuron_stability(network.layers[layer], lo, hi)

    def unstable_count(self, network: Network) -> int:
        """Number of unstable ReLU neurons, i.e. binaries a big-M formulation needs."""
        return int(
            sum(np.count_nonzero(self.stability(l, network) == 0) for l in range(len(self.lower)))
        )

    def mean_big_m(self, network: Network) -> float:
        """Mean big-M constant ``max(-L, U)`` of the unstable ReLU neurons (0 without any)."""
        return big_m_summary(layer_statistics(network, self))[1]

    def intersect(self, other: NetworkBounds, method: str | None = None) -> NetworkBounds:
        """Elementwise tightest of two valid bound sets over the same box."""
        return NetworkBounds(
            self.input_lower,
            self.input_upper,
            tuple(np.maximum(a, b) for a, b in zip(self.lower, other.lower)),
            tuple(np.minimum(a, b) for a, b in zip(self.upper, other.upper)),
            method or other.method,
        )

    def contains(self, network: Network, X, tol: float = 1e-9) -> bool:
        """True when every pre-activation of every sample in ``X`` lies inside the bounds."""
        return all(
            np.all(z >= lo - tol) and np.all(z <= hi + tol)
            for z, lo, hi in zip(network.pre_activations(X), self.lower, self.upper)
        )


def interval_step(w_pos: np.ndarray, w_neg: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``[W+ l + W- u; W+ u + W- l]`` for stacked input bounds ``bounds = [l; u]`` (2, n_in),
    with ``W+ = max(W, 0)`` and ``W- = min(W, 0)``: the affine step of interval propagation,
    on both ends at once."""
    return bounds @ w_pos.T + bounds[::-1] @ w_neg.T


def affine_interval(weights: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """Interval bounds of ``weights @ h`` for ``lower <= h <= upper`` (no bias)."""
    z = interval_step(np.maximum(weights, 0.0), np.minimum(weights, 0.0), np.stack([lower, upper]))
    return z[0], z[1]


def layer_interval(layer: Layer, lower: np.ndarray, upper: np.ndarray):
    """Bounds ``L = W+ l + W- u + b``, ``U = W+ u + W- l + b`` on the pre-activation of
    ``layer`` over inputs in ``[lower, upper]``: one step of interval propagation."""
    z_lo, z_hi = affine_interval(layer.weight, lower, upper)
    return z_lo + layer.bias, z_hi + layer.bias


def activation_interval(layer: Layer, lower: np.ndarray, upper: np.ndarray):
    """Bounds on the output of ``layer``'s activations for pre-activations in
    ``[lower, upper]`` (ReLU and the identity are monotone: each end maps to an end)."""
    return layer.activate(lower), layer.activate(upper)


@dataclass(frozen=True)
class IBPTrace:
    """Interval bounds of every layer and what they were computed from (what the trainer's
    reverse pass, :func:`pyomo_nnrelax.training.ibp_backward`, needs).

    Attributes
    ----------
    pre : list of ndarray (2, n_out_l)
        ``[L^l; U^l]``, the pre-activation bounds of layer ``l``.
    inputs : list of ndarray (2, n_in_l)
        ``[lh^(l-1); uh^(l-1)]``, the bounds of the input of layer ``l`` (the box for l = 0).
    w_pos, w_neg : list of ndarray
        ``max(W^l, 0)`` and ``min(W^l, 0)``.
    """

    pre: list[np.ndarray]
    inputs: list[np.ndarray]
    w_pos: list[np.ndarray]
    w_neg: list[np.ndarray]

    lower = property(lambda self: [z[0] for z in self.pre], doc="``L^l`` per layer.")
    upper = property(lambda self: [z[1] for z in self.pre], doc="``U^l`` per layer.")
    in_lower = property(lambda self: [h[0] for h in self.inputs], doc="Input lower bounds.")
    in_upper = property(lambda self: [h[1] for h in self.inputs], doc="Input upper bounds.")

    def to_bounds(self) -> NetworkBounds:
        """The bounds as a :class:`NetworkBounds` (method "interval")."""
        box = self.inputs[0]
        return NetworkBounds(box[0], box[1], tuple(self.lower), tuple(self.upper), "interval")


def ibp_forward(layers: Sequence[Layer], lower, upper) -> IBPTrace:
    """Interval bound propagation of a layer stack over the box ``[lower, upper]``: the one
    propagation routine (``interval_bounds``, bound tightening and the trainer use it)."""
    h = np.empty((2, np.size(lower)))
    h[0], h[1] = lower, upper
    trace = IBPTrace([], [], [], [])
    for layer in layers:
        w_pos, w_neg = np.maximum(layer.weight, 0.0), np.minimum(layer.weight, 0.0)
        z = interval_step(w_pos, w_neg, h) + layer.bias
        trace.inputs.append(h)
        trace.pre.append(z)
        trace.w_pos.append(w_pos)
        trace.w_neg.append(w_neg)
        h = layer.activate(z)
    return trace


def interval_bounds(network: Network, input_bounds=None) -> NetworkBounds:
    """Interval bound propagation (IBP) over the input box.

    ``input_bounds`` (any form of :func:`~pyomo_nnrelax.box.as_input_box`) defaults to the
    box the network carries.

    >>> net = Network.mlp([2, 3, 1], seed=0)
    >>> bounds = interval_bounds(net, [(-1, 1), (-1, 1)])
    >>> [b.shape for b in bounds.lower], bounds.unstable_count(net)
    ([(3,), (1,)], 3)
    """
    with np.errstate(over="ignore", invalid="ignore"):
        bounds = ibp_forward(network.layers, *resolve_box(input_bounds, network)).to_bounds()
    for i, (lo, hi) in enumerate(zip(bounds.lower, bounds.upper)):
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise InvalidNetworkError(
                f"the interval bounds of layer {i} overflow to infinity over the input box "
                f"(largest |weight| up to this layer: "
                f"{max(np.abs(layer.weight).max() for layer in network.layers[: i + 1]):.3g}); "
                "no MILP can use them: rescale the weights or shrink the input box"
            )
    return bounds


def layer_statistics(network: Network, bounds: NetworkBounds) -> list[dict[str, float]]:
    """Per layer: neurons, unstable / stable counts, and the big-M constants of unstable ReLUs.

    The big-M constant of an unstable neuron is ``max(-L, U)``.
    """
    rows = []
    for l, layer in enumerate(network.layers):
        lo, hi = bounds.lower[l], bounds.upper[l]
        stab = bounds.stability(l, network)
        unstable = stab == 0
        big_m = np.maximum(-lo[unstable], hi[unstable])
        relu = layer.relu_mask
        rows.append(
            {
                "layer": l,
                "neurons": layer.n_out,
                "activation": layer.kind,
                "relu_neurons": int(relu.sum()),
                "unstable": int(unstable.sum()),
                "stable_active": int((relu & (stab == 1)).sum()),
                "stable_inactive": int((stab == -1).sum()),
                "mean_big_m": float(big_m.mean()) if big_m.size else 0.0,
                "max_big_m": float(big_m.max()) if big_m.size else 0.0,
            }
        )
    return rows


def big_m_summary(rows: list[dict[str, float]]) -> tuple[int, float]:
    """Unstable neurons and their mean big-M constant over all layers of
    :func:`layer_statistics` rows."""
    unstable = sum(r["unstable"] for r in rows)
    total = sum(r["mean_big_m"] * r["unstable"] for r in rows)
    return unstable, total / unstable if unstable else 0.0
