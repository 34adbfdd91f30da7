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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import matrices
from .box import InputBox, resolve_box
from .errors import InputBoundsError, InvalidNetworkError
from .matrices import Matrix, times_transpose
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


def interval_step(w_pos: Matrix, w_neg: Matrix, bounds: np.ndarray) -> np.ndarray:
    """``[W+ l + W- u; W+ u + W- l]`` for stacked input bounds ``bounds = [l; u]`` (2, n_in)
    or, one box per sample, (2, n, n_in), with ``W+ = max(W, 0)`` and ``W- = min(W, 0)``
    (dense or sparse): the affine step of interval propagation, on both ends at once."""
    rows = (math.prod(bounds.shape[:-1]), bounds.shape[-1])
    z = times_transpose(bounds.reshape(rows), w_pos)
    z += times_transpose(bounds[::-1].reshape(rows), w_neg)
    return z.reshape(*bounds.shape[:-1], z.shape[-1])


def affine_interval(weights: Matrix, lower: np.ndarray, upper: np.ndarray):
    """Interval bounds of ``weights @ h`` for ``lower <= h <= upper`` (no bias)."""
    z = interval_step(*matrices.signs(weights), np.stack([lower, upper]))
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
    pre : list of ndarray (2, n_out_l), or (2, n, n_out_l) for one box per sample
        ``[L^l; U^l]``, the pre-activation bounds of layer ``l``.
    inputs : list of ndarray (2, n_in_l), or (2, n, n_in_l)
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
    """Interval bound propagation of a layer stack over the box ``[lower, upper]`` (n_in,),
    or over one box per sample (both (n, n_in): the trainer's eps-balls, all at once): the
    one propagation routine (``interval_bounds``, bound tightening and the trainer use it)."""
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    h = np.empty((2, *np.broadcast_shapes(lower.shape, upper.shape)))
    h[0], h[1] = lower, upper
    trace = IBPTrace([], [], [], [])
    for layer in layers:
        w_pos, w_neg = matrices.signs(layer.weight)
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
    return interval_bounds_over(network, [resolve_box(input_bounds, network)])[0]


def interval_bounds_over(network: Network, boxes: Sequence[InputBox]) -> list[NetworkBounds]:
    """:func:`interval_bounds` over each of several boxes (the copies of a batched block),
    in one batched propagation."""
    lower = np.array([box.lower for box in boxes])
    upper = np.array([box.upper for box in boxes])
    with np.errstate(over="ignore", invalid="ignore"):
        trace = ibp_forward(network.layers, lower, upper)
    for i, z in enumerate(trace.pre):
        if not np.all(np.isfinite(z)):
            raise InvalidNetworkError(
                f"the interval bounds of layer {i} overflow to infinity over the input box "
                f"(largest |weight| up to this layer: "
                f"{max(matrices.max_abs(layer.weight) for layer in network.layers[: i + 1]):.3g}); "
                "no MILP can use them: rescale the weights or shrink the input box"
            )
    return [
        NetworkBounds(
            box.lower,
            box.upper,
            tuple(z[0, c] for z in trace.pre),
            tuple(z[1, c] for z in trace.pre),
            "interval",
        )  # fmt: skip
        for c, box in enumerate(boxes)
    ]


def bounds_on(bounds: NetworkBounds, network: Network, box: InputBox) -> NetworkBounds:
    """``bounds`` computed over a box that covers ``box``, used over ``box``: still valid
    there, and intersected with the interval bounds over ``box`` (tighter where those are)."""
    if bounds.input_box == box:
        return bounds
    if not bounds.input_box.covers(box):
        raise InputBoundsError(
            f"bounds computed over {bounds.input_box} are not valid over {box}, which they "
            "do not cover"
        )
    return interval_bounds(network, box).intersect(bounds, method=bounds.method)


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
