"""Training regularizers that make the embedded MILP easier (docs/method.md, section 4).

Every regularizer answers one call, ``value_and_grad(ctx) -> (value, grads)``, with ``grads``
a list of ``(dW, db)`` per layer.  They compose: ``0.5 * BoundWidth() + LPGap()``.
Bound-based regularizers differentiate IBP exactly with one reverse pass
(:func:`~pyomo_nnrelax.training.ibp.ibp_backward`); the LP-gap regularizer
(:mod:`.lp_gap`) uses LP duals or the dual network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..bounds import is_unstable
from ..checks import positive_float
from .backprop import Grads, add_grads, scale_grads, zero_grads
from .context import RegContext
from .ibp import ibp_backward_stacked


class Regularizer:
    """Base class: a penalty ``R(theta)`` with its gradient; supports ``+`` and scalar ``*``."""

    uses_bounds: bool = True

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        """``R`` at ``ctx.layers`` and ``[(dR/dW^l, dR/db^l) for each layer]``."""
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """What the regularizer carries from step to step, as named arrays (none for most;
        the dual-network LP gap's slopes): saved with a refinement's checkpoints."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`state`'s arrays."""

    def _terms(self) -> tuple[tuple[float, Regularizer], ...]:
        return ((1.0, self),)

    def __add__(self, other: Regularizer) -> Combination:
        if not isinstance(other, Regularizer):
            return NotImplemented
        return Combination(self._terms() + other._terms())

    def __mul__(self, weight: float) -> Combination:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return NotImplemented
        return Combination(tuple((float(weight) * w, r) for w, r in self._terms()))

    __rmul__ = __mul__


class Combination(Regularizer):
    """A weighted sum of regularizers, built by ``+`` and ``*``."""

    def __init__(self, terms: Sequence[tuple[float, Regularizer]]) -> None:
        self.terms = tuple(terms)
        self.uses_bounds = any(r.uses_bounds for _, r in self.terms)

    def _terms(self) -> tuple[tuple[float, Regularizer], ...]:
        return self.terms

    def state(self) -> dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, (_, r) in enumerate(self.terms) for k, v in r.state().items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for i, (_, reg) in enumerate(self.terms):
            prefix = f"{i}."
            reg.load_state({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        total, grads, outer = 0.0, None, ctx._weight
        for weight, reg in self.terms:
            ctx._weight = outer * weight  # deferred output seeds carry the term's weight
            try:
                value, g = reg.value_and_grad(ctx)
            finally:
                ctx._weight = outer
            total += weight * value
            grads = scale_grads(g, weight) if grads is None else add_grads(grads, g, weight)
        return total, grads if grads is not None else zero_grads(ctx.layers)

    def __repr__(self) -> str:
        return " + ".join(f"{w:g} * {r!r}" for w, r in self.terms)


class L1(Regularizer):
    """``R_L1 = sum_l ||W^l||_1`` (biases are not penalised); subgradient 0 at 0.

    The norm is over each layer's folded matrix, so a convolution's kernel entry counts once
    per output position it covers: the weighting of Xiao et al. (2019), whose L1 term makes
    networks verifiable together with :func:`~pyomo_nnrelax.training.prune`.
    """

    uses_bounds = False

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        value = sum(float(np.abs(layer.entries).sum()) for layer in ctx.layers)
        return value, [(np.sign(layer.entries), np.zeros_like(layer.bias)) for layer in ctx.layers]

    def __repr__(self) -> str:
        return "L1()"


class L2(Regularizer):
    """``R_L2 = sum_l ||W^l||_F^2`` (biases are not penalised)."""

    uses_bounds = False

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        value = sum(float((layer.entries**2).sum()) for layer in ctx.layers)
        return value, [(2.0 * layer.entries, np.zeros_like(layer.bias)) for layer in ctx.layers]

    def __repr__(self) -> str:
        return "L2()"


class NeuronBoundPenalty(Regularizer):
    """Mean over hidden (ReLU) neurons of ``phi(L, U)`` of their IBP bounds.

    Only neurons with a ReLU count: the linear neurons a skip connection or a LeakyReLU is
    carried by have no kink to stabilise.  Subclasses give ``phi`` and its partial
    derivatives in :meth:`neuron_terms`; the gradient with respect to the weights is one IBP
    reverse pass seeded with them.

    Parameters
    ----------
    ball : float, optional
        Take the bounds over each mini-batch sample's L-infinity ball of this radius,
        clipped to the input box, instead of over the whole box (Xiao et al. 2019: what a
        verification user asks is about a ball around each image); the penalty is then the
        mean over samples and neurons.  Default: the whole box.
    """

    def __init__(self, ball: float | None = None) -> None:
        self.ball = None if ball is None else positive_float("ball", ball)

    def neuron_terms(
        self, lower: np.ndarray, upper: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``phi``, ``d phi / d L`` and ``d phi / d U`` per neuron."""
        raise NotImplementedError

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        neurons = ctx.neurons
        if neurons.kind == "linear":
            return 0.0, zero_grads(ctx.layers)
        # every hidden ReLU at once: [L; U] side by side, (2, |H|) or (2, samples, |H|)
        bounds = ctx.neuron_bounds(self.ball)
        hidden = bounds[..., neurons.hidden]
        phi, d_lo, d_hi = self.neuron_terms(hidden[0], hidden[1])
        seeds = np.zeros_like(bounds)
        seeds[..., neurons.hidden] = np.stack([d_lo, d_hi]) / phi.size
        trace = ctx.ibp if self.ball is None else ctx.ball_ibp(self.ball)
        return float(phi.sum()) / phi.size, ibp_backward_stacked(ctx.layers, trace, seeds)

    def __repr__(self) -> str:
        ball = "" if self.ball is None else f"ball={self.ball:g}"
        return f"{type(self).__name__}({ball})"


class BoundWidth(NeuronBoundPenalty):
    """``R_BW``: mean IBP bound width ``U - L`` of the hidden neurons (the big-M size)."""

    def neuron_terms(self, lower, upper):
        return upper - lower, -np.ones_like(lower), np.ones_like(upper)


class StableNeuron(NeuronBoundPenalty):
    """``R_SN``: mean ``min(max(-L, 0), max(U, 0))``, the distance of a neuron to stability."""

    def neuron_terms(self, lower, upper):
        to_active, to_inactive = np.maximum(-lower, 0.0), np.maximum(upper, 0.0)
        via_lower = to_active <= to_inactive
        unstable = is_unstable(lower, upper)
        d_lo = np.where(unstable & via_lower, -1.0, 0.0)
        d_hi = np.where(unstable & ~via_lower, 1.0, 0.0)
        return np.minimum(to_active, to_inactive), d_lo, d_hi


class ReLUStability(NeuronBoundPenalty):
    """``R_RS``: mean ``-tanh(1 + L U)`` (Xiao et al., 2019)."""

    def neuron_terms(self, lower, upper):
        t = np.tanh(1.0 + lower * upper)
        slope = -(1.0 - t * t)
        return -t, slope * upper, slope * lower
