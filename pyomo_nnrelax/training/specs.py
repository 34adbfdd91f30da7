"""Regularizers written as text (``--regularizer bw+lp``, sweeps): ``"0.5*bw + lp"``."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..options import GAP_METHODS, GapMethod, check_option
from .lp_gap import LPGap
from .regularizers import L1, L2, BoundWidth, Regularizer, ReLUStability, StableNeuron

REGULARIZERS: dict[str, Callable[..., Regularizer]] = {
    "bw": lambda ball, **lp_options: BoundWidth(ball),
    "lp": lambda ball, **lp_options: LPGap(ball=ball, **lp_options),
    "sn": lambda ball, **lp_options: StableNeuron(ball),
    "rs": lambda ball, **lp_options: ReLUStability(ball),
    "l1": lambda ball, **lp_options: L1(),
    "l2": lambda ball, **lp_options: L2(),
}
"""Spec names and their regularizers; each takes the bound regularizers' ``ball`` and
:class:`LPGap`'s ``sense``, ``gap_method`` and ``weights`` (only those that use them)."""
NO_REGULARIZER = "none"


def parse_regularizer(
    spec: str,
    sense: str = "min",
    gap_method: GapMethod = "dual_network",
    lp_weights=None,
    ball: float | None = None,
) -> Regularizer | None:
    """A regularizer from a spec such as ``"bw"``, ``"bw+lp"`` or ``"0.5*bw+lp"``.

    ``"none"`` gives None.  Names: bw (bound width), lp (LP gap, optimisation ``sense``,
    ``LPGap(gap_method=gap_method, weights=lp_weights)``), sn (stable neuron), rs (ReLU
    stability), l1, l2; ``ball`` goes to bw, lp, sn and rs (bounds over each sample's
    eps-ball).  Raises ValueError naming the allowed names on anything else.

    >>> parse_regularizer("0.5*bw + lp")
    0.5 * BoundWidth() + 1 * LPGap(sense='min', gap_method='dual_network', samples=None, \
exact_bounds=False, slope_steps=0)
    >>> parse_regularizer("bw+lp", gap_method="exact_lp")
    1 * BoundWidth() + 1 * LPGap(sense='min', gap_method='exact_lp', samples=8, \
exact_bounds=False)
    >>> parse_regularizer("none") is None
    True
    """
    check_option("gap_method", gap_method, GAP_METHODS)
    text = spec.strip().lower()
    if text == NO_REGULARIZER:
        return None
    allowed = ", ".join([*REGULARIZERS, NO_REGULARIZER])
    total: Regularizer | None = None
    for term in text.split("+"):
        weight_text, _, name = term.strip().rpartition("*")
        name = name.strip()
        if name not in REGULARIZERS:
            raise ValueError(f"unknown regularizer {name!r} in {spec!r}; allowed: {allowed}")
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
        except ValueError:
            raise ValueError(
                f"bad weight {weight_text.strip()!r} in regularizer {spec!r}"
            ) from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(
                f"regularizer weights must be positive numbers, got {weight} in {spec!r}"
            )
        options = {"sense": sense, "gap_method": gap_method, "weights": lp_weights}
        part = weight * REGULARIZERS[name](ball, **options)
        total = part if total is None else total + part
    return total
