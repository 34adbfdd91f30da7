"""NNBlock: exact embedding, bounds, relaxation, Pyomo behaviour and error paths."""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import (
    InputBoundsError,
    InputBox,
    Layer,
    Network,
    NNRelaxError,
    UnsupportedOperationError,
    read_onnx,
    write_onnx,
)
from pyomo_nnrelax.block import NNBlock
from pyomo_nnrelax.onnx import run_onnxruntime
from tests.support.solving import solve_optimal
from tests.support.torch_export import requires_torch

SOLVER = "highs"


def box(n: int, lo: float = -2.0, hi: float = 2.0) -> list[tuple[float, float]]:
    return [(lo, hi)] * n


def fixed_input_outputs(source, input_box, x, **options) -> np.ndarray:
    """Solve the block with its inputs fixed at ``x`` and return its output values."""
    m = pyo.ConcreteModel()
    m.nn = NNBlock(source, input_bounds=input_box, **options)
    for i, v in enumerate(x):
        m.nn.inputs[i].fix(float(v))
    m.obj = pyo.Objective(expr=sum(m.nn.outputs.values()))
    solve_optimal(m)
    return m.nn.output_values()


RANDOM_SHAPES = [[2, 8, 1], [3, 10, 10, 2], [4, 6, 6, 6, 3], [5, 12, 9, 7, 5, 1]]


@pytest.mark.parametrize("sizes", RANDOM_SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_inputs_reproduce_onnxruntime(tmp_path, sizes, seed):
    net = Network.mlp(sizes, seed=seed)
    path = tmp_path / "net.onnx"
    write_onnx(net, path, dtype="float64")
    rng = np.random.default_rng(seed)
    for x in rng.uniform(-2, 2, size=(3, sizes[0])):
        got = fixed_input_outputs(str(path), box(sizes[0]), x)
        expected = run_onnxruntime(path, x[None])[0]
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@requires_torch
def test_torch_export_with_matrix_input_and_two_outputs_reproduces_onnxruntime(tmp_path):
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(6, 12),
        torch.nn.ReLU(),
        torch.nn.Linear(12, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 2),
    ).double()
    path = tmp_path / "torch.onnx"
    torch.onnx.export(
        module,
        (torch.zeros(1, 2, 3, dtype=torch.float64),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}},
    )
    net = read_onnx(path)
    assert net.input_shape == (2, 3)
    rng = np.random.default_rng(3)
    for x in rng.uniform(-1, 1, size=(3, 6)):
        got = fixed_input_outputs(path, box(6, -1, 1), x)
        expected = run_onnxruntime(path, x.reshape(1, 2, 3))[0]
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_skl2onnx_regressor_embedded_reproduces_onnxruntime():
    import skl2onnx
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn import neural_network as sklearn

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(200, 3))
    reg = sklearn.MLPRegressor(hidden_layer_sizes=(10, 10), max_iter=50, random_state=0)
    reg.fit(X, X.sum(axis=1))
    model = skl2onnx.convert_sklearn(reg, initial_types=[("x", DoubleTensorType([None, 3]))])
    for x in X[:3]:
        got = fixed_input_outputs(model, box(3, -1, 1), x)
        np.testing.assert_allclose(got, run_onnxruntime(model, x[None])[0], atol=1e-6, rtol=0)


def test_block_variables_carry_the_bounds():
    net = Network.mlp([2, 6, 6, 1], seed=2)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=box(2))
    b = m.nn.bounds
    assert m.nn.outputs[0].bounds == (b.lower[-1][0], b.upper[-1][0])
    assert m.nn.inputs[1].bounds == (-2.0, 2.0)
    for j in range(6):
        assert m.nn.layer[1].z[j].bounds == (b.lower[1][j], b.upper[1][j])


def test_milp_minimum_is_below_sampling_and_exact_at_its_argmin():
    net = Network.mlp([2, 12, 12, 1], seed=4)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=box(2))
    m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.minimize)
    solve_optimal(m)
    grid = np.stack(np.meshgrid(np.linspace(-2, 2, 401), np.linspace(-2, 2, 401)), -1).reshape(
        -1, 2
    )
    assert pyo.value(m.obj) <= net.forward(grid).min() + 1e-9
    assert m.nn.check().max_abs_error < 1e-6
    assert abs(net.forward(m.nn.input_values())[0, 0] - pyo.value(m.obj)) < 1e-6


@pytest.mark.parametrize("sense", [pyo.minimize, pyo.maximize])
def test_lp_relaxation_is_no_tighter_than_the_milp(sense):
    net = Network.mlp([3, 10, 10, 10, 1], seed=7)
    values = {}
    for relax in (False, True):
        m = pyo.ConcreteModel()
        m.nn = NNBlock(net, input_bounds=box(3), relax=relax)
        m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=sense)
        solve_optimal(m)
        values[relax] = pyo.value(m.obj)
    if sense == pyo.minimize:
        assert values[True] <= values[False] + 1e-9
    else:
        assert values[True] >= values[False] - 1e-9


def test_stable_neurons_get_no_binary():
    layers = (
        Layer(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([5.0, -5.0, 0.0])),
        Layer(np.ones((1, 3)), np.zeros(1), "linear"),
    )
    m = pyo.ConcreteModel()
    m.nn = NNBlock(Network(layers), input_bounds=box(2, -1, 1))
    assert list(m.nn.layer[0].is_active.keys()) == [2]
    stats = m.nn.layer_stats()[0]
    assert (stats["unstable"], stats["stable_active"], stats["stable_inactive"]) == (1, 1, 1)
    assert stats["max_big_m"] == 2.0


def test_block_accepts_a_model_proto_and_a_positional_path(tmp_path):
    net = Network.mlp([2, 5, 1], seed=0)
    path = tmp_path / "m.onnx"
    proto = write_onnx(net, path, dtype="float64")
    m = pyo.ConcreteModel()
    m.a = NNBlock(str(path), input_bounds=box(2))
    m.b = NNBlock(proto, input_bounds=InputBox(lower=np.full(2, -2.0), upper=np.full(2, 2.0)))
    assert m.a.network == m.b.network
    assert len(m.a.inputs) == 2 and len(m.b.outputs) == 1


def test_bounds_stored_in_onnx_metadata_are_used(tmp_path):
    net = Network.mlp([2, 5, 1], seed=0).with_input_bounds([-1, -3], [1, 3])
    path = tmp_path / "m.onnx"
    write_onnx(net, path)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(path)
    assert m.nn.inputs[1].bounds == (-3.0, 3.0)


def test_clone_and_nesting_inside_other_blocks_work():
    net = Network.mlp([2, 6, 6, 1], seed=3)
    m = pyo.ConcreteModel()
    m.sub = pyo.Block()
    m.sub.nn = NNBlock(net, input_bounds=box(2))
    m.x = pyo.Var(range(2), bounds=(-1, 1))
    m.link = pyo.Constraint(range(2), rule=lambda m, i: m.x[i] == m.sub.nn.inputs[i])
    m.obj = pyo.Objective(expr=m.sub.nn.outputs[0], sense=pyo.maximize)
    start = m.sub.nn.output_values()
    c = m.clone()
    solve_optimal(c)
    assert np.all(np.abs(c.sub.nn.input_values()) <= 1 + 1e-9)
    assert c.sub.nn.check().max_abs_error < 1e-6
    np.testing.assert_array_equal(m.sub.nn.output_values(), start)  # the original is untouched
    assert not np.array_equal(c.sub.nn.output_values(), start)


def test_appsi_highs_solves_the_block_from_a_warm_start():
    net = Network.mlp([2, 10, 10, 1], seed=1)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=box(2))
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    x = m.nn.warm_start()
    start = net.forward(x)[0, 0]
    assert m.nn.outputs[0].value == pytest.approx(start)
    for c in m.component_data_objects(pyo.Constraint):
        body = pyo.value(c.body)
        assert (c.lower is None or body >= pyo.value(c.lower) - 1e-9) and (
            c.upper is None or body <= pyo.value(c.upper) + 1e-9
        ), c.name
    pyo.SolverFactory("appsi_highs").solve(m, warmstart=True)
    assert pyo.value(m.obj) <= start + 1e-9
    assert m.nn.check().max_abs_error < 1e-6


# ---------------------------------------------------------------------------------- errors
def test_missing_input_bounds_name_the_inputs():
    with pytest.raises(InputBoundsError, match=r"inputs 0\.\.2 lack bounds"):
        NNBlock(Network.mlp([3, 4, 1]))


@pytest.mark.parametrize(
    "bounds, pattern",
    [
        ([(-1, 1), (2, 1)], r"inverted .* inputs \[1\]"),
        ([(-1, 1), (0, np.inf)], r"not finite for inputs \[1\]"),
        ([(-1, 1), (0, np.nan)], r"not finite for inputs \[1\]"),
        ([(-1, 1)], r"expected 2 \(lo, hi\) pairs"),
        ("abc", r"could not be read"),
    ],
)
def test_bad_input_bounds_raise_input_bounds_error(bounds, pattern):
    with pytest.raises(InputBoundsError, match=pattern):
        NNBlock(Network.mlp([2, 4, 1]), input_bounds=bounds)


def test_unsupported_op_is_reported_before_any_component_is_built(make_onnx_model):
    from onnx import helper

    model = make_onnx_model(
        [
            helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc"),
            helper.make_node("Sigmoid", ["h"], ["y"], name="act"),
        ],
        {"W": np.ones((3, 2)), "b": np.zeros(2)},
        input_shape=(3,),
    )
    m = pyo.ConcreteModel()
    with pytest.raises(UnsupportedOperationError, match=r"'act' \(Sigmoid\)"):
        m.nn = NNBlock(model, input_bounds=box(3))
    assert not list(m.component_objects())


def test_unknown_formulation_and_bounds_method_name_the_allowed_values():
    with pytest.raises(ValueError, match="formulation must be one of"):
        NNBlock(Network.mlp([2, 3, 1]), input_bounds=box(2), formulation="hull")
    with pytest.raises(ValueError, match="bounds must be one of"):
        NNBlock(Network.mlp([2, 3, 1]), input_bounds=box(2), bounds="crown")


@pytest.mark.parametrize(
    "options, error, pattern",
    [
        pytest.param(
            {"formulaton": "partition"},
            TypeError,
            r"unexpected keyword argument 'formulaton' \(did you mean 'formulation'\?\); it "
            r"takes source, input_bounds, formulation, .*, rescale, name, doc",
            id="typo",
        ),
        pytest.param({"rule": print}, TypeError, r"argument 'rule'; it takes", id="rule"),
        pytest.param(
            {"partitions": 4}, ValueError, r"partitions= applies to formulation='partition'", id="4"
        ),
        pytest.param(
            {"split": "equal_size"}, ValueError, r"split= applies to formulation='partition'",
            id="split",
        ),
        pytest.param(
            {"bound_time_limit": 1.0}, ValueError, r"bound_time_limit= applies to bounds='lp' or",
            id="time limit",
        ),
        pytest.param(
            {"workers": 2, "bounds": "interval"}, ValueError, r"workers= .* not to 'interval'",
            id="workers",
        ),
        pytest.param(
            {"executor": "serial", "bounds": "stored"}, ValueError, r"executor= .* not to 'stored'",
            id="executor",
        ),
    ],
)  # fmt: skip
def test_unknown_and_inapplicable_arguments_raise_before_anything_is_attached(
    tmp_path, options, error, pattern
):
    """A typo, or an option the chosen formulation or bounds would silently ignore, raises
    naming it before the ONNX file is even read (here it does not exist) and leaves the model
    as it was: no component, not even a half-built one."""
    m = pyo.ConcreteModel()
    m.x = pyo.Var()
    with pytest.raises(error, match=pattern):
        m.nn = NNBlock(tmp_path / "absent.onnx", input_bounds=box(2), **options)
    assert [c.name for c in m.component_objects()] == ["x"]


def test_the_options_that_apply_are_taken():
    m = pyo.ConcreteModel()
    m.a = NNBlock(
        Network.mlp([2, 4, 1]), input_bounds=box(2), formulation="partition", partitions=3
    )
    m.b = NNBlock(Network.mlp([2, 4, 1]), input_bounds=box(2), bounds="lp", bound_time_limit=5.0)
    m.c = NNBlock(Network.mlp([2, 4, 1]), input_bounds=box(2), doc="a block")
    assert m.a.summary().startswith("NNBlock: partition(N=3, equal_size)")
    assert m.b.bounds.method == "lp"
    assert m.c.doc == "a block"


def test_wrong_source_type_is_a_type_error():
    with pytest.raises(TypeError, match="ONNX path, an onnx.ModelProto or a Network"):
        NNBlock(42, input_bounds=box(2))


def test_check_before_solving_checks_the_start_point_and_a_cleared_value_says_to_solve():
    m = pyo.ConcreteModel()
    m.nn = NNBlock(Network.mlp([2, 3, 1]), input_bounds=[(-1, 3), (0, 2)])
    result = m.nn.check()  # the start values: a forward pass at the box centre
    np.testing.assert_array_equal(result.inputs, [1.0, 1.0])
    assert result.max_abs_error < 1e-6
    m.nn.inputs[0].set_value(None)
    with pytest.raises(NNRelaxError, match="solve the model"):
        m.nn.check()


# ------------------------------------------------------------- formulations x bounds
COMBINATIONS = [
    (formulation, bounds)
    for formulation in ("bigm", "partition")
    for bounds in ("interval", "lp", "milp")
]


def combination(formulation: str, bounds: str) -> dict:
    """NNBlock's options for one combination, each only where it applies."""
    options = dict(formulation=formulation, bounds=bounds)
    if formulation == "partition":
        options["partitions"] = 2
    if bounds in ("lp", "milp"):
        options["executor"] = "serial"
    return options


@pytest.mark.parametrize("formulation, bounds", COMBINATIONS)
def test_every_formulation_and_bounds_combination_is_exact(tmp_path, formulation, bounds):
    net = Network.mlp([3, 8, 8, 2], seed=11)
    path = tmp_path / "net.onnx"
    write_onnx(net, path, dtype="float64")
    options = combination(formulation, bounds)
    for x in np.random.default_rng(2).uniform(-2, 2, size=(2, 3)):
        got = fixed_input_outputs(path, box(3), x, **options)
        np.testing.assert_allclose(got, run_onnxruntime(path, x[None])[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("formulation, bounds", COMBINATIONS)
def test_every_formulation_and_bounds_combination_finds_the_same_optimum(formulation, bounds):
    net = Network.mlp([2, 10, 10, 1], seed=6)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=box(2), **combination(formulation, bounds))
    m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.maximize)
    m.nn.warm_start()
    solve_optimal(m)
    reference = pyo.ConcreteModel()
    reference.nn = NNBlock(net, input_bounds=box(2))
    reference.obj = pyo.Objective(expr=reference.nn.outputs[0], sense=pyo.maximize)
    solve_optimal(reference)
    assert pyo.value(m.obj) == pytest.approx(pyo.value(reference.obj), abs=1e-6)
    assert m.nn.check().max_abs_error < 1e-6
    assert m.nn.bounds.method == bounds


def test_warm_start_satisfies_every_partition_constraint():
    net = Network.mlp([3, 8, 8, 1], seed=4)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=box(3), formulation="partition", partitions=3)
    m.nn.warm_start(np.array([0.5, -1.0, 1.5]))
    for c in m.component_data_objects(pyo.Constraint):
        body = pyo.value(c.body)
        assert c.lower is None or body >= pyo.value(c.lower) - 1e-9, c.name
        assert c.upper is None or body <= pyo.value(c.upper) + 1e-9, c.name
    for v in m.component_data_objects(pyo.Var):
        assert v.value is not None, v.name


def test_both_formulations_name_their_binary_is_active_with_one_meaning_active():
    """``is_active[j] = 1`` exactly where the neuron's pre-activation is positive, in big-M and
    in the partition formulation; the partition's 0.1 name ``inactive`` reads ``1 - is_active``."""
    net = Network.mlp([2, 6, 1], seed=2)
    x = np.array([0.4, -0.7])
    z = net.pre_activations(x)[0][0]
    for formulation in ("bigm", "partition"):
        m = pyo.ConcreteModel()
        m.nn = NNBlock(net, input_bounds=[(-1, 1), (-1, 1)], formulation=formulation)
        m.nn.warm_start(x)
        binaries = m.nn.layer[0].is_active
        assert len(binaries) > 0
        for j in binaries:
            assert binaries[j].value == float(z[j] > 0)
            if formulation == "partition":
                assert pyo.value(m.nn.layer[0].inactive[j]) == 1.0 - binaries[j].value
