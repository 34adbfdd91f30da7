"""Big constants: a network whose big-M constants are far too large for the solver's
tolerances is rescaled by positive homogeneity into the same function with moderate ones, and
an answer that still does not reproduce the network is reported not optimal, never silently
wrong."""

from __future__ import annotations

import warnings

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import Layer, Network, NNBlock, SolverError, interval_bounds, write_onnx
from pyomo_nnrelax.solve import output_tolerance, rescaled, solve_model
from tests.support.reference import grid, grid_tolerance

BOX = [(-2.0, 2.0), (-2.0, 2.0)]
LO, HI = np.full(2, -2.0), np.full(2, 2.0)


def homogeneous(net: Network, decades: float, seed: int = 0) -> Network:
    """The same function with hidden neuron ``j`` multiplied by ``c_j = 10^u``, ``u`` uniform
    in ``[0, decades]``: its row and bias times ``c_j``, the next layer's column over ``c_j``
    (``relu(c z) = c relu(z)``), written out here from that identity alone."""
    rng = np.random.default_rng(seed)
    layers = list(net.layers)
    for l in range(len(layers) - 1):
        c = 10.0 ** rng.uniform(0, decades, layers[l].n_out)
        a, b = layers[l], layers[l + 1]
        layers[l] = Layer(a.weight * c[:, None], a.bias * c, a.activation)
        layers[l + 1] = Layer(b.weight / c[None, :], b.bias, b.activation)
    return net.with_layers(layers)


def minimise(source, **options) -> tuple[pyo.ConcreteModel, object]:
    m = pyo.ConcreteModel()
    m.nn = NNBlock(source, input_bounds=BOX, **options)
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    return m, solve_model(m)


BASE = Network.mlp([2, 16, 16, 1], seed=0)
SCALED = homogeneous(BASE, 9)


@pytest.fixture(scope="module")
def true_minimum() -> float:
    """The network's minimum over the box: the MILP of the unscaled network (moderate
    constants), which a dense grid brackets."""
    _, stats = minimise(BASE)
    assert stats.optimal
    values = BASE.forward(grid(LO, HI, 401))[:, 0]
    tolerance = grid_tolerance([(la.weight, la.bias) for la in BASE.layers], LO, HI, 401)[0]
    assert values.min() - tolerance - 1e-9 <= stats.objective <= values.min() + 1e-9
    return stats.objective


def test_the_scaled_network_is_the_same_function_with_huge_big_m_constants():
    X = grid(LO, HI, 41)
    np.testing.assert_allclose(SCALED.forward(X), BASE.forward(X), rtol=1e-9, atol=1e-9)
    bounds = interval_bounds(SCALED, BOX)
    assert max(float(np.abs(u).max()) for u in bounds.upper[:-1]) > 1e8


def test_rescaling_gives_the_same_function_with_moderate_constants_exactly():
    """Powers of two: the rescaled network's outputs are bit-for-bit the scaled network's, and
    every hidden bound magnitude lies within a factor of two of 1 (or was already moderate)."""
    bounds = interval_bounds(SCALED, BOX)
    net, model_bounds, scales = rescaled(SCALED, bounds)
    X = grid(LO, HI, 41)
    np.testing.assert_array_equal(net.forward(X), SCALED.forward(X))
    for l, (lo, hi, c) in enumerate(zip(model_bounds.lower, model_bounds.upper, scales)):
        np.testing.assert_array_equal(lo * c, bounds.lower[l])
        np.testing.assert_array_equal(hi * c, bounds.upper[l])
        assert np.all(np.log2(c) == np.round(np.log2(c)))  # powers of two
        size = np.maximum(np.abs(lo), np.abs(hi))
        if l < len(scales) - 1:
            assert np.all(size <= 2**10) and np.all((c == 1.0) | (size <= 2.0))
    assert np.all(scales[-1] == 1.0)  # the outputs are the user's


def test_a_network_with_big_m_constants_of_1e9_solves_to_its_minimum(true_minimum):
    m, stats = minimise(SCALED)
    assert stats.optimal and not stats.check_failed
    assert stats.objective == pytest.approx(true_minimum, abs=1e-6)
    check = m.nn.check()
    assert check.passed and check.max_abs_error < 1e-6
    assert m.nn.largest_constant < 1e4
    assert "neurons rescaled" in m.nn.summary().splitlines()[0]
    z = m.nn.layer[0].z
    x = m.nn.input_values()
    np.testing.assert_allclose(
        [z[j].value * m.nn.scale[0][j] for j in z], SCALED.pre_activations(x)[0][0], rtol=1e-6
    )


def test_without_rescaling_a_wrong_answer_is_reported_not_optimal(true_minimum):
    """With ``rescale=False`` the block warns at build; what the solver then returns is either
    the true minimum or reported not optimal with a failed check naming the constant scale
    (on HiGHS 1.15/1.16: -3.75 for a minimum of -4.78, off by 1.03 from onnxruntime)."""
    with pytest.warns(UserWarning, match="largest constant .* is [0-9.]+e\\+(09|1[0-9])"):
        m, stats = minimise(SCALED, rescale=False)
    assert stats.optimal == (abs(stats.objective - true_minimum) <= 1e-6)
    assert stats.check_failed or stats.objective == pytest.approx(true_minimum, abs=1e-6)
    if stats.check_failed:
        assert not stats.optimal and stats.status == "convergenceCriteriaSatisfied"
        assert stats.check_error > stats.check_tolerance and stats.largest_constant > 1e8
        assert not m.nn.check().passed


@pytest.mark.parametrize("seed, warns", [(0, True), (2, False), (3, True)])
def test_a_weight_of_1e38_raises_or_is_reported_not_optimal(seed, warns):
    """One weight of 1e38 in a float32 file: the solve either raises or returns a result
    marked not optimal, whose check fails: never a silent wrong optimum.  The block warns at
    build where the outputs are moderate over most of the box (seed 2's are near 1e37 there,
    in scale with the constant)."""
    net = Network.mlp([2, 8, 8, 1], seed=seed)
    layers = list(net.layers)
    weight = layers[1].weight.copy()
    weight[0, 0] = 1e38
    layers[1] = Layer(weight, layers[1].bias, layers[1].activation)
    proto = write_onnx(net.with_layers(layers), dtype="float32")
    m = pyo.ConcreteModel()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.nn = NNBlock(proto, input_bounds=BOX)
    assert any("largest constant" in str(w.message) for w in caught) == warns
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    try:
        stats = solve_model(m)
    except SolverError as exc:
        assert "found no solution" in str(exc)
        return
    assert not stats.optimal and stats.check_failed and stats.largest_constant > 1e30


def test_the_tolerance_grows_with_the_big_m_constants_and_vanishes_on_dead_neurons():
    """``output_tolerance`` by hand on one hidden ReLU neuron: the solver's share is
    ``t (2 + M) |w| + 2 t`` with ``t = 1e-5`` (unstable neuron), ``2 t |w| + 2 t`` when the
    neuron is stable; float32 rounding adds nothing where the neuron is off."""
    layers = (Layer(np.array([[1.0]]), np.array([0.0])), Layer(np.array([[3.0]]), np.zeros(1)))
    net = Network(layers)
    t = 1e-5
    unstable = interval_bounds(net, [(-4.0, 2.0)])  # M = 4
    tol = output_tolerance(net, unstable, np.array([-1.0]))
    assert tol[0] == pytest.approx(t * (2 + 4) * 3 + 2 * t, rel=1e-6)
    stable = interval_bounds(net, [(-4.0, -1.0)])
    assert output_tolerance(net, stable, np.array([-1.0]))[0] == pytest.approx(2 * t * 3 + 2 * t)
