"""Training regularizers that make the embedded MILP easier (docs/method.md, section 4).

Every regularizer answers one call, ``value_and_grad(ctx) -> (value, grads)``, with ``grads``
a list of ``(dW, db)`` per layer.  They compose: ``0.5 * BoundWidth() + LPGap()``.
Bound-based regularizers differentiate IBP exactly with one reverse pass
(:func:`~pyomo_nnrelax.training.ibp.ibp_backward`); the LP-gap regularizer uses LP duals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from ..bounds import is_unstable
from ..checks import positive_float, positive_int
from ..lp.projected import ProjectedLPSolver, solve_batch
from ..lp.solutions import RelaxationBatch
from ..network import Network
from ..options import GAP_METHODS, GAP_SENSES, GapMethod, GapSense, check_option
from .backprop import Grads, add_grads, scale_grads, zero_grads
from .context import RegContext
from .dual import (
    SlopeAdam,
    SlopeLayout,
    Slopes,
    SlopeStore,
    dual_backward,
    dual_forward,
    dual_plan,
)
from .ibp import ibp_backward, ibp_backward_stacked


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

    Only neurons with a ReLU count: the linear neurons a skip connection or a LeakyReLU is
    carried by have no kink to stabilise.  Subclasses give ``phi`` and its partial
    derivatives in :meth:`neuron_terms`; the gradient with respect to the weights is one IBP
    reverse pass seeded with them.
    """

    def neuron_terms(
        self, lower: np.ndarray, upper: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``phi``, ``d phi / d L`` and ``d phi / d U`` per neuron."""
        raise NotImplementedError

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        trace = ctx.ibp
        hidden = [l for l, layer in enumerate(ctx.layers) if layer.has_relu]
        if not hidden:
            return 0.0, zero_grads(ctx.layers)
        masks = [ctx.layers[l].relu_mask for l in hidden]
        # every hidden ReLU at once: [L; U] side by side, (2, |H|)
        bounds = np.concatenate([trace.pre[l][:, m] for l, m in zip(hidden, masks)], axis=1)
        phi, d_lo, d_hi = self.neuron_terms(bounds[0], bounds[1])
        n_hidden = phi.size
        stacked = np.empty((2, n_hidden))
        stacked[0], stacked[1] = d_lo, d_hi
        stacked /= n_hidden
        seeds: list[np.ndarray | None] = [None] * len(ctx.layers)
        start = 0
        for l, mask in zip(hidden, masks):
            width = int(mask.sum())
            seeds[l] = np.zeros((2, ctx.layers[l].n_out))
            seeds[l][:, mask] = stacked[:, start : start + width]
            start += width
        return float(phi.sum()) / n_hidden, ibp_backward_stacked(ctx.layers, trace, seeds)

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

    The input is fixed to ``x_i`` and the LP relaxation (bounds: IBP over the box) of the
    objective ``w' f`` is bounded; ``gap_min = w'f(x_i) - V_min(x_i)``,
    ``gap_max = V_max(x_i) - w'f(x_i)``, with ``w`` a random non-negative objective summing
    to 1 (drawn per step; ``w = 1`` for one output).

    ``gap_method="dual_network"`` (the default) solves no LP: it replaces ``V`` by the
    dual-network bound (:mod:`pyomo_nnrelax.training.dual`), a valid bound for any lower
    slopes in ``[0, 1]`` and equal to ``V`` at the best ones, so its gap is an upper bound on
    the LP gap.  The slopes are kept per training sample (``ctx.rows``), start at the
    heuristic ``1 if U > -L else 0`` and take ``slope_steps + 1`` projected Adam steps per
    call (the last one from the same reverse pass that gives the weights their gradient).

    ``gap_method="exact_lp"`` solves the LP at a random subsample of the mini-batch and
    differentiates its value with the LP duals (envelope theorem; docs/method.md, sections
    3-4).  Failed LPs are skipped and counted in ``ctx.lp_failures``.

    The gradient holds L and U fixed; ``exact_bounds=True`` adds the derivative through L
    and U with one IBP reverse pass.

    ``every=k`` computes the gap at every k-th call only, its gradient multiplied by k, and
    contributes nothing in between ("lazy regularization", Karras et al. 2020): the same
    gradient on average over k steps for 1/k of the cost (``docs/training.md`` measures it).

    Parameters
    ----------
    sense : {"min", "max", "both"}
        The downstream optimisation sense; "both" adds the two gaps.
    gap_method : {"dual_network", "exact_lp"}
        Bound the LP relaxation with the dual network, or solve it.
    samples : int, None or "default"
        Points per mini-batch (at most the batch size); None: the whole mini-batch.
        "default": the whole mini-batch for "dual_network", 8 for "exact_lp".
    exact_bounds : bool
        Include ``dV/dL dL/dtheta + dV/dU dU/dtheta``.
    solver : optional
        The Pyomo solver of ``lp_backend="pyomo"`` (default ``"appsi_highs"``; "exact_lp"
        only).
    slope_steps : int
        Extra projected slope steps per call before the one of the gradient pass
        ("dual_network").
    slope_lr : float
        Adam step size of the slopes ("dual_network").
    every : int
        Compute the gap at every ``every``-th training step only (``RegContext.step``; calls
        where the context has none), with its gradient scaled by ``every``; the value
        reported in between is the last one computed.
    weights : array-like, optional
        The objective ``w`` over the outputs when the downstream MILP's is known (e.g. the
        mean of a quantile network's outputs), in user units: the gap of ``w' f`` is closed
        instead of that of a random objective drawn per step.  One entry per output, not all
        zero.  In training units the objective is normalised to ``sum |w| = 1``, like the
        random one, so ``lam`` means the same with and without it.
    """

    def __init__(
        self,
        sense: GapSense = "min",
        gap_method: GapMethod = "dual_network",
        samples: int | None | Literal["default"] = "default",
        exact_bounds: bool = False,
        solver=None,
        slope_steps: int = 0,
        slope_lr: float = 0.5,
        every: int = 1,
        weights=None,
    ) -> None:
        self.sense = check_option("sense", sense, GAP_SENSES)
        self.gap_method = check_option("gap_method", gap_method, GAP_METHODS)
        if samples == "default":
            samples = DEFAULT_LP_SAMPLES if gap_method == "exact_lp" else None
        self.samples = None if samples is None else positive_int("samples", samples)
        self.exact_bounds, self.solver = bool(exact_bounds), solver
        self.slope_steps = positive_int("slope_steps", slope_steps, allow_zero=True)
        self.slope_lr = positive_float("slope_lr", slope_lr)
        self.every = positive_int("every", every)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        if self.weights is not None and (
            self.weights.ndim != 1
            or not np.isfinite(self.weights).all()
            or not np.any(self.weights)
        ):
            raise ValueError(f"weights must be a finite vector, one per output, got {weights!r}")
        self._calls, self._last = 0, 0.0
        self._lp: ProjectedLPSolver | None = None  # kept warm from step to step
        self._slopes: dict[str, SlopeStore] = {}  # per sense, rows of the training set

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lp": None}  # a HiGHS instance does not pickle

    def _solve(
        self, ctx: RegContext, network: Network, bounds, X: np.ndarray, omega, sense: str
    ) -> RelaxationBatch:
        """The LP relaxations at ``X`` on the trainer's backend."""
        if ctx.lp_backend == "pyomo":
            from ..relaxation import solve_relaxations  # Pyomo loads only when asked for

            return solve_relaxations(
                network, bounds, X, omega, sense, lp_backend="pyomo", solver=self.solver
            )
        if self._lp is None:
            self._lp = ProjectedLPSolver(network, bounds)
        weights = np.broadcast_to(omega, (len(X), omega.size))
        return solve_batch(network, bounds, X, weights, sense, solver=self._lp)

    def _senses(self) -> tuple[str, ...]:
        return ("min", "max") if self.sense == "both" else (self.sense,)

    def _points(self, ctx: RegContext) -> tuple[np.ndarray | None, np.ndarray]:
        """The mini-batch rows used in this step (None: all of them) and the objective ``w``."""
        pick = None
        if self.samples is not None:
            n = len(ctx.X)
            pick = np.sort(ctx.rng.choice(n, size=min(self.samples, n), replace=False))
        n_outputs = ctx.layers[-1].n_out
        if self.weights is not None:
            if self.weights.size != n_outputs:
                raise ValueError(
                    f"LPGap weights has {self.weights.size} entries; the network has "
                    f"{n_outputs} outputs"
                )
            omega = self.weights * ctx.output_scale  # the objective in training units
            return pick, omega / np.abs(omega).sum()
        omega = ctx.rng.random(n_outputs) if n_outputs > 1 else np.ones(1)
        return pick, omega / omega.sum()

    def value_and_grad(self, ctx: RegContext) -> tuple[float, Grads]:
        # the trainer's step index when it gives one (a sum holding this object twice, or a
        # second trainer reusing it, sees the same schedule), else this object's call count
        step = self._calls if ctx.step is None else ctx.step
        self._calls += 1
        if step % self.every:  # a lazy step: computed at steps 0, every, 2 every, ...
            return self._last, zero_grads(ctx.layers)
        pick, omega = self._points(ctx)
        X, out = ctx.X, ctx.forward_pass()[0]
        if pick is not None:
            X, out = X[pick], out[pick]
        gap = self._dual if self.gap_method == "dual_network" else self._exact
        total, grads, seed = 0.0, None, None  # seed: on f(X) of the rows used
        for sense in self._senses():
            value, weights, g = gap(ctx, X, pick, out, omega, sense)
            if weights is None:
                continue
            sign = 1.0 if sense == "min" else -1.0
            total += value
            term = (sign * self.every * weights)[:, None] * omega
            seed = term if seed is None else seed + term
            grads = g if grads is None else add_grads(grads, g)
        self._last = total
        if grads is None:  # every LP failed
            return total, zero_grads(ctx.layers)
        if pick is not None:
            whole = np.zeros((len(ctx.X), omega.size))
            whole[pick] = seed
            seed = whole
        return total, ctx.through_outputs(scale_grads(grads, self.every), seed)

    def _exact(self, ctx, X, pick, out, omega, sense):
        """The mean gap to the exact LP at the rows of ``X`` that solved, the weight of each
        row in it (None if none solved), and the gradient of minus the LP term."""
        network, bounds = ctx.network, ctx.ibp.to_bounds()
        batch = self._solve(ctx, network, bounds, X, omega, sense)
        ok = np.asarray(batch.ok, dtype=bool)
        ctx.lp_failures += int(np.count_nonzero(~ok))
        n_ok = np.count_nonzero(ok)
        if n_ok == 0:
            return 0.0, None, None
        sign = 1.0 if sense == "min" else -1.0
        gaps = sign * (out[ok] @ omega - np.asarray(batch.value)[ok])
        grads = [
            (-sign * nu[ok].T @ act[ok] / n_ok, -sign * nu[ok].mean(axis=0))
            for nu, act in zip(batch.affine_duals, batch.activations)
        ]
        if self.exact_bounds:
            seed_lo = [-sign * g[ok].mean(axis=0) for g in batch.lower_grad]
            seed_hi = [-sign * g[ok].mean(axis=0) for g in batch.upper_grad]
            grads = add_grads(grads, ibp_backward(ctx.layers, ctx.ibp, seed_lo, seed_hi))
        return float(gaps.mean()), ok / n_ok, grads

    def _dual(self, ctx, X, pick, out, omega, sense):
        """The mean gap to the dual-network bound, the weight of each row in it, and the
        gradient of minus the bound; the slopes take their steps on the way."""
        layers, trace, n = ctx.layers, ctx.ibp, len(X)
        sign = 1.0 if sense == "min" else -1.0
        layout = SlopeLayout.of(layers)
        plan = dual_plan(layers, trace.lower, trace.upper, X)
        rows = None if ctx.rows is None else np.asarray(ctx.rows)
        rows = rows if rows is None or pick is None else rows[pick]
        if rows is None:
            slopes = Slopes.fresh(layout.start(trace.lower, trace.upper), n)
        else:
            store = self._slopes.setdefault(sense, SlopeStore())
            slopes, unseen = store.read(layout, rows)
            if unseen.any():
                slopes.reset(unseen, layout.start(trace.lower, trace.upper))
        optimizer = SlopeAdam(self.slope_lr)
        for _ in range(self.slope_steps + 1):
            alpha = layout.split(slopes.alpha)
            bound = dual_forward(layers, trace.lower, trace.upper, X, sign * omega, alpha, plan)
            # seeded with -1/n: the derivatives of the gap's -mean(B) term
            d_bound = dual_backward(layers, bound, -1.0 / n, bounds=self.exact_bounds)
            slopes.step(optimizer, -layout.join(d_bound.slopes, n))  # ascent on B
        # the value and gradient are those of the slopes before the last step
        if rows is not None:
            store.write(rows, slopes)
        grads = d_bound.params
        if self.exact_bounds:
            grads = add_grads(grads, ibp_backward(layers, trace, d_bound.lower, d_bound.upper))
        return float((sign * (out @ omega) - bound.value).mean()), np.full(n, 1.0 / n), grads

    def __repr__(self) -> str:
        text = f"LPGap(sense={self.sense!r}, gap_method={self.gap_method!r}"
        text += f", samples={self.samples}, exact_bounds={self.exact_bounds}"
        if self.gap_method == "dual_network":
            text += f", slope_steps={self.slope_steps}"
        if self.every != 1:
            text += f", every={self.every}"
        return text + ")"


DEFAULT_LP_SAMPLES = 8
"""LPs per mini-batch of ``LPGap(gap_method="exact_lp")`` (the paper's subsample size)."""


# ---------------------------------------------------------------------- text specs
REGULARIZERS: dict[str, Callable[..., Regularizer]] = {
    "bw": lambda **lp_options: BoundWidth(),
    "lp": lambda **lp_options: LPGap(**lp_options),
    "sn": lambda **lp_options: StableNeuron(),
    "rs": lambda **lp_options: ReLUStability(),
    "l1": lambda **lp_options: L1(),
    "l2": lambda **lp_options: L2(),
}
"""Spec names and their regularizers; each takes :class:`LPGap`'s ``sense``, ``gap_method``
and ``weights`` (only the LP gap uses them)."""
NO_REGULARIZER = "none"


def parse_regularizer(
    spec: str, sense: str = "min", gap_method: GapMethod = "dual_network", lp_weights=None
) -> Regularizer | None:
    """A regularizer from a spec such as ``"bw"``, ``"bw+lp"`` or ``"0.5*bw+lp"``.

    ``"none"`` gives None.  Names: bw (bound width), lp (LP gap, optimisation ``sense``,
    ``LPGap(gap_method=gap_method, weights=lp_weights)``), sn (stable neuron), rs (ReLU
    stability), l1, l2.  Raises ValueError naming the allowed names on anything else.

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
        part = weight * REGULARIZERS[name](sense=sense, gap_method=gap_method, weights=lp_weights)
        total = part if total is None else total + part
    return total
