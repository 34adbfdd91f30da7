"""Property-based tests: random small ReLU networks and boxes against an independent reference.

Hypothesis draws networks of 1-4 hidden ReLU layers of widths 1-8, 1-3 inputs and one output,
with weights and biases on a grid of eighths (exact in float32 and float64, and easy to read
in a shrunk example).  Some neurons are forced stable-active or dead by shifting their bias
past their interval bounds (sometimes exactly onto 0), some get a zero weight row, some
duplicate a neighbour.  Boxes have corners on a grid of quarters, and some inputs are fixed
(``lo == hi``).  For every example:

(a) both formulations (big-M, partition) with every bound method (interval, lp, milp) give
    the same MILP minimum and maximum of the output, within 1e-6 relative (absolute below 1);
    the minimum lies at or below every sampled value of the network (the maximum at or above)
    and within a Lipschitz tolerance of the optimum over a dense grid holding every vertex of
    the box (``reference.grid_tolerance``); for one-input networks the grid holds every
    breakpoint of the output (``reference.breakpoints_1d``), so the comparison is exact;
(b) with the inputs fixed, the block's outputs reproduce onnxruntime (and the reference
    forward pass) to 1e-6;
(c) no sampled pre-activation lies outside any computed bound (interval, lp, milp); interval
    bounds equal the reference's, and lp and milp bounds are never looser than interval ones.

Environment variables
---------------------
NNRELAX_PROPERTY_EXAMPLES
    Examples per test (default 10; the file takes well under a minute on 2 cores).  CI or a
    long local run can raise it, e.g. ``NNRELAX_PROPERTY_EXAMPLES=500``.
NNRELAX_PROPERTY_RANDOM
    ``1`` draws new random examples on every run (and keeps failures in hypothesis's example
    database); by default the examples are derandomized, the same on every run (reproducible
    CI).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyomo_nnrelax import (
    InputBox,
    Layer,
    Network,
    NetworkBounds,
    NNBlock,
    interval_bounds,
    tighten_bounds,
    write_onnx,
)
from pyomo_nnrelax.onnx import run_onnxruntime
from tests.support import reference
from tests.support.solving import solve_optimal

EXAMPLES = int(os.environ.get("NNRELAX_PROPERTY_EXAMPLES", "10"))
RANDOM = os.environ.get("NNRELAX_PROPERTY_RANDOM", "0") == "1"
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=settings.default.database if RANDOM else None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

REL_TOL = 1e-6
"""Agreement between optima, and between the block and onnxruntime: relative, absolute below 1."""
HIGHS_OPTIONS = {
    "mip_rel_gap": 0.0,
    "mip_abs_gap": 1e-12,
    "mip_feasibility_tolerance": 1e-9,
    "primal_feasibility_tolerance": 1e-9,
    "dual_feasibility_tolerance": 1e-9,
}
"""HiGHS solves to proven optimality (its default relative gap, 1e-4, would hide differences)."""
GRID_POINTS = {1: 2, 2: 61, 3: 17}
"""Grid points per axis by number of inputs (one input: the breakpoints are added)."""
SAMPLES = 400
FORMULATIONS = ("bigm", "partition")
METHODS = ("interval", "lp", "milp")


def close(a: float, b: float, tol: float = REL_TOL) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


# ---------------------------------------------------------------------- strategies
EIGHTHS = st.integers(-16, 16).map(lambda k: k / 8.0)
NEURON_KINDS = st.sampled_from(["free", "free", "free", "active", "dead", "zero", "duplicate"])


@dataclass(frozen=True)
class Case:
    """A drawn example: the layers as ``(weight, bias)`` pairs, the input box, and how the
    network stores its weights (dense, or sparse: every property holds for both)."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    lower: np.ndarray
    upper: np.ndarray
    storage: str = "dense"

    @property
    def network(self) -> Network:
        last = len(self.layers) - 1
        layers = [
            Layer(w, b, "linear" if l == last else "relu") for l, (w, b) in enumerate(self.layers)
        ]
        return Network(layers).in_storage(self.storage)

    @property
    def box(self) -> InputBox:
        # named arrays: two (lo, hi) pairs of which one reading fixes every input would be
        # read as 0.1's (lower, upper) form (see pyomo_nnrelax.box)
        return InputBox(lower=self.lower, upper=self.upper)

    def __repr__(self) -> str:
        layers = ", ".join(f"({w.tolist()}, {b.tolist()})" for w, b in self.layers)
        return (
            f"Case(layers=[{layers}], lower={self.lower.tolist()}, upper={self.upper.tolist()}, "
            f"storage={self.storage!r})"
        )


@st.composite
def boxes(draw, n_inputs: int) -> tuple[np.ndarray, np.ndarray]:
    """Corners on a grid of quarters in [-2, 2]; about one input in four fixed (lo == hi)."""
    lower, upper = [], []
    for _ in range(n_inputs):
        lo = draw(st.integers(-8, 8)) / 4.0
        width = draw(st.sampled_from([0, 1, 2, 4, 6, 8])) / 4.0
        lower.append(lo)
        upper.append(lo + width)
    return np.array(lower), np.array(upper)


@st.composite
def layer(draw, n_in: int, n_out: int, h_lo: np.ndarray, h_hi: np.ndarray, relu: bool):
    """One layer; with ``relu``, neurons of the kinds in ``NEURON_KINDS``, stable ones placed
    with the reference's interval bounds of the layer's input ``[h_lo, h_hi]``."""
    w = np.array([[draw(EIGHTHS) for _ in range(n_in)] for _ in range(n_out)])
    b = np.array([draw(EIGHTHS) for _ in range(n_out)])
    if not relu:
        return w, b
    for j in range(n_out):
        kind = draw(NEURON_KINDS)
        margin = draw(st.integers(0, 4)) / 8.0  # 0: the bound sits exactly on the breakpoint
        if kind == "zero":
            w[j] = 0.0
        elif kind == "duplicate" and j > 0:
            w[j], b[j] = w[j - 1], b[j - 1]
        elif kind in ("active", "dead"):
            ((L, U),) = reference.interval_bounds([(w[j : j + 1], np.zeros(1))], h_lo, h_hi)
            b[j] = -L[0] + margin if kind == "active" else -U[0] - margin
    return w, b


@st.composite
def cases(draw) -> Case:
    n_inputs = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 8), min_size=1, max_size=4))
    lower, upper = draw(boxes(n_inputs))
    layers, h_lo, h_hi, n_in = [], lower, upper, n_inputs
    for n_out in widths:
        w, b = draw(layer(n_in, n_out, h_lo, h_hi, relu=True))
        layers.append((w, b))
        ((L, U),) = reference.interval_bounds([(w, b)], h_lo, h_hi)
        h_lo, h_hi, n_in = np.maximum(L, 0.0), np.maximum(U, 0.0), n_out
    layers.append(draw(layer(n_in, 1, h_lo, h_hi, relu=False)))
    return Case(tuple(layers), lower, upper, draw(st.sampled_from(["dense", "sparse"])))


# ---------------------------------------------------------------------- helpers
def sample_points(case: Case) -> np.ndarray:
    """The reference's sample of the box: a dense grid (every vertex included), uniform random
    points and, for one input, every breakpoint of the output."""
    n = case.lower.size
    rng = np.random.default_rng(0)
    points = [
        reference.grid(case.lower, case.upper, GRID_POINTS[n]),
        case.lower + (case.upper - case.lower) * rng.random((SAMPLES, n)),
    ]
    if n == 1:
        points.append(reference.breakpoints_1d(case.layers, case.lower[0], case.upper[0])[:, None])
    return np.vstack(points)


def all_bounds(case: Case) -> dict[str, NetworkBounds]:
    net = case.network
    return {
        "interval": interval_bounds(net, case.box),
        "lp": tighten_bounds(net, input_bounds=case.box, method="lp", executor="serial"),
        "milp": tighten_bounds(net, input_bounds=case.box, method="milp", executor="serial"),
    }


def block_model(case: Case, formulation: str, bounds: NetworkBounds) -> pyo.ConcreteModel:
    """A model holding the network (read back from float64 ONNX) with its output as objective."""
    m = pyo.ConcreteModel()
    m.nn = NNBlock(
        write_onnx(case.network, dtype="float64"),
        input_bounds=case.box,
        formulation=formulation,
        bounds=bounds,
        **({"partitions": 2} if formulation == "partition" else {}),
    )
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    return m


# ---------------------------------------------------------------------- properties
@PROPERTY_SETTINGS
@given(cases())
def test_sampled_pre_activations_lie_within_every_computed_bound(case: Case):
    """(c): interval, lp and milp bounds contain every sampled pre-activation."""
    X = sample_points(case)
    Z = reference.pre_activations(case.layers, X)
    computed = all_bounds(case)
    exact_ibp = reference.interval_bounds(case.layers, case.lower, case.upper)
    for l, (L, U) in enumerate(exact_ibp):
        np.testing.assert_allclose(computed["interval"].lower[l], L, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(computed["interval"].upper[l], U, rtol=1e-12, atol=1e-12)
    for method, bounds in computed.items():
        for l, z in enumerate(Z):
            lo, hi = bounds.lower[l], bounds.upper[l]
            slack = REL_TOL * np.maximum(1.0, np.abs(z))
            below = z < lo - slack
            above = z > hi + slack
            assert not below.any() and not above.any(), (
                f"{method} bounds of layer {l} exclude sampled pre-activations: "
                f"lower {lo.tolist()}, upper {hi.tolist()}, sampled min {z.min(0).tolist()}, "
                f"max {z.max(0).tolist()}"
            )
            if method != "interval":
                ibp = computed["interval"]
                assert np.all(lo >= ibp.lower[l] - 1e-9) and np.all(hi <= ibp.upper[l] + 1e-9)


@PROPERTY_SETTINGS
@given(cases(), st.data())
def test_fixed_inputs_reproduce_onnxruntime(case: Case, data):
    """(b): every formulation and bound method, inputs fixed at a vertex and a random point."""
    computed = all_bounds(case)
    vertices = reference.vertices(case.lower, case.upper)
    x_vertex = vertices[data.draw(st.integers(0, len(vertices) - 1), label="vertex")]
    t = np.array(
        data.draw(
            st.lists(st.integers(0, 8), min_size=case.lower.size, max_size=case.lower.size),
            label="eighths of the box",
        )
    )
    x_inner = case.lower + (case.upper - case.lower) * t / 8.0
    source = write_onnx(case.network, dtype="float64")
    points = (x_vertex, x_inner)
    for x in points:
        onnx_out = run_onnxruntime(source, x[None])[0]
        np.testing.assert_allclose(
            onnx_out, reference.forward(case.layers, x[None])[0], rtol=1e-12, atol=1e-12
        )
    for formulation in FORMULATIONS:
        for method in METHODS:
            m = block_model(case, formulation, computed[method])
            for x in points:
                for i, v in enumerate(x):
                    m.nn.inputs[i].fix(float(v))
                solve_optimal(m, **HIGHS_OPTIONS)
                check = m.nn.check()
                np.testing.assert_array_equal(check.inputs, x)
                assert close(float(check.block_outputs[0]), float(check.onnx_outputs[0])), (
                    formulation,
                    method,
                    str(check),
                )


@PROPERTY_SETTINGS
@given(cases())
def test_every_formulation_and_bound_method_finds_the_reference_optimum(case: Case):
    """(a): same optimum everywhere; below (above) every sample; near the grid optimum."""
    computed = all_bounds(case)
    X = sample_points(case)
    y = reference.forward(case.layers, X)[:, 0]
    if case.lower.size == 1:
        tolerance = 0.0  # the sample holds every breakpoint: its optimum is the exact one
    else:
        grid_tol = reference.grid_tolerance(
            case.layers, case.lower, case.upper, GRID_POINTS[case.lower.size]
        )
        tolerance = float(grid_tol[0])
    optima: dict[tuple, float] = {}
    for formulation in FORMULATIONS:
        for method in METHODS:
            m = block_model(case, formulation, computed[method])
            for sense, sign in ((pyo.minimize, 1.0), (pyo.maximize, -1.0)):
                best_sampled = float(np.min(sign * y)) * sign
                m.obj.sense = sense
                solve_optimal(m, **HIGHS_OPTIONS)
                optimum = pyo.value(m.obj)
                optima[formulation, method, sense] = optimum
                slack = REL_TOL * max(1.0, abs(best_sampled))
                # never worse than a sampled point; never better than the grid allows
                assert sign * optimum <= sign * best_sampled + slack, (formulation, method)
                assert sign * optimum >= sign * best_sampled - tolerance - slack, (
                    formulation,
                    method,
                    optimum,
                    best_sampled,
                    tolerance,
                )
                assert m.nn.check().max_abs_error <= REL_TOL * max(1.0, abs(optimum))
    for sense in (pyo.minimize, pyo.maximize):
        values = [v for key, v in optima.items() if key[2] == sense]
        assert all(close(v, values[0]) for v in values), optima


@PROPERTY_SETTINGS
@given(cases(), st.integers(0, 2**16))
def test_the_dual_network_bound_never_passes_the_lp_relaxation(case: Case, seed: int):
    """(d) The dual-network bound of ``LPGap`` at fixed inputs, with any slopes in [0, 1] (random,
    all 0, all 1, the heuristic), is at most the exact LP relaxation's minimum (projected LP,
    HiGHS) and at least its maximum, at points of the box including its vertices."""
    from pyomo_nnrelax.lp.projected import solve_batch
    from pyomo_nnrelax.training import ibp_forward
    from pyomo_nnrelax.training.dual import dual_forward

    net = case.network.with_input_bounds(*case.box)
    trace = ibp_forward(net.layers, case.lower, case.upper)
    rng = np.random.default_rng(seed)
    points = sample_points(case)
    X = points[rng.choice(len(points), size=min(16, len(points)), replace=False)]
    shapes = [(len(X), layer.n_out) for layer in net.layers]
    choices = {
        "random": [rng.random(shape) for shape in shapes],
        "zeros": [np.zeros(shape) for shape in shapes],
        "ones": [np.ones(shape) for shape in shapes],
        "heuristic": [None] * len(shapes),
    }
    for sense, sign in (("min", 1.0), ("max", -1.0)):
        exact = solve_batch(net, trace.to_bounds(), X, np.ones((len(X), 1)), sense)
        assert exact.ok.all()
        for name, slopes in choices.items():
            bound = (
                sign
                * dual_forward(
                    net.layers, trace.lower, trace.upper, X, np.array([sign]), slopes
                ).value
            )
            slack = sign * (exact.value - bound)  # >= 0 when the bound is valid
            tol = REL_TOL * np.maximum(1.0, np.abs(exact.value))
            assert np.all(slack >= -tol), (sense, name, slack.min())
