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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..bounds import is_unstable
from ..network import Layer
from .backprop import Grads


def neuron_kind(layer: Layer, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """1 where ``h = z`` (stable-active ReLU or a linear layer), 0 unstable, -1 inactive."""
    if layer.activation != "relu":
        return np.ones(layer.n_out, dtype=np.int64)
    return np.where(is_unstable(lower, upper), 0, np.where(lower >= 0.0, 1, -1))


def heuristic_slopes(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The starting lower slopes: 1 where ``U > -L`` (the line ``h >= z`` is the closer one
    over most of ``[L, U]``), else 0."""
    return np.where(upper > -lower, 1.0, 0.0)


def _slope_terms(lower: np.ndarray, upper: np.ndarray, kind: np.ndarray):
    """``s = U / (U - L)`` and its derivatives ``ds/dL``, ``ds/dU`` (0 where not unstable)."""
    unstable = kind == 0
    width = np.where(unstable, upper - lower, 1.0)
    s = np.where(unstable, upper / width, 0.0)
    return s, np.where(unstable, upper / width**2, 0.0), np.where(unstable, -lower / width**2, 0.0)


@dataclass(frozen=True)
class DualPlan:
    """What every pass at the same inputs and bounds shares (see :func:`dual_plan`)."""

    kinds: list[np.ndarray]
    unstable: list[np.ndarray]  # float 0/1
    neg_mult: list[np.ndarray]  # mu / lam where lam < 0: 1 active, s unstable, 0 inactive
    pos_base: list[np.ndarray]  # mu / lam where lam >= 0, without alpha: 1 active, else 0
    const: list[np.ndarray]  # -s L for unstable neurons, else 0
    slope: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # s, ds/dL, ds/dU
    lower: list[np.ndarray]
    upper: list[np.ndarray]
    X: np.ndarray
    z0: np.ndarray
    low_end: np.ndarray  # first-layer output picked where lam >= 0, and its dz
    high_end: np.ndarray  # ... where lam < 0
    low_dz: np.ndarray
    high_dz: np.ndarray


def dual_plan(
    layers: Sequence[Layer], lower: Sequence[np.ndarray], upper: Sequence[np.ndarray], X
) -> DualPlan:
    """The per-call constants of :func:`dual_forward` at inputs ``X`` and bounds ``L``, ``U``:
    per layer the stability, the multipliers ``mu / lam`` on each side of 0, the upper
    line's constants, and the first layer's interval ends."""
    X = np.asarray(X, dtype=np.float64)
    kinds, unstable, neg_mult, pos_base, const, slope = [], [], [], [], [], []
    for layer, lo, hi in zip(layers, lower, upper):
        kind = neuron_kind(layer, lo, hi)
        terms = _slope_terms(lo, hi, kind)
        active = (kind == 1).astype(np.float64)
        kinds.append(kind)
        unstable.append((kind == 0).astype(np.float64))
        neg_mult.append(active + terms[0])
        pos_base.append(active)
        const.append(-terms[0] * lo)
        slope.append(terms)
    first, lo = layers[0], lower[0]
    z0 = np.clip(X @ first.weight.T + first.bias, lo, upper[0])
    if first.activation == "relu":
        s, act, unst = slope[0][0], pos_base[0], unstable[0]
        low_end = act * z0 + unst * np.maximum(z0, 0.0)
        high_end = act * z0 + s * (z0 - lo)
        low_dz = act + unst * (z0 > 0.0)
        high_dz = np.broadcast_to(act + s, z0.shape)
    else:
        low_end = high_end = z0
        low_dz = high_dz = np.ones_like(z0)
    return DualPlan(
        kinds, unstable, neg_mult, pos_base, const, slope, list(lower), list(upper), X, z0,
        low_end, high_end, low_dz, high_dz,
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
    slopes : list of ndarray or None
        The lower slopes ``alpha`` used (None where the layer has no relaxed neurons, i.e. the
        first and linear layers).
    plan : DualPlan
        The constants shared by every pass at these inputs and bounds.
    """

    value: np.ndarray
    lam: list[np.ndarray]
    mu: list[np.ndarray | None]
    mult: list[np.ndarray | None]
    slopes: list[np.ndarray | None]
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
    used: list[np.ndarray | None] = [None] * len(layers)
    lam[last] = np.array(np.broadcast_to(objective, (n, layers[last].n_out)), dtype=np.float64)
    value = np.zeros(n)
    for l in range(last, 0, -1):
        layer, coef = layers[l], lam[l]
        if layer.activation == "relu":
            alpha = slopes[l] if slopes[l] is not None else heuristic_slopes(lower[l], upper[l])
            used[l] = alpha
            positive = alpha * plan.unstable[l] + plan.pos_base[l]
            mult[l] = np.where(coef < 0.0, plan.neg_mult[l], positive)
            m = coef * mult[l]
            value += np.minimum(coef, 0.0) @ plan.const[l]
        else:
            m = coef
        mu[l] = m
        value += m @ layer.bias
        lam[l - 1] = m @ layer.weight
    value += (lam[0] * np.where(lam[0] < 0.0, plan.high_end, plan.low_end)).sum(axis=1)
    return DualPass(value, lam, mu, mult, used, plan)


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


def dual_backward(
    layers: Sequence[Layer], trace: DualPass, seed: np.ndarray, bounds: bool = True
) -> DualGrads:
    """Reverse pass of :func:`dual_forward`: derivatives of ``sum_i seed_i B(x_i)``
    (with respect to ``L`` and ``U`` only if ``bounds``).

    At a kink (``lam_j = 0`` of an unstable neuron, ``z^0_j = 0``) one branch is taken: the
    lower line, and the slope 0 of ``max(z, 0)``.
    """
    plan = trace.plan
    g = np.asarray(seed, dtype=np.float64)[:, None]
    n_layers = len(layers)
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
    if bounds and layers[0].activation == "relu":
        lo, z0 = plan.lower[0], plan.z0
        s, s_lo, s_hi = plan.slope[0]
        weighted = np.where(negative, g * coef, 0.0) * plan.unstable[0]
        d_lower[0] += (weighted * (s_lo * (z0 - lo) - s)).sum(axis=0)
        d_upper[0] += (weighted * s_hi * (z0 - lo)).sum(axis=0)
    lam_bar = primal[0]
    for l in range(1, n_layers):
        layer, coef, m = layers[l], trace.lam[l], trace.mu[l]
        # lam^(l-1) = mu^l W^l and value += mu^l . b^l; mu_bar is seed times z^l
        mu_bar = lam_bar @ layer.weight.T + g * layer.bias
        params[l] = (m.T @ lam_bar, g[:, 0] @ m)
        if layer.activation == "relu":
            negative = coef < 0.0
            # mu = mult lam, and value += min(lam, 0) . const
            lam_bar = mu_bar * trace.mult[l] + g * np.where(negative, plan.const[l], 0.0)
            d_slopes[l] = np.where(negative, 0.0, coef * mu_bar) * plan.unstable[l]
            if bounds:
                lo = plan.lower[l]
                s, s_lo, s_hi = plan.slope[l]
                upper_line = np.where(negative, coef, 0.0) * plan.unstable[l]
                # mu = s lam and const = -s L lam on the upper line
                s_bar = upper_line * (mu_bar - g * lo)
                d_lower[l] += (s_bar * s_lo - g * s * upper_line).sum(axis=0)
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
        v = b2 * v + (1.0 - b2) * grad * grad
        c1 = (1.0 - b1**t)[:, None]
        c2 = (1.0 - b2**t)[:, None]
        step = (m / c1) / (np.sqrt(v / c2) + self.eps)
        return np.clip(alpha + self.lr * step, 0.0, 1.0), m, v


class SlopeStore:
    """Lower slopes, and their Adam moments, per training sample and layer.

    Row ``i`` of every array belongs to row ``i`` of the training set; a slope is NaN until
    the sample is first seen, and then starts at :func:`heuristic_slopes` of the bounds of
    that step.  The arrays grow to the largest row index seen.
    """

    def __init__(self) -> None:
        self.alpha: list[np.ndarray | None] = []
        self.m: list[np.ndarray | None] = []
        self.v: list[np.ndarray | None] = []
        self.t = np.zeros(0)

    def _fit(self, widths: list[int | None], n_rows: int) -> None:
        shapes = [None if a is None else a.shape[1] for a in self.alpha]
        if shapes != widths:
            self.alpha = [None if w is None else np.full((0, w), np.nan) for w in widths]
            self.m = [None if w is None else np.zeros((0, w)) for w in widths]
            self.v = [None if w is None else np.zeros((0, w)) for w in widths]
            self.t = np.zeros(0)
        grow = n_rows - self.t.size
        if grow <= 0:
            return
        for arrays, fill in ((self.alpha, np.nan), (self.m, 0.0), (self.v, 0.0)):
            for l, a in enumerate(arrays):
                if a is not None:
                    arrays[l] = np.concatenate([a, np.full((grow, a.shape[1]), fill)])
        self.t = np.concatenate([self.t, np.zeros(grow)])

    def read(
        self,
        layers: Sequence[Layer],
        lower: Sequence[np.ndarray],
        upper: Sequence[np.ndarray],
        rows: np.ndarray,
    ) -> tuple[list[np.ndarray | None], list, list, np.ndarray]:
        """Slopes, moments and step counts of ``rows`` (copies), unseen slopes initialised."""
        widths = [
            layer.n_out if l > 0 and layer.activation == "relu" else None
            for l, layer in enumerate(layers)
        ]
        self._fit(widths, int(rows.max()) + 1 if rows.size else 0)
        alpha, m, v = [], [], []
        for l, a in enumerate(self.alpha):
            if a is None:
                alpha.append(None)
                m.append(None)
                v.append(None)
                continue
            start = heuristic_slopes(lower[l], upper[l])
            alpha.append(np.where(np.isnan(a[rows]), start, a[rows]))
            m.append(self.m[l][rows])
            v.append(self.v[l][rows])
        return alpha, m, v, self.t[rows].copy()

    def write(self, rows: np.ndarray, alpha, m, v, t: np.ndarray) -> None:
        """Store what :meth:`read` gave, after the caller's steps."""
        for l, a in enumerate(alpha):
            if a is not None:
                self.alpha[l][rows], self.m[l][rows], self.v[l][rows] = a, m[l], v[l]
        self.t[rows] = t


def fresh_slopes(
    layers: Sequence[Layer], lower: Sequence[np.ndarray], upper: Sequence[np.ndarray], n: int
) -> tuple[list[np.ndarray | None], list, list, np.ndarray]:
    """Heuristic slopes and zero moments for ``n`` samples without a stored state."""
    alpha, m, v = [], [], []
    for l, layer in enumerate(layers):
        if l == 0 or layer.activation != "relu":
            alpha.append(None)
            m.append(None)
            v.append(None)
            continue
        alpha.append(np.tile(heuristic_slopes(lower[l], upper[l]), (n, 1)))
        m.append(np.zeros((n, layer.n_out)))
        v.append(np.zeros((n, layer.n_out)))
    return alpha, m, v, np.zeros(n)
