"""Pre-activation bounds over an input box, and interval bound propagation (IBP).

:class:`NetworkBounds` holds, for every layer, a lower and upper bound on each neuron's
pre-activation ``z``.  Formulations read them; tightening (``pyomo_nnrelax.tightening``)
replaces them with tighter ones.  All arrays are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .box import InputBox, resolve_box
from .errors import InvalidNetworkError
from .network import Network


def is_unstable(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Which ReLU neurons with pre-activation bounds ``[lower, upper]`` need a binary:
    ``lower < 0 < upper``.  The one definition every formulation and regularizer uses."""
    return (lower < 0.0) & (upper > 0.0)


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
        lo, hi = self.lower[layer], self.upper[layer]
        if network.layers[layer].activation == "relu":
            return np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        return lo, hi

    def stability(self, layer: int) -> np.ndarray:
        """Per neuron of ``layer``: +1 stable-active (L >= 0), -1 stable-inactive (U <= 0),
        0 unstable."""
        lo, hi = self.lower[layer], self.upper[layer]
        return np.where(is_unstable(lo, hi), 0, np.where(lo >= 0.0, 1, -1))

    def unstable_count(self, network: Network) -> int:
        """Number of unstable ReLU neurons, i.e. binaries a big-M formulation needs."""
        return int(
            sum(
                np.count_nonzero(self.stability(l) == 0)
                for l, layer in enumerate(network.layers)
                if layer.activation == "relu"
            )
        )

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


def affine_interval(weights: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """Interval bounds of ``weights @ h`` for ``lower <= h <= upper`` (no bias)."""
    w_pos, w_neg = np.maximum(weights, 0.0), np.minimum(weights, 0.0)
    return w_pos @ lower + w_neg @ upper, w_pos @ upper + w_neg @ lower


def interval_bounds(network: Network, input_bounds=None) -> NetworkBounds:
    """Interval bound propagation over the input box.

    ``L = W+ l + W- u + b`` and ``U = W+ u + W- l + b`` layer by layer, with ReLU applied to
    the bounds of hidden layers.  ``input_bounds`` (any form of
    :func:`~pyomo_nnrelax.box.as_input_box`) defaults to the box the network carries.
    """
    lo, hi = resolve_box(input_bounds, network)
    lowers, uppers = [], []
    h_lo, h_hi = lo, hi
    for layer in network.layers:
        z_lo, z_hi = affine_interval(layer.weight, h_lo, h_hi)
        z_lo, z_hi = z_lo + layer.bias, z_hi + layer.bias
        lowers.append(z_lo)
        uppers.append(z_hi)
        if layer.activation == "relu":
            h_lo, h_hi = np.maximum(z_lo, 0.0), np.maximum(z_hi, 0.0)
        else:
            h_lo, h_hi = z_lo, z_hi
    return NetworkBounds(lo, hi, tuple(lowers), tuple(uppers), "interval")


def layer_statistics(network: Network, bounds: NetworkBounds) -> list[dict[str, float]]:
    """Per layer: neurons, unstable / stable counts, and the big-M constants of unstable ReLUs.

    The big-M constant of an unstable neuron is ``max(-L, U)``.
    """
    rows = []
    for l, layer in enumerate(network.layers):
        lo, hi = bounds.lower[l], bounds.upper[l]
        stab = bounds.stability(l) if layer.activation == "relu" else np.ones(layer.n_out)
        unstable = stab == 0
        big_m = np.maximum(-lo[unstable], hi[unstable])
        rows.append(
            {
                "layer": l,
                "neurons": layer.n_out,
                "activation": layer.activation,
                "unstable": int(unstable.sum()),
                "stable_active": int((stab == 1).sum()) if layer.activation == "relu" else 0,
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
