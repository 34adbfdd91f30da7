"""A lower bound on the big-M LP relaxation at fixed inputs without an LP solver: the dual
network (Wong and Kolter, 2018) with optimisable lower slopes (docs/method.md, sections 3-4).

With the input fixed to ``x`` and pre-activation bounds ``L <= z <= U`` taken from IBP over
the box, the big-M LP relaxation of ``min c' h^K`` is the layered LP over the triangles of
the unstable neurons (the IBP bounds are implied by the relaxation, so no other row binds).
Sweeping backward from ``lam^K = c`` (the coefficient of ``h^K``), each layer ``l >= 1``
turns the coefficient ``lam^l`` of its output into a coefficient ``mu^l`` of ``z^l``:

    stable-active or linear:  mu = lam
    stable-inactive:          mu = 0
    unstable, lam >= 0:       mu = alpha lam                (lower line h >= alpha z)
    unstable, lam <  0:       mu = s lam,  const += -s L lam  (upper line h <= s (z - L))

with ``s = U / (U - L)`` and ``alpha`` in ``[0, 1]``, adds ``mu^l . b^l`` and passes
``lam^(l-1) = W^l' mu^l`` on.  The first layer's ``z^0 = W^0 x + b^0`` is a constant, and an
unstable first-layer output lies in ``[max(z^0, 0), s (z^0 - L)]``; the bound takes the end
that ``lam^0`` prefers, exactly.  Every ``alpha`` in ``[0, 1]`` gives a lower bound ``B`` on
the LP value ``V``; the best ``alpha`` gives ``V`` itself (LP duality) wherever no
relaxation reaches an IBP bound, which is the generic case.

:func:`dual_backward` differentiates ``B`` by hand with respect to the weights, biases,
``L``, ``U`` and ``alpha``.  Its adjoint of ``lam^l`` is the primal point ``h^l`` of the
relaxation that the bound certifies, and its adjoint of ``mu^l`` is ``z^l``; the derivative
with respect to ``alpha_j`` is ``lam_j z_j``.

The training loop calls these once per mini-batch, so the per-neuron constants of a step
(:class:`DualPlan`) are computed on all layers' neurons at once, and the slopes of all
relaxed layers live side by side in one array (:class:`SlopeLayout`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..bounds import neuron_stability
from ..network import Layer
from .backprop import Grads


def heuristic_slopes(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The starting lower slopes: 1 where ``U > -L`` (the line ``h >= z`` is the closer one
    over most of ``[L, U]``), else 0."""
    return (upper > -lower).astype(np.float64)


@dataclass(frozen=True, eq=False)
class SlopeLayout:
    """Where each relaxed layer's slopes sit in one row of ``(n, width)`` slope arrays.

    The relaxed layers are the ReLU layers after the first (the first layer's ``z`` is fixed
    by the input, so its neurons need no slope).  ``columns[l]`` is the slice of layer ``l``
    (None for the others); ``neurons[k]`` is the position of column ``k`` among all the
    network's neurons, counted layer by layer.
    """

    columns: tuple[slice | None, ...]
    width: int
    neurons: np.ndarray

    @classmethod
    def of(cls, layers: Sequence[Layer]) -> SlopeLayout:
        """The layout of ``layers`` (one object per shape of network)."""
        return _layout_of_shape(tuple((layer.n_out, layer.has_relu) for layer in layers))

    def split(self, array: np.ndarray) -> list[np.ndarray | None]:
        """Per-layer views of the columns of ``array`` (n, width)."""
        return [None if c is None else array[:, c] for c in self.columns]

    def join(self, per_layer: Sequence[np.ndarray | None], n: int) -> np.ndarray:
        """The per-layer arrays of the relaxed layers side by side, (n, width)."""
        parts = [p for p, c in zip(per_layer, self.columns) if c is not None]
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))

    def start(self, lower: Sequence[np.ndarray], upper: Sequence[np.ndarray]) -> np.ndarray:
        """:func:`heuristic_slopes` of every relaxed neuron, (width,)."""
        lo, hi = np.concatenate(lower), np.concatenate(upper)
        return heuristic_slopes(lo[self.neurons], hi[self.neurons])


@functools.lru_cache(maxsize=64)
def _layout_of_shape(shape: tuple[tuple[int, bool], ...]) -> SlopeLayout:
    columns, neurons, start, offset = [], [], 0, 0
    for l, (width, has_relu) in enumerate(shape):
        if l > 0 and has_relu:
            columns.append(slice(start, start + width))
            neurons.append(np.arange(offset, offset + width))
            start += width
        else:
            columns.append(None)
        offset += width
    index = np.concatenate(neurons) if neurons else np.zeros(0, dtype=np.int64)
    return SlopeLayout(tuple(columns), start, index)


@dataclass(frozen=True)
class DualPlan:
    """What every pass at the same inputs and bounds shares (see :func:`dual_plan`).

    Per layer (views into arrays over all neurons): ``unstable`` (bool), ``active`` (1.0
    where ``h = z``: stable-active or linear), ``neg_mult`` (``mu / lam`` where ``lam < 0``:
    1 active, ``s`` unstable, 0 inactive), ``const`` (``-s L`` at unstable neurons, else 0).
    """

    unstable: list[np.ndarray]
    active: list[np.ndarray]
    neg_mult: list[np.ndarray]
    const: list[np.ndarray]
    lower: list[np.ndarray]
    upper: list[np.ndarray]
    X: np.ndarray
    z0: np.ndarray  # first-layer pre-activations, clipped to [L^0, U^0]
    low_end: np.ndarray  # first-layer output picked where lam >= 0, and its dz
    high_end: np.ndarray  # ... where lam < 0
    low_dz: np.ndarray  # (n, n_out_0)
    high_dz: np.ndarray  # (n_out_0,) or (n, n_out_0)


def dual_plan(
    layers: Sequence[Layer], lower: Sequence[np.ndarray], upper: Sequence[np.ndarray], X
) -> DualPlan:
    """The per-call constants of :func:`dual_forward` at inputs ``X`` and bounds ``L``, ``U``:
    per layer the stability, the multipliers ``mu / lam`` where ``lam < 0``, the upper
    line's constants, and the first layer's interval ends."""
    X = np.asarray(X, dtype=np.float64)
    spans, start = [], 0
    for layer in layers:
        spans.append(slice(start, start + layer.n_out))
        start += layer.n_out
    lo, hi = np.concatenate(lower), np.concatenate(upper)
    kind = np.concatenate([neuron_stability(*args) for args in zip(layers, lower, upper)])
    unstable, active = kind == 0, (kind == 1).astype(np.float64)
    s = np.where(unstable, hi / np.where(unstable, hi - lo, 1.0), 0.0)
    neg_mult, const = active + s, -s * lo
    first, lo0 = layers[0], lower[0]
    z0 = np.minimum(np.maximum(X @ first.weight.T + first.bias, lo0), upper[0])
    if first.has_relu:
        # z0 lies in [L, U]: the activation of z0 is the low end of every kind of neuron (z0,
        # 0, or the unstable max(z0, 0)), and mult z0 + const the high end (z0, 0, or
        # s (z0 - L))
        head = spans[0]
        low_end = first.activate(z0)
        high_end = neg_mult[head] * z0 + const[head]
        low_dz = np.maximum(active[head], z0 > 0.0)
        high_dz = neg_mult[head]  # broadcast over the rows where it is used
    else:
        low_end = high_end = z0
        low_dz = high_dz = np.ones_like(z0)
    return DualPlan(
        [unstable[c] for c in spans], [active[c] for c in spans], [neg_mult[c] for c in spans],
        [const[c] for c in spans], list(lower), list(upper), X, z0, low_end, high_end, low_dz,
        high_dz,
    )  # fmt: skip


@dataclass(frozen=True)
class DualPass:
    """The bound at ``n`` inputs and what :func:`dual_backward` needs.

    Attributes
    ----------
    value : ndarray (n,)
        ``B(x_i)``, a lower bound on the LP relaxation's ``min c_i' h^K``.
    lam : list of ndarray (n, n_out_l)
        Coefficient of ``h^l`` in the bound.
    mu : list of ndarray (n, n_out_l) or None
        Coefficient of ``z^l`` (None for the first layer, whose ``z`` is fixed).
    mult : list of ndarray (n, n_out_l) or None
        ``mu^l / lam^l`` per neuron (None for the first and linear layers).
    upper_line : list of ndarray (n, n_out_l) of bool or None
        Where ``lam^l < 0`` (the upper line, or 0 for stable neurons, is used).
    plan : DualPlan
        The constants shared by every pass at these inputs and bounds.
    """

    value: np.ndarray
    lam: list[np.ndarray]
    mu: list[np.ndarray | None]
    mult: list[np.ndarray | None]
    upper_line: list[np.ndarray | None]
    plan: DualPlan

    @property
    def z0(self) -> np.ndarray:
        """The first layer's pre-activations, clipped to ``[L^0, U^0]``."""
        return self.plan.z0


def dual_forward(
    layers: Sequence[Layer],
    lower: Sequence[np.ndarray],
    upper: Sequence[np.ndarray],
    X: np.ndarray,
    objective: np.ndarray,
    slopes: Sequence[np.ndarray | None],
    plan: DualPlan | None = None,
) -> DualPass:
    """The dual-network bound on ``min objective_i' h^K`` over the LP relaxation at each row
    of ``X`` (docs/method.md, sections 3-4).

    Parameters
    ----------
    layers : sequence of Layer
    lower, upper : sequence of ndarray
        Pre-activation bounds per layer (IBP over a box containing the rows of ``X``).
    X : ndarray (n, n_inputs)
    objective : ndarray (n_outputs,) or (n, n_outputs)
        ``c``, one per row or shared.  For a maximum, bound ``-max`` with ``-c``.
    slopes : sequence of (ndarray (n, n_out_l) or None)
        Lower slopes ``alpha`` in ``[0, 1]`` per layer; read only at unstable ReLUs of layers
        ``l >= 1`` (None: :func:`heuristic_slopes`).
    plan : DualPlan, optional
        :func:`dual_plan` of the same layers, bounds and ``X``, shared between passes.
    """
    plan = plan if plan is not None else dual_plan(layers, lower, upper, X)
    n, last = len(plan.X), len(layers) - 1
    lam: list[np.ndarray] = [np.empty(0)] * len(layers)
    mu: list[np.ndarray | None] = [None] * len(layers)
    mult: list[np.ndarray | None] = [None] * len(layers)
    upper_line: list[np.ndarray | None] = [None] * len(layers)
    lam[last] = np.empty((n, layers[last].n_out))
    lam[last][:] = objective
    value = np.zeros(n)
    for l in range(last, 0, -1):
        layer, coef = layers[l], lam[l]
        if layer.has_relu:
            alpha = slopes[l] if slopes[l] is not None else heuristic_slopes(lower[l], upper[l])
            negative = coef < 0.0
            mult[l] = np.where(
                negative, plan.neg_mult[l], np.where(plan.unstable[l], alpha, plan.active[l])
            )
            upper_line[l] = negative
            m = coef * mult[l]
            value += np.minimum(coef, 0.0) @ plan.const[l]
        else:
            m = coef
        mu[l] = m
        value += m @ layer.bias
        lam[l - 1] = m @ layer.weight
    value += (lam[0] * np.where(lam[0] < 0.0, plan.high_end, plan.low_end)).sum(axis=1)
    return DualPass(value, lam, mu, mult, upper_line, plan)


@dataclass(frozen=True)
class DualGrads:
    """Derivatives of ``sum_i seed_i B(x_i)``.

    Attributes
    ----------
    params : list of (dW, db)
        With respect to every layer's weights and biases (``L``, ``U`` held fixed).
    lower, upper : list of ndarray (n_out_l,) or None
        With respect to the bounds (summed over the rows); None unless asked for.
    slopes : list of ndarray (n, n_out_l) or None
        With respect to ``alpha`` per row (zero where ``alpha`` is not read).
    primal : list of ndarray (n, n_out_l)
        ``seed_i`` times the primal outputs ``h^l`` certified by the bound.
    """

    params: Grads
    lower: list[np.ndarray] | None
    upper: list[np.ndarray] | None
    slopes: list[np.ndarray | None]
    primal: list[np.ndarray]


def _upper_line_slope_derivatives(lower: np.ndarray, upper: np.ndarray, unstable: np.ndarray):
    """``s = U / (U - L)`` and its derivatives ``ds/dL = U / (U - L)^2``,
    ``ds/dU = -L / (U - L)^2`` at unstable neurons (0 elsewhere)."""
    width = np.where(unstable, upper - lower, 1.0)
    s = np.where(unstable, upper / width, 0.0)
    return s, np.where(unstable, upper / width**2, 0.0), np.where(unstable, -lower / width**2, 0.0)


def dual_backward(
    layers: Sequence[Layer], trace: DualPass, seed: np.ndarray | float, bounds: bool = True
) -> DualGrads:
    """Reverse pass of :func:`dual_forward`: derivatives of ``sum_i seed_i B(x_i)``
    (with respect to ``L`` and ``U`` only if ``bounds``); a float ``seed`` is the same for
    every row.

    At a kink (``lam_j = 0`` of an unstable neuron, ``z^0_j = 0``) one branch is taken: the
    lower line, and the slope 0 of ``max(z, 0)``.
    """
    plan = trace.plan
    n_layers = len(layers)
    if isinstance(seed, (int, float)):
        g, g_rows = float(seed), None
    else:
        g_rows = np.asarray(seed, dtype=np.float64)
        g = g_rows[:, None]
    params: Grads = [None] * n_layers  # type: ignore[list-item]
    d_lower = [np.zeros(layer.n_out) for layer in layers] if bounds else None
    d_upper = [np.zeros(layer.n_out) for layer in layers] if bounds else None
    d_slopes: list[np.ndarray | None] = [None] * n_layers
    primal: list[np.ndarray] = [np.empty(0)] * n_layers
    # first layer: value += lam^0 . eta(z^0)
    coef = trace.lam[0]
    negative = coef < 0.0
    primal[0] = g * np.where(negative, plan.high_end, plan.low_end)
    z_bar = g * coef * np.where(negative, plan.high_dz, plan.low_dz)
    params[0] = (z_bar.T @ plan.X, z_bar.sum(axis=0))
    if bounds and layers[0].has_relu:
        lo, hi, z0 = plan.lower[0], plan.upper[0], plan.z0
        s, s_lo, s_hi = _upper_line_slope_derivatives(lo, hi, plan.unstable[0])
        weighted = np.where(negative & plan.unstable[0], g * coef, 0.0)
        d_lower[0] += (weighted * (s_lo * (z0 - lo) - s)).sum(axis=0)
        d_upper[0] += (weighted * s_hi * (z0 - lo)).sum(axis=0)
    lam_bar = primal[0]
    for l in range(1, n_layers):
        layer, m = layers[l], trace.mu[l]
        # lam^(l-1) = mu^l W^l and value += mu^l . b^l; mu_bar is seed times z^l
        mu_bar = lam_bar @ layer.weight.T + g * layer.bias
        d_bias = g * m.sum(axis=0) if g_rows is None else g_rows @ m
        params[l] = (m.T @ lam_bar, d_bias)
        if layer.has_relu:
            coef, upper_line = trace.lam[l], trace.upper_line[l]
            # mu = mult lam, and value += min(lam, 0) . const
            lam_bar = mu_bar * trace.mult[l] + np.where(upper_line, g * plan.const[l], 0.0)
            d_slopes[l] = np.where(upper_line | ~plan.unstable[l], 0.0, coef * mu_bar)
            if bounds:
                lo, hi = plan.lower[l], plan.upper[l]
                s, s_lo, s_hi = _upper_line_slope_derivatives(lo, hi, plan.unstable[l])
                on_line = np.where(upper_line & plan.unstable[l], coef, 0.0)
                # mu = s lam and const = -s L lam on the upper line
                s_bar = on_line * (mu_bar - g * lo)
                d_lower[l] += (s_bar * s_lo - g * s * on_line).sum(axis=0)
                d_upper[l] += (s_bar * s_hi).sum(axis=0)
        else:
            lam_bar = mu_bar
        primal[l] = lam_bar
    return DualGrads(params, d_lower, d_upper, d_slopes, primal)


class SlopeAdam:
    """Projected Adam ascent on the lower slopes of many samples, each with its own moments
    and step count, kept between calls (the slopes of a training sample are a warm start for
    its next mini-batch).

    Parameters
    ----------
    lr : float
        Step size in slope units (slopes live in ``[0, 1]``).
    betas, eps :
        As in :class:`~pyomo_nnrelax.training.optim.Adam`.
    """

    def __init__(
        self, lr: float = 0.2, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-12
    ) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps

    def step(
        self,
        alpha: np.ndarray,
        grad: np.ndarray,
        m: np.ndarray,
        v: np.ndarray,
        t: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``alpha`` moved up ``grad`` and clipped to ``[0, 1]``; new ``m``, ``v``.

        ``t`` (n,) is each row's step count after this step (at least 1).
        """
        b1, b2 = self.betas
        m = b1 * m + (1.0 - b1) * grad
        v = b2 * v + (1.0 - b2) * (grad * grad)
        step = m / (1.0 - b1**t)[:, None]
        step /= np.sqrt(v / (1.0 - b2**t)[:, None]) + self.eps
        step *= self.lr
        step += alpha
        return np.minimum(np.maximum(step, 0.0, out=step), 1.0, out=step), m, v


class Slopes:
    """Slopes of some samples with their Adam moments and step counts, packed side by side in
    one ``(n, 3 width + 1)`` array (one gather and one scatter per training step):
    ``alpha``, ``m`` and ``v`` are (n, width) views in the columns of a
    :class:`SlopeLayout`, ``t`` the (n,) step counts."""

    def __init__(self, packed: np.ndarray) -> None:
        self.packed = packed
        width = (packed.shape[1] - 1) // 3
        self.alpha = packed[:, :width]
        self.m = packed[:, width : 2 * width]
        self.v = packed[:, 2 * width : 3 * width]
        self.t = packed[:, 3 * width]

    @classmethod
    def fresh(cls, start: np.ndarray, n: int) -> Slopes:
        """``n`` samples at the slopes ``start`` (width,) with zero moments."""
        slopes = cls(np.zeros((n, 3 * start.size + 1)))
        slopes.alpha[:] = start
        return slopes

    def reset(self, rows: np.ndarray, start: np.ndarray) -> None:
        """Put ``rows`` (a mask or indices) back at the slopes ``start`` with zero moments."""
        self.packed[rows] = 0.0
        self.alpha[rows] = start

    def step(self, optimizer: SlopeAdam, grad: np.ndarray) -> None:
        """One projected Adam ascent step of every row along ``grad`` (n, width)."""
        self.t += 1.0
        self.alpha[:], self.m[:], self.v[:] = optimizer.step(
            self.alpha, grad, self.m, self.v, self.t
        )


class SlopeStore:
    """Lower slopes, and their Adam moments, per training sample.

    Row ``i`` belongs to row ``i`` of the training set; a sample starts (by the caller) at
    :func:`heuristic_slopes` of the bounds of the step in which it is first seen.  The arrays
    grow to the largest row index seen, and start again when the layout changes.
    """

    def __init__(self) -> None:
        self.layout: SlopeLayout | None = None
        self.state = Slopes(np.zeros((0, 1)))
        self.seen = np.zeros(0, dtype=bool)

    def _fit(self, layout: SlopeLayout, n_rows: int) -> None:
        if self.layout is None or layout.columns != self.layout.columns:
            self.layout = layout
            self.state = Slopes.fresh(np.zeros(layout.width), 0)
            self.seen = np.zeros(0, dtype=bool)
        grow = n_rows - self.seen.size
        if grow > 0:
            more = np.zeros((grow, self.state.packed.shape[1]))
            self.state = Slopes(np.concatenate([self.state.packed, more]))
            self.seen = np.concatenate([self.seen, np.zeros(grow, dtype=bool)])

    def read(self, layout: SlopeLayout, rows: np.ndarray) -> tuple[Slopes, np.ndarray]:
        """Slopes, moments and step counts of ``rows`` (copies), and which of them were never
        seen (the caller starts those, :meth:`Slopes.reset`)."""
        self._fit(layout, int(rows.max()) + 1 if rows.size else 0)
        return Slopes(self.state.packed[rows]), ~self.seen[rows]

    def write(self, rows: np.ndarray, slopes: Slopes) -> None:
        """Store what :meth:`read` gave, after the caller's steps."""
        self.state.packed[rows] = slopes.packed
        self.seen[rows] = True
