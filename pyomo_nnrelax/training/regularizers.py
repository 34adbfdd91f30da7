"""Training regularizers that make the embedded MILP easier (docs/method.md, section 4).

Every regularizer answers one call, ``value_and_grad(ctx) -> (value, grads)``, with ``grads``
a list of ``(dW, db)`` per layer.  They compose: ``0.5 * BoundWidth() + LPGap()``.
Bound-based regularizers differentiate IBP exactly with one reverse pass
(:func:`~pyomo_nnrelax.training.ibp.ibp_backward`); the LP-gap regularizer uses LP duals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..bounds import is_unstable
from ..box import InputBox
from ..checks import positive_int
from ..lp.projected import ProjectedLPSolver, solve_batch
from ..lp.solutions import RelaxationBatch
from ..network import Layer, Network, forward_cache
from ..options import GAP_SENSES, GapSense, check_option
from .backprop import Grads, add_grads, backward, zero_grads
from .ibp import IBPTrace, ibp_backward, ibp_forward


@dataclass
class RegContext:
    """What a regularizer may look at in one training step.

    Attributes
    ----------
    layers : tuple of Layer
        Current weights, in training (scaled-target) units.
    input_lower, input_upper : ndarray or None
        The input box every bound is taken over (None only when no regularizer in use
        needs bounds, see ``Regularizer.uses_bounds``).
    X : ndarray (batch, n_inputs)
        The current mini-batch.
    rng : numpy Generator
        For subsampling and random objectives; seeded by the trainer.
    lp_backend : {"highs", "pyomo"}
        Passed to the LP solves of :class:`LPGap`.
    lp_failures : int
        LP solves that failed in this step (regularizers add to it).
    """

    layers: tuple[Layer, ...]
    input_lower: np.ndarray | None
    input_upper: np.ndarray | None
    X: np.ndarray
    rng: np.random.Generator
    lp_backend: str = "highs"
    lp_failures: int = 0
    _ibp: IBPTrace | None = field(default=None, repr=False)

    @property
    def ibp(self) -> IBPTrace:
        """IBP bounds of the current layers over the box, computed once per step."""
        if self._ibp is None:
            self._ibp = ibp_forward(self.layers, self.input_lower, self.input_upper)
        return self._ibp

    @property
    def network(self) -> Network:
        """The current layers as a :class:`Network` carrying the input box."""
        return Network(self.layers, input_bounds=InputBox(self.input_lower, self.input_upper))


class Regularizer:
    """Base class: a penalty ``R(theta)`` with its gradient; supports ``+`` and scalar ``*``."""

    uses_bounds: bool = True

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        """``R`` at ``ctx.layers`` and ``[(dR/dW^l, dR/db^l) for each layer]``."""
        raise NotImplementedError

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

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        total, grads = 0.0, zero_grads(ctx.layers)
        for weight, reg in self.terms:
            value, g = reg.value_and_grad(ctx)
            total += weight * value
            grads = add_grads(grads, g, weight)
        return total, grads

    def __repr__(self) -> str:
        return " + ".join(f"{w:g} * {r!r}" for w, r in self.terms)


class L1(Regularizer):
    """``R_L1 = sum_l ||W^l||_1`` (biases are not penalised); subgradient 0 at 0."""

    uses_bounds = False

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        value = sum(float(np.abs(layer.weight).sum()) for layer in ctx.layers)
        return value, [(np.sign(layer.weight), np.zeros_like(layer.bias)) for layer in ctx.layers]

    def __repr__(self) -> str:
        return "L1()"


class L2(Regularizer):
    """``R_L2 = sum_l ||W^l||_F^2`` (biases are not penalised)."""

    uses_bounds = False

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        value = sum(float((layer.weight**2).sum()) for layer in ctx.layers)
        return value, [(2.0 * layer.weight, np.zeros_like(layer.bias)) for layer in ctx.layers]

    def __repr__(self) -> str:
        return "L2()"


class NeuronBoundPenalty(Regularizer):
    """Mean over hidden (ReLU) neurons of ``phi(L, U)`` of their IBP bounds.

    Subclasses give ``phi`` and its partial derivatives in :meth:`neuron_terms`; the gradient
    with respect to the weights is one IBP reverse pass seeded with them.
    """

    def neuron_terms(
        self, lower: np.ndarray, upper: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``phi``, ``d phi / d L`` and ``d phi / d U`` per neuron."""
        raise NotImplementedError

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        trace = ctx.ibp
        hidden = [layer.activation == "relu" for layer in ctx.layers]
        n_hidden = sum(layer.n_out for layer, h in zip(ctx.layers, hidden) if h)
        if n_hidden == 0:
            return 0.0, zero_grads(ctx.layers)
        value, seed_lo, seed_hi = 0.0, [], []
        for is_hidden, lo, hi in zip(hidden, trace.lower, trace.upper):
            if not is_hidden:
                seed_lo.append(None)
                seed_hi.append(None)
                continue
            phi, d_lo, d_hi = self.neuron_terms(lo, hi)
            value += float(phi.sum())
            seed_lo.append(d_lo / n_hidden)
            seed_hi.append(d_hi / n_hidden)
        return value / n_hidden, ibp_backward(ctx.layers, trace, seed_lo, seed_hi)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


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


class LPGap(Regularizer):
    """``R_LP``: mean gap between the network and its big-M LP relaxation at training points.

    For a random subsample of the mini-batch, the input is fixed to ``x_i`` and the LP
    relaxation (bounds: IBP over the box) is solved; ``gap_min = w'f(x_i) - V_min(x_i)``,
    ``gap_max = V_max(x_i) - w'f(x_i)``, with ``w`` a random non-negative objective summing
    to 1 (drawn per step; ``w = 1`` for one output).  The gradient holds L and U fixed and
    uses the LP duals (envelope theorem); ``exact_bounds=True`` adds the derivative through
    L and U with one IBP reverse pass.  Failed LPs are skipped and counted in
    ``ctx.lp_failures``.

    Parameters
    ----------
    sense : {"min", "max", "both"}
        The downstream optimisation sense; "both" adds the two gaps.
    samples : int
        Points per mini-batch (at most the batch size).
    exact_bounds : bool
        Include ``dV/dL dL/dtheta + dV/dU dU/dtheta``.
    solver : optional
        The Pyomo solver of ``lp_backend="pyomo"`` (default ``"appsi_highs"``).
    """

    def __init__(
        self, sense: GapSense = "min", samples: int = 8, exact_bounds: bool = False, solver=None
    ) -> None:
        self.sense = check_option("sense", sense, GAP_SENSES)
        self.samples = positive_int("samples", samples)
        self.exact_bounds, self.solver = bool(exact_bounds), solver
        self._lp: ProjectedLPSolver | None = None  # kept warm from step to step

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lp": None}  # a HiGHS instance does not pickle

    def _solve(
        self, ctx: RegContext, network: Network, bounds, X: np.ndarray, omega, sense: str
    ) -> RelaxationBatch:
        """The LP relaxations at ``X`` on the trainer's backend."""
        if ctx.lp_backend == "pyomo":
            from ..relaxation import solve_relaxations  # Pyomo loads only when asked for

            return solve_relaxations(
                network, bounds, X, omega, sense, backend="pyomo", solver=self.solver
            )
        if self._lp is None:
            self._lp = ProjectedLPSolver(network, bounds)
        weights = np.broadcast_to(omega, (len(X), omega.size))
        return solve_batch(network, bounds, X, weights, sense, solver=self._lp)

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        n_outputs = ctx.layers[-1].n_out
        rows = ctx.rng.choice(len(ctx.X), size=min(self.samples, len(ctx.X)), replace=False)
        X = ctx.X[np.sort(rows)]
        omega = ctx.rng.random(n_outputs) if n_outputs > 1 else np.ones(1)
        omega = omega / omega.sum()
        out, inputs, pre = forward_cache(ctx.layers, X)
        # one Network and one NetworkBounds per step, so both senses reuse the built LP
        network, bounds = ctx.network, ctx.ibp.to_bounds()
        total, grads = 0.0, zero_grads(ctx.layers)
        for sense in ("min", "max") if self.sense == "both" else (self.sense,):
            batch = self._solve(ctx, network, bounds, X, omega, sense)
            ok = np.asarray(batch.ok, dtype=bool)
            ctx.lp_failures += int(np.count_nonzero(~ok))
            if not ok.any():
                continue
            sign, n_ok = (1.0 if sense == "min" else -1.0), np.count_nonzero(ok)
            gaps = sign * (out[ok] @ omega - np.asarray(batch.value)[ok])
            total += float(gaps.mean())
            d_f = backward(ctx.layers, inputs, pre, sign * np.outer(ok / n_ok, omega))
            d_v = [
                (nu[ok].T @ act[ok] / n_ok, nu[ok].mean(axis=0))
                for nu, act in zip(batch.affine_duals, batch.activations)
            ]
            grads = add_grads(grads, add_grads(d_f, d_v, -sign))
            if self.exact_bounds:
                seed_lo = [-sign * g[ok].mean(axis=0) for g in batch.lower_grad]
                seed_hi = [-sign * g[ok].mean(axis=0) for g in batch.upper_grad]
                grads = add_grads(grads, ibp_backward(ctx.layers, ctx.ibp, seed_lo, seed_hi))
        return total, grads

    def __repr__(self) -> str:
        return (
            f"LPGap(sense={self.sense!r}, samples={self.samples}, exact_bounds={self.exact_bounds})"
        )


# ---------------------------------------------------------------------- text specs
REGULARIZERS: dict[str, Callable[[str], Regularizer]] = {
    "bw": lambda sense: BoundWidth(),
    "lp": lambda sense: LPGap(sense=sense),
    "sn": lambda sense: StableNeuron(),
    "rs": lambda sense: ReLUStability(),
    "l1": lambda sense: L1(),
    "l2": lambda sense: L2(),
}
NO_REGULARIZER = "none"


def parse_regularizer(spec: str, sense: str = "min") -> Regularizer | None:
    """A regularizer from a spec such as ``"bw"``, ``"bw+lp"`` or ``"0.5*bw+lp"``.

    ``"none"`` gives None.  Names: bw (bound width), lp (LP gap, optimisation ``sense``),
    sn (stable neuron), rs (ReLU stability), l1, l2.  Raises ValueError naming the allowed
    names on anything else.

    >>> parse_regularizer("0.5*bw + lp")
    0.5 * BoundWidth() + 1 * LPGap(sense='min', samples=8, exact_bounds=False)
    >>> parse_regularizer("none") is None
    True
    """
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
        part = weight * REGULARIZERS[name](sense)
        total = part if total is None else total + part
    return total
