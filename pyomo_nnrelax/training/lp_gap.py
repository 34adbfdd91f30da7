"""The LP-gap regularizer: the gap between the network and its big-M LP relaxation at
training points, closed with the LP's duals or with the dual network's bound
(docs/method.md, sections 3-4)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..checks import positive_float, positive_int
from ..lp.projected import ProjectedLPSolver, solve_batch
from ..lp.solutions import RelaxationBatch
from ..network import Network
from ..options import GAP_METHODS, GAP_SENSES, GapMethod, GapSense, check_option
from .backprop import Grads, add_grads, scale_grads, weight_gradient, zero_grads
from .context import RegContext
from .dual import DualPlan, SlopeStore, dual_backward, dual_bound, dual_plan
from .ibp import ibp_backward
from .optim import SlopeAdam, Slopes
from .regularizers import Regularizer


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
    ball : float, optional
        Take the bounds (the big-M constants of the relaxation) over each sample's
        L-infinity ball of this radius, clipped to the box, instead of the whole box
        ("dual_network" only); see :class:`NeuronBoundPenalty`.
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
        ball: float | None = None,
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
        self.ball = None if ball is None else positive_float("ball", ball)
        if self.ball is not None and self.gap_method != "dual_network":
            raise ValueError(
                "ball= needs gap_method='dual_network': the exact LP over each sample's ball "
                "would be a new LP per sample"
            )
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

    def state(self) -> dict[str, np.ndarray]:
        """The call count, the last value, and the dual-network slopes of every training
        sample seen, per sense."""
        out = {"calls": np.array(self._calls), "last": np.array(self._last)}
        for sense, store in self._slopes.items():
            out.update({f"slopes.{sense}.{k}": v for k, v in store.arrays().items()})
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self._calls, self._last = int(state["calls"]), float(state["last"])
        self._slopes = {}
        for sense in GAP_SENSES:
            prefix = f"slopes.{sense}."
            if f"{prefix}packed" in state:
                arrays = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                self._slopes[sense] = SlopeStore.from_arrays(arrays)

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
            (-sign * weight_gradient(layer, nu[ok], act[ok]) / n_ok, -sign * nu[ok].mean(axis=0))
            for layer, nu, act in zip(ctx.layers, batch.affine_duals, batch.activations)
        ]
        if self.exact_bounds:
            seed_lo = [-sign * g[ok].mean(axis=0) for g in batch.lower_grad]
            seed_hi = [-sign * g[ok].mean(axis=0) for g in batch.upper_grad]
            grads = add_grads(grads, ibp_backward(ctx.layers, ctx.ibp, seed_lo, seed_hi))
        return float(gaps.mean()), ok / n_ok, grads

    def _dual(self, ctx, X, pick, out, omega, sense):
        """The mean gap to the dual-network bound, the weight of each row in it, and the
        gradient of minus the bound; the slopes take their steps on the way."""
        layers, n = ctx.layers, len(X)
        bounds = ctx.neuron_bounds(self.ball)
        if self.ball is not None and pick is not None:  # the balls of the rows used
            bounds = bounds[:, pick]
        sign = 1.0 if sense == "min" else -1.0
        plan = dual_plan(layers, bounds, X)
        rows = None if ctx.rows is None else np.asarray(ctx.rows)
        rows = rows if rows is None or pick is None else rows[pick]
        slopes = self._read_slopes(plan, rows, sense)
        optimizer = SlopeAdam(self.slope_lr)
        for _ in range(self.slope_steps + 1):
            bound = dual_bound(layers, plan, sign * omega, slopes.alpha.T)
            # seeded with -1/n: the derivatives of the gap's -mean(B) term
            d_bound = dual_backward(layers, bound, -1.0 / n, bounds=self.exact_bounds)
            slopes.step(optimizer, d_bound.slope_rows)  # ascent on B
        # the value and gradient are those of the slopes before the last step
        if rows is not None:
            self._slopes[sense].write(rows, slopes)
        grads = d_bound.params
        if self.exact_bounds:
            d_lower, d_upper = d_bound.lower, d_bound.upper
            if self.ball is not None and pick is not None:  # back to the whole mini-batch
                d_lower, d_upper = (_scatter_rows(d, pick, len(ctx.X)) for d in (d_lower, d_upper))
            trace = ctx.ibp if self.ball is None else ctx.ball_ibp(self.ball)
            grads = add_grads(grads, ibp_backward(layers, trace, d_lower, d_upper))
        gap = float((sign * (out @ omega) - bound.value).sum()) / n
        return gap, np.full(n, 1.0 / n), grads

    def _read_slopes(self, plan: DualPlan, rows: np.ndarray | None, sense: str) -> Slopes:
        """The slopes of the training rows ``rows`` kept for ``sense``, the ones never seen at
        the heuristic start (all of them without ``rows``)."""
        if rows is None:
            return Slopes.fresh(plan.start_slopes(), len(plan.X))
        store = self._slopes.setdefault(sense, SlopeStore())
        slopes, unseen = store.read(plan.slopes, rows)
        if unseen.any():
            start = plan.start_slopes()
            slopes.reset(unseen, start[unseen] if start.ndim == 2 else start)
        return slopes

    def __repr__(self) -> str:
        text = f"LPGap(sense={self.sense!r}, gap_method={self.gap_method!r}"
        text += f", samples={self.samples}, exact_bounds={self.exact_bounds}"
        if self.gap_method == "dual_network":
            text += f", slope_steps={self.slope_steps}"
        if self.every != 1:
            text += f", every={self.every}"
        if self.ball is not None:
            text += f", ball={self.ball:g}"
        return text + ")"


def _scatter_rows(per_layer: list[np.ndarray], rows: np.ndarray, n: int) -> list[np.ndarray]:
    """Per-layer arrays of some rows of a batch, as arrays of all ``n`` rows (zeros
    elsewhere)."""
    out = []
    for part in per_layer:
        whole = np.zeros((n, part.shape[1]))
        whole[rows] = part
        out.append(whole)
    return out


DEFAULT_LP_SAMPLES = 8
"""LPs per mini-batch of ``LPGap(gap_method="exact_lp")`` (the paper's subsample size)."""
