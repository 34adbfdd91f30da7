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

The training loop calls these once per mini-batch on small arrays, so what a step costs is
the number of numpy calls.  The per-neuron constants of a step (:class:`DualPlan`) are
computed on all layers' neurons at once, and a pass keeps every layer's coefficients in one
array with a row per neuron (layer by layer, :class:`~pyomo_nnrelax.training.ibp.NeuronLayout`)
and a column per input: each layer's block of rows is contiguous memory, and what does not
feed the next layer (the bound's value, the derivatives with respect to the biases, the
slopes and the bounds) takes one call for all layers.  The slopes of all relaxed layers
live side by side in one array (:class:`SlopeLayout`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..bounds import neuron_stability
from ..network import Layer
from .backprop import Grads, weight_gradient
from .ibp import NeuronLayout, positions
from .optim import Slopes


def heuristic_slopes(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The starting lower slopes: 1 where ``U > -L`` (the line ``h >= z`` is the closer one
    over most of ``[L, U]``), else 0."""
    return (upper > -lower).astype(np.float64)


@dataclass(frozen=True, eq=False)
class SlopeLayout:
    """Where each relaxed layer's slopes sit in one row of ``(n, width)`` slope arrays.

    The relaxed layers are the ReLU layers after the first (the first layer's ``z`` is fixed
    by the input, so its neurons need no slope).  ``columns[l]`` is the slice of layer ``l``
    (None for the others); ``neurons`` the positions of the columns among all the network's
    neurons, counted layer by layer (a slice when they are consecutive, as in an MLP).
    """

    columns: tuple[slice | None, ...]
    width: int
    neurons: slice | np.ndarray

    @classmethod
    def of(cls, layers: Sequence[Layer]) -> SlopeLayout:
        """The layout of ``layers`` (one object per shape of network)."""
        return _layout_of_shape(tuple((layer.n_out, layer.has_relu) for layer in layers))

    def split(self, array: np.ndarray) -> list[np.ndarray | None]:
        """Per-layer views of the columns of ``array`` (n, width)."""
        return [None if c is None else array[:, c] for c in self.columns]

    def start(self, lower: Sequence[np.ndarray], upper: Sequence[np.ndarray]) -> np.ndarray:
        """:func:`heuristic_slopes` of every relaxed neuron, (width,), or (n, width) for
        per-sample bounds."""
        lo, hi = np.concatenate(lower, axis=-1), np.concatenate(upper, axis=-1)
        return heuristic_slopes(lo[..., self.neurons], hi[..., self.neurons])


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
    return SlopeLayout(tuple(columns), start, positions(index))


def stack_bounds(lower: Sequence[np.ndarray], upper: Sequence[np.ndarray]) -> np.ndarray:
    """Per-layer bounds as ``[L; U]`` of every neuron side by side (:class:`NeuronLayout`):
    (2, N), or (2, n, N) for per-sample bounds."""
    return np.stack([np.concatenate(lower, axis=-1), np.concatenate(upper, axis=-1)])


@dataclass(frozen=True, eq=False)
class DualPlan:
    """What every pass at the same inputs and bounds shares (see :func:`dual_plan`).

    The per-neuron arrays have a row per neuron (:class:`NeuronLayout`) and one column (shared
    bounds) or a column per input (per-sample bounds): ``unstable`` (bool), ``active`` (1.0
    where ``h = z``: stable-active or linear), ``neg_mult`` (``mu / lam`` where ``lam < 0``:
    1 active, ``s`` unstable, 0 inactive), ``const`` (``-s L`` at unstable neurons, else 0),
    ``lower`` and ``upper``.  The first layer's arrays have a row per neuron and a column
    per input.
    """

    neurons: NeuronLayout
    slopes: SlopeLayout
    bounds: np.ndarray  # [L; U] as given: (2, N) or (2, n, N)
    unstable: np.ndarray
    active: np.ndarray
    neg_mult: np.ndarray
    const: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    X: np.ndarray
    z0: np.ndarray  # first-layer pre-activations, clipped to [L^0, U^0]
    low_end: np.ndarray  # first-layer output picked where lam >= 0, and its dz
    high_end: np.ndarray  # ... where lam < 0
    low_dz: np.ndarray
    high_dz: np.ndarray

    @property
    def per_sample(self) -> bool:
        """Whether the bounds are each sample's own (one row per input)."""
        return self.bounds.ndim == 3

    def start_slopes(self) -> np.ndarray:
        """:func:`heuristic_slopes` of the relaxed neurons: (width,), or (n, width) for
        per-sample bounds."""
        relaxed = self.bounds[..., self.slopes.neurons]
        return heuristic_slopes(relaxed[0], relaxed[1])

    def pack(self, slopes: Sequence[np.ndarray | None]) -> np.ndarray:
        """Per-layer slopes ((n, n_out_l) each, None: :meth:`start_slopes`) as one (width, n)
        array, a row per relaxed neuron and a column per input."""
        n = len(self.X)
        alpha = np.empty((self.slopes.width, n))
        alpha[:] = np.broadcast_to(self.start_slopes(), (n, self.slopes.width)).T
        for given, columns in zip(slopes, self.slopes.columns):
            if given is not None and columns is not None:
                alpha[columns] = np.broadcast_to(given, (n, columns.stop - columns.start)).T
        return alpha


def _by_neuron(array: np.ndarray) -> np.ndarray:
    """An array over all neurons, (N,) or (n, N), with a row per neuron: (N, 1) or (N, n)."""
    return array[:, None] if array.ndim == 1 else np.ascontiguousarray(array.T)


def dual_plan(layers: Sequence[Layer], bounds: np.ndarray, X) -> DualPlan:
    """The per-call constants of :func:`dual_bound` at inputs ``X`` and bounds ``[L; U]`` of
    every neuron side by side (:func:`stack_bounds`; (2, N) for one box, (2, n, N) for each
    input's own ball): per neuron the stability, the multipliers ``mu / lam`` where
    ``lam < 0`` and the upper line's constants, and the first layer's interval ends."""
    neurons = NeuronLayout.of(layers)
    X = np.asarray(X, dtype=np.float64)
    lo, hi = bounds[0], bounds[1]
    kind = neuron_stability(neurons, lo, hi)  # the whole network as one layer
    unstable, active = kind == 0, (kind == 1).astype(np.float64)
    s = np.where(unstable, hi / np.where(unstable, hi - lo, 1.0), 0.0)
    unstable, active, neg_mult, const, lo, hi = (
        _by_neuron(a) for a in (unstable, active, active + s, -s * lo, lo, hi)
    )
    first, head = layers[0], neurons.spans[0]
    z0 = first.weight @ X.T  # (n_out_0, n), dense or sparse
    z0 += first.bias[:, None]
    np.minimum(np.maximum(z0, lo[head], out=z0), hi[head], out=z0)
    if first.has_relu:
        # z0 lies in [L, U]: the activation of z0 is the low end of every kind of neuron (z0,
        # 0, or the unstable max(z0, 0)), and mult z0 + const the high end (z0, 0, or
        # s (z0 - L))
        low_end = first.activate(z0.T).T
        high_end = neg_mult[head] * z0 + const[head]
        low_dz = np.maximum(active[head], z0 > 0.0)
        high_dz = neg_mult[head]  # broadcast over the columns where it is used
    else:
        low_end = high_end = z0
        low_dz = high_dz = np.ones_like(z0)
    return DualPlan(
        neurons, SlopeLayout.of(layers), bounds, unstable, active, neg_mult, const, lo, hi, X,
        z0, low_end, high_end, low_dz, high_dz,
    )  # fmt: skip


@dataclass(frozen=True, eq=False)
class DualPass:
    """The bound at ``n`` inputs and what :func:`dual_backward` needs.

    Attributes
    ----------
    value : ndarray (n,)
        ``B(x_i)``, a lower bound on the LP relaxation's ``min c_i' h^K``.
    plan : DualPlan
        The constants shared by every pass at these inputs and bounds.
    coefficients : ndarray (N, n)
        ``lam``: the coefficient of every neuron's output ``h`` in the bound, a row per
        neuron (:class:`NeuronLayout`) and a column per input.
    z_coefficients : ndarray (N, n)
        ``mu``: the coefficient of its ``z`` (the first layer's rows are not used: its ``z``
        is fixed).
    negative : ndarray (N, n) of bool
        Where ``lam < 0`` in the first layer and the ReLU layers (the upper line, or 0 for
        stable neurons, is used); False elsewhere.
    mult : list of (ndarray (n_out_l, n) or None)
        ``mu^l / lam^l`` per neuron (None for the first and linear layers).
    end : ndarray (n_out_0, n)
        The first layer's output the bound takes (the end of its interval ``lam^0``
        prefers).
    biases : ndarray (N,)
        Every neuron's bias.
    """

    value: np.ndarray
    plan: DualPlan
    coefficients: np.ndarray
    z_coefficients: np.ndarray
    negative: np.ndarray
    mult: list[np.ndarray | None]
    end: np.ndarray
    biases: np.ndarray

    @property
    def lam(self) -> list[np.ndarray]:
        """``lam^l``, the coefficient of ``h^l``, per layer (n, n_out_l)."""
        return [self.coefficients[span].T for span in self.plan.neurons.spans]


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
    plan = plan if plan is not None else dual_plan(layers, stack_bounds(lower, upper), X)
    return dual_bound(layers, plan, objective, plan.pack(slopes))


def _product(A, B: np.ndarray, out: np.ndarray) -> None:
    """``out = A @ B`` for a dense or sparse ``A`` (a dense one writes straight into ``out``)."""
    if isinstance(A, np.ndarray):
        np.matmul(A, B, out=out)
    else:
        out[...] = A @ B


def dual_bound(
    layers: Sequence[Layer], plan: DualPlan, objective: np.ndarray, alpha: np.ndarray
) -> DualPass:
    """:func:`dual_forward` at the inputs and bounds of ``plan``, with the slopes packed:
    ``alpha`` (width, n), a row per relaxed neuron (:class:`SlopeLayout`) and a column per
    input."""
    spans, columns, n = plan.neurons.spans, plan.slopes.columns, len(plan.X)
    lam = np.empty((plan.neurons.size, n))
    mu = np.empty_like(lam)
    negative = np.zeros(lam.shape, dtype=bool)
    mult: list[np.ndarray | None] = [None] * len(layers)
    relaxed = plan.slopes.neurons
    lower_line = np.where(plan.unstable[relaxed], alpha, plan.active[relaxed])  # mu / lam >= 0
    objective = np.asarray(objective, dtype=np.float64)
    lam[spans[-1]] = objective[:, None] if objective.ndim == 1 else objective.T
    for l in range(len(layers) - 1, 0, -1):
        rows = spans[l]
        if columns[l] is not None:  # a ReLU layer: mu = mult lam
            upper_line = np.less(lam[rows], 0.0, out=negative[rows])
            mult[l] = np.where(upper_line, plan.neg_mult[rows], lower_line[columns[l]])
            np.multiply(lam[rows], mult[l], out=mu[rows])
        else:
            mu[rows] = lam[rows]
        _product(layers[l].weight.T, mu[rows], lam[spans[l - 1]])
    head = spans[0]
    end = np.where(np.less(lam[head], 0.0, out=negative[head]), plan.high_end, plan.low_end)
    biases = np.concatenate([layer.bias for layer in layers])
    value = _bound_value(plan, biases, lam, mu, end)
    return DualPass(value, plan, lam, mu, negative, mult, end, biases)


def _bound_value(plan: DualPlan, biases, lam, mu, end) -> np.ndarray:
    """``B = sum_(l >= 1) (mu^l . b^l + min(lam^l, 0) . const^l) + lam^0 . end``: the
    biases, the upper lines' constants, and the first layer's output the bound picks."""
    head = plan.neurons.spans[0]
    rest = slice(head.stop, None)
    value = biases[rest] @ mu[rest]
    const, low = plan.const[rest], np.minimum(lam[rest], 0.0)
    value += const[:, 0] @ low if const.shape[1] == 1 else (low * const).sum(axis=0)
    value += (lam[head] * end).sum(axis=0)
    return value


@dataclass(frozen=True, eq=False)
class DualGrads:
    """Derivatives of ``sum_i seed_i B(x_i)``.

    Attributes
    ----------
    params : list of (dW, db)
        With respect to every layer's weights and biases (``L``, ``U`` held fixed).
    lower, upper : list of ndarray (n_out_l,) or None
        With respect to the bounds (summed over the rows); None unless asked for.
    slope_rows : ndarray (width, n)
        With respect to ``alpha``, a row per relaxed neuron (:class:`SlopeLayout`) and a
        column per input (zero where ``alpha`` is not read).
    primal_rows : ndarray (N, n)
        ``seed_i`` times the primal outputs ``h^l`` certified by the bound, a row per neuron.
    plan : DualPlan
    """

    params: Grads
    lower: list[np.ndarray] | None
    upper: list[np.ndarray] | None
    slope_rows: np.ndarray
    primal_rows: np.ndarray
    plan: DualPlan

    @property
    def slopes(self) -> list[np.ndarray | None]:
        """:attr:`slope_rows` per layer (n, n_out_l), None for the layers without slopes."""
        return [None if c is None else self.slope_rows[c].T for c in self.plan.slopes.columns]

    @property
    def primal(self) -> list[np.ndarray]:
        """:attr:`primal_rows` per layer (n, n_out_l)."""
        return [self.primal_rows[span].T for span in self.plan.neurons.spans]


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
    (with respect to ``L`` and ``U`` only if ``bounds``: summed over the rows for shared
    bounds, per row for per-sample bounds); a float ``seed`` is the same for every row.

    At a kink (``lam_j = 0`` of an unstable neuron, ``z^0_j = 0``) one branch is taken: the
    lower line, and the slope 0 of ``max(z, 0)``.
    """
    plan, lam, negative = trace.plan, trace.coefficients, trace.negative
    spans, head = plan.neurons.spans, plan.neurons.spans[0]
    g_rows = None if isinstance(seed, (int, float)) else np.asarray(seed, dtype=np.float64)
    g = float(seed) if g_rows is None else g_rows[None, :]  # one per column
    primal = np.empty_like(lam)  # seed times h^l: the adjoint of lam^l
    z_bar = np.empty_like(lam)  # seed times z^l: the adjoint of mu^l
    # first layer: value += lam^0 . end(z^0)
    np.multiply(g, trace.end, out=primal[head])
    z0_bar = g * lam[head] * np.where(negative[head], plan.high_dz, plan.low_dz)
    weights = [weight_gradient(layers[0], z0_bar.T, plan.X)]
    relaxed, columns = plan.slopes.neurons, plan.slopes.columns
    shift = g * (negative[relaxed] * plan.const[relaxed])  # value += min(lam, 0) . const
    bias = g * trace.biases[:, None]  # value += mu . b
    for l in range(1, len(layers)):
        layer, rows, below = layers[l], spans[l], spans[l - 1]
        # lam^(l-1) = W^l' mu^l
        _product(layer.weight, primal[below], z_bar[rows])
        z_bar[rows] += bias[rows]
        weights.append(weight_gradient(layer, trace.z_coefficients[rows].T, primal[below].T))
        if columns[l] is not None:  # a ReLU layer: mu = mult lam
            np.multiply(z_bar[rows], trace.mult[l], out=primal[rows])
            primal[rows] += shift[columns[l]]
        else:
            primal[rows] = z_bar[rows]
    d_slopes = lam[relaxed] * z_bar[relaxed]
    d_slopes *= plan.unstable[relaxed] > negative[relaxed]  # alpha read: unstable, lam >= 0
    d_lower = d_upper = None
    if bounds:
        np.multiply(g, plan.z0, out=z_bar[head])
        d_lower, d_upper = _bound_derivatives(plan, trace, z_bar, g)
    params = list(zip(weights, _bias_derivatives(trace, z0_bar, g, g_rows)))
    return DualGrads(params, d_lower, d_upper, d_slopes, primal, plan)


def _bias_derivatives(trace: DualPass, z0_bar: np.ndarray, g, g_rows) -> list[np.ndarray]:
    """Per layer, the derivative with respect to ``b^l``: ``seed . mu^l`` (``value`` holds
    ``mu^l . b^l``), and for the first layer the sum of the adjoint of ``z^0``."""
    neurons = trace.plan.neurons
    head = neurons.spans[0]
    rest = slice(head.stop, None)
    mu = trace.z_coefficients[rest]
    d_bias = np.empty(neurons.size)
    d_bias[head] = z0_bar.sum(axis=1)
    d_bias[rest] = g * mu.sum(axis=1) if g_rows is None else mu @ g_rows
    return neurons.split(d_bias)


def _bound_derivatives(plan: DualPlan, trace: DualPass, z_bar: np.ndarray, g):
    """Per layer, the derivatives with respect to ``L`` and ``U``: through ``s`` of the
    upper lines in use (``mu = s lam`` and ``const = -s L lam``; for the first layer, the end
    ``s (z^0 - L)``), all neurons at once (``z_bar`` holds ``seed z^l``, the first layer's
    too)."""
    lo, unstable = plan.lower, plan.unstable
    s, s_lo, s_hi = _upper_line_slope_derivatives(lo, plan.upper, unstable)
    on_line = np.where(trace.negative & unstable, trace.coefficients, 0.0)
    s_bar = on_line * (z_bar - g * lo)
    d_lower, d_upper = s_bar * s_lo - g * s * on_line, s_bar * s_hi
    if not plan.per_sample:
        d_lower, d_upper = d_lower.sum(axis=1), d_upper.sum(axis=1)
    spans = plan.neurons.spans
    return [d_lower[span].T for span in spans], [d_upper[span].T for span in spans]


class SlopeStore:
    """Lower slopes, and their Adam moments, per training sample.

    Row ``i`` of ``packed`` (a row per sample, ``3 width + 1`` columns: a random mini-batch
    gathers and scatters whole rows) belongs to row ``i`` of the training set; a sample
    starts (by the caller) at :func:`heuristic_slopes` of the bounds of the step in which it
    is first seen.  The arrays grow to the largest row index seen, and start again when the
    layout changes.
    """

    def __init__(self) -> None:
        self.layout: SlopeLayout | None = None
        self.packed = np.zeros((0, 1))
        self.seen = np.zeros(0, dtype=bool)

    @property
    def state(self) -> Slopes:
        """The slopes, moments and step counts of every row (views)."""
        return Slopes(self.packed.T)

    def _fit(self, layout: SlopeLayout, n_rows: int) -> None:
        if layout is not self.layout:
            self._fit_layout(layout)
        grow = n_rows - self.seen.size
        if grow > 0:
            self.packed = np.concatenate([self.packed, np.zeros((grow, self.packed.shape[1]))])
            self.seen = np.concatenate([self.seen, np.zeros(grow, dtype=bool)])

    def _fit_layout(self, layout: SlopeLayout) -> None:
        loaded = self.layout is None and self.packed.shape[1] == 3 * layout.width + 1
        if loaded and self.seen.size:  # slopes read back by load_state: keep them
            self.layout = layout
        if self.layout is None or layout.columns != self.layout.columns:
            self.layout = layout
            self.packed = np.zeros((0, 3 * layout.width + 1))
            self.seen = np.zeros(0, dtype=bool)

    def read(self, layout: SlopeLayout, rows: np.ndarray) -> tuple[Slopes, np.ndarray]:
        """Slopes, moments and step counts of ``rows`` (copies), and which of them were never
        seen (the caller starts those, :meth:`Slopes.reset`)."""
        self._fit(layout, int(rows.max()) + 1 if rows.size else 0)
        return Slopes(np.ascontiguousarray(self.packed[rows].T)), ~self.seen[rows]

    def arrays(self) -> dict[str, np.ndarray]:
        """The slopes, moments and step counts of every sample seen, as named arrays."""
        return {"packed": self.packed.copy(), "seen": self.seen.copy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SlopeStore:
        """The store :meth:`arrays` describes (its layout is taken at its next read)."""
        store = cls()
        store.packed = np.array(arrays["packed"], dtype=np.float64)
        store.seen = np.array(arrays["seen"], dtype=bool)
        return store

    def write(self, rows: np.ndarray, slopes: Slopes) -> None:
        """Store what :meth:`read` gave, after the caller's steps."""
        self.packed[rows] = slopes.packed.T
        self.seen[rows] = True
