"""Hand-built ONNX graphs of the layer types beyond dense ReLU layers: attributes one by one
against onnxruntime (float64 where onnxruntime has float64 kernels, else float32), weight
sharing, and the errors for what has no exact form.  Torch exports of the same layers, and
the helpers, are in ``tests/onnx/test_torch_exports.py``.
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
import pytest
from onnx import helper

from pyomo_nnrelax import InputBox, OnnxImportError, UnsupportedOperationError
from pyomo_nnrelax.block import NNBlock
from pyomo_nnrelax.matrices import to_dense
from pyomo_nnrelax.onnx import read_onnx
from tests.support.onnx_graphs import F32, RNG, model, read_and_check
from tests.support.reference import grid, grid_tolerance


# ====================================================================== hand-built graphs
def test_conv_auto_pad_and_conv_transpose_output_shape_match_onnxruntime():
    w = RNG.normal(size=(3, 2, 3, 2))
    for auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        node = helper.make_node(
            "Conv", ["x", "W", "B"], ["y"], auto_pad=auto_pad, strides=[2, 1], name="c"
        )
        proto = model([node], {"W": w, "B": RNG.normal(size=3)}, (2, 5, 4), F32)
        network = read_and_check(proto, (2, 5, 4), float64=False)
        assert network.layers[0].tie.n_params == w.size
    for attrs in ({"output_shape": [8, 6]}, {"auto_pad": "SAME_UPPER"}, {"pads": [1, 0, 0, 1]}):
        node = helper.make_node(
            "ConvTranspose", ["x", "V"], ["y"], strides=[2, 2], name="ct", **attrs
        )
        proto = model([node], {"V": RNG.normal(size=(2, 3, 3, 2))}, (2, 4, 3), F32)
        read_and_check(proto, (2, 4, 3), float64=False)


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        {"kernel_shape": [3, 3], "pads": [1, 0, 0, 1], "count_include_pad": 0},
        {"kernel_shape": [2, 3], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
    ],
)
def test_average_pool_attributes_match_onnxruntime(attrs):
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], name="ap", **attrs)]

    network = read_and_check(model(nodes, {}, (2, 5, 6), F32), (2, 5, 6), float64=False)

    assert [layer.kind for layer in network.layers] == ["linear"]


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]},
        {"kernel_shape": [2, 2], "strides": [1, 1]},
        {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [2, 2], "dilations": [2, 1], "pads": [1, 0, 1, 1]},
        {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"},
        {"kernel_shape": [5, 1]},
        {"kernel_shape": [1, 1], "strides": [2, 2]},
    ],
)
def test_max_pool_attributes_match_onnxruntime_in_float64(attrs):
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["h"], name="scale"),
        helper.make_node("MaxPool", ["h"], ["y"], name="mp", **attrs),
    ]

    network = read_and_check(model(nodes, {"s": np.array(1.5)}, (2, 5, 6)), (2, 5, 6), True)

    n_levels = int(np.ceil(np.log2(np.prod(attrs["kernel_shape"]))))
    assert len(network.layers) == n_levels + 1  # the trees, then the closing linear layer


def test_max_pool_of_a_tagged_conv_closes_a_linear_layer_first():
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("MaxPool", ["c"], ["y"], name="mp", kernel_shape=[2, 2]),
    ]
    proto = model(nodes, {"W": RNG.normal(size=(2, 1, 2, 2))}, (1, 4, 4), F32)

    network = read_and_check(proto, (1, 4, 4), float64=False)

    assert [layer.kind for layer in network.layers] == ["linear", "mixed", "mixed", "linear"]
    assert network.layers[0].tie.n_params == 8


def test_global_max_pool_and_leaky_relu_match_onnxruntime():
    nodes = [
        helper.make_node("LeakyRelu", ["x"], ["h"], name="lr", alpha=0.3),
        helper.make_node("GlobalMaxPool", ["h"], ["y"], name="gmp"),
    ]

    network = read_and_check(model(nodes, {}, (3, 2, 3), F32), (3, 2, 3), False)

    assert network.output_shape == (3, 1, 1)


@pytest.mark.parametrize(
    "inputs, inits",
    [
        (["x", "lo", "hi"], {"lo": np.array(-0.5), "hi": np.array(0.25)}),
        (["x", "lo", "hi"], {"lo": np.array(0.0), "hi": np.array(0.7)}),
        (["x", "", "hi"], {"hi": np.array(0.3)}),
        (["x", "lo"], {"lo": np.array(-0.2)}),
        (["x", "lo", "hi"], {"lo": np.array(0.6), "hi": np.array(0.1)}),  # min > max: max
        (["x", "lo", "hi"], {"lo": np.array(0.2), "hi": np.array(0.2)}),
        (["x"], {}),
    ],
)
def test_clip_bounds_match_onnxruntime_in_float64(inputs, inits):
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["z"], name="gemm"),
        helper.make_node("Clip", inputs, ["y"], name="clip"),
    ]
    proto = model(nodes, {"W": RNG.normal(size=(3, 4)), **inits})

    read_and_check(proto, (3,), True)


def test_clip_with_attributes_before_opset_11():
    nodes = [helper.make_node("Clip", ["x"], ["y"], name="clip", min=-0.3, max=0.5)]
    only_min = [helper.make_node("Clip", ["x"], ["y"], name="clip", min=0.1)]

    read_and_check(model(nodes, {}, (4,), F32, opset=10), (4,), False)
    read_and_check(model(only_min, {}, (4,), F32, opset=10), (4,), False)


def _reduce_node(op: str, opset: int, axes, **attrs):
    """A ``Reduce*`` node over ``axes`` (None: none given), as an attribute before opset 18
    and as the input ``axes`` from 18 on; returns the node and its initializers."""
    if axes is None:
        return helper.make_node(op, ["h"], ["y"], name="red", **attrs), {}
    if opset < 18:
        return helper.make_node(op, ["h"], ["y"], name="red", axes=axes, **attrs), {}
    inits = {"axes": np.array(axes, dtype=np.int64)}
    return helper.make_node(op, ["h", "axes"], ["y"], name="red", **attrs), inits


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize(
    "opset, axes, attrs",
    [
        (13, [2], {}),
        (17, [1, 3], {"keepdims": 0}),
        (17, [-1, -2], {"keepdims": 1}),
        (18, [2], {"keepdims": 0}),
        (18, [1, 2, 3], {}),
        (18, [3], {"noop_with_empty_axes": 1}),
        (18, [], {"noop_with_empty_axes": 1}),  # no axes: the identity
        (18, None, {"noop_with_empty_axes": 1}),
        (20, [-3], {"keepdims": 0}),
    ],
)
def test_reduce_max_and_min_match_onnxruntime_in_float64(op, opset, axes, attrs):
    node, inits = _reduce_node(op, opset, axes, **attrs)
    shape = (2, 4, 5)
    nodes = [helper.make_node("Mul", ["x", "k"], ["h"], name="scale"), node]
    proto = model(nodes, {**inits, "k": RNG.normal(size=(4, 5))}, shape, opset=opset)

    network = read_and_check(proto, shape, True)

    size = int(np.prod([shape[a - 1 if a > 0 else a] for a in axes or []]))
    assert len(network.layers) == int(np.ceil(np.log2(size))) + 1  # the tree, a linear layer


def test_reduce_max_of_a_tagged_map_closes_a_linear_layer_first():
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["h"], name="mm"),
        helper.make_node("ReduceMax", ["h"], ["y"], name="rm", axes=[2], keepdims=0),
    ]

    network = read_and_check(model(nodes, {"A": RNG.normal(size=(3, 4))}, (2, 3)), (2, 3), True)

    assert [layer.kind for layer in network.layers] == ["linear", "mixed", "mixed", "linear"]
    assert network.layers[0].tie.n_params == 12


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_elementwise_max_and_min_match_onnxruntime_in_float64(op):
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["a"], name="mm"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("ReduceSum", ["x", "ax"], ["s"], name="rows", keepdims=1),
        # data (3, 4), (3, 4), (3, 1) and constants (4,), (1, 1, 4), a scalar; x given twice
        helper.make_node(op, ["x", "r", "s", "c", "x", "d", "e"], ["m"], name="mx"),
        helper.make_node(op, ["m"], ["y"], name="one"),  # one input: the identity
    ]
    inits = {
        "A": RNG.normal(size=(4, 4)),
        "ax": np.array([2], dtype=np.int64),
        "c": RNG.normal(size=4),
        "d": RNG.normal(size=(1, 1, 4)),
        "e": np.array(0.1),
    }

    network = read_and_check(model(nodes, inits, (3, 4)), (3, 4), True)

    # four candidates (x, r, s and the folded constants): two tree levels after the ReLU layer
    assert [layer.kind for layer in network.layers] == ["mixed", "mixed", "mixed", "linear"]


def test_max_of_a_data_tensor_and_a_broadcast_batch_constant_matches_onnxruntime():
    nodes = [
        helper.make_node("Max", ["x", "lo"], ["h"], name="mx"),
        helper.make_node("Min", ["h", "hi"], ["y"], name="mn"),
    ]
    inits = {"lo": RNG.normal(size=(1, 2, 1)) - 0.5, "hi": RNG.normal(size=(3,)) + 0.5}

    network = read_and_check(model(nodes, inits, (2, 3)), (2, 3), True)

    assert [layer.kind for layer in network.layers] == ["mixed", "mixed", "linear"]


def test_abs_and_hard_sigmoid_match_onnxruntime():
    abs_nodes = [
        helper.make_node("Gemm", ["x", "W"], ["z"], name="gemm"),
        helper.make_node("Abs", ["z"], ["y"], name="abs"),
    ]
    hard = [
        helper.make_node("Gemm", ["x", "W"], ["z"], name="gemm"),
        helper.make_node("HardSigmoid", ["z"], ["y"], name="hs", alpha=0.3, beta=0.4),
    ]
    default = [helper.make_node("HardSigmoid", ["x"], ["y"], name="hs")]  # alpha 0.2, beta 0.5
    w = {"W": RNG.normal(size=(3, 4)) * 3.0}

    network = read_and_check(model(abs_nodes, w), (3,), True)
    read_and_check(model(hard, w, elem_type=F32), (3,), False)  # HardSigmoid: float32 only
    read_and_check(model(default, {}, (3,), F32), (3,), False, n=50)

    assert network.widths == (3, 8, 4)  # relu(z) and relu(-z) per entry
    assert network.layers[0].tie.n_params == 12  # both rows of an entry share the Gemm weights


@pytest.mark.parametrize("formulation", ["bigm", "partition"])
def test_the_milp_minimum_of_abs_hard_sigmoid_max_and_reduce_min_is_the_networks(formulation):
    rng = np.random.default_rng(5)
    w1, b1, w2 = rng.normal(size=(2, 6)), rng.normal(size=6), rng.normal(size=(6, 4))
    c = rng.normal(size=4)
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["z"], name="g1"),
        helper.make_node("Abs", ["z"], ["a"], name="abs"),
        helper.make_node("Gemm", ["a", "W2"], ["u"], name="g2"),
        helper.make_node("HardSigmoid", ["u"], ["h"], name="hs", alpha=0.5, beta=0.2),
        helper.make_node("Max", ["u", "c"], ["m"], name="mx"),
        helper.make_node("Sub", ["m", "h"], ["d"], name="sub"),
        helper.make_node("ReduceMin", ["d"], ["y"], name="rm", axes=[1], keepdims=1),
    ]
    proto = model(nodes, {"W1": w1, "b1": b1, "W2": w2, "c": c}, (2,))
    network = read_onnx(proto)
    box = InputBox(lower=np.full(2, -2.0), upper=np.full(2, 2.0))
    points = grid(box.lower, box.upper, 401)
    u = np.abs(points @ w1 + b1) @ w2
    expected = (np.maximum(u, c) - np.clip(0.5 * u + 0.2, 0.0, 1.0)).min(axis=1, keepdims=True)
    np.testing.assert_allclose(network.forward(points), expected, atol=1e-12)

    m = pyo.ConcreteModel()
    m.nn = NNBlock(proto, input_bounds=box, formulation=formulation)
    m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.minimize)
    result = pyo.SolverFactory("highs").solve(m)

    assert result.solver.termination_condition == pyo.TerminationCondition.optimal
    value, x = pyo.value(m.obj), m.nn.input_values()
    assert abs(network.forward(x.reshape(1, -1))[0, 0] - value) < 1e-6  # exact at its argmin
    layers = [(to_dense(layer.weight), layer.bias) for layer in network.layers]
    tolerance = grid_tolerance(layers, box.lower, box.upper, 401)[0]
    assert expected.min() - tolerance - 1e-9 <= value <= expected.min() + 1e-9


def test_a_prelu_with_slopes_zero_and_one_is_one_mask_layer_as_write_onnx_writes_it():
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["z"], name="gemm"),
        helper.make_node("PRelu", ["z", "a"], ["y"], name="pr"),
    ]
    slope = np.array([0.0, 1.0, 1.0, 0.0])
    proto = model(nodes, {"W": RNG.normal(size=(3, 4)), "a": slope}, out_rank=2)

    network = read_and_check(proto, (3,), True)

    assert network.widths == (3, 4)
    np.testing.assert_array_equal(network.layers[0].relu_mask, slope == 0.0)


def test_prelu_broadcasts_its_slope_as_onnx_does():
    nodes = [helper.make_node("PRelu", ["x", "a"], ["y"], name="pr")]
    for slope in (np.array([0.2, -1.0, 2.0])[:, None, None], np.array([0.5]), RNG.normal(size=4)):
        read_and_check(model(nodes, {"a": slope}, (3, 2, 4)), (3, 2, 4), True)


def test_sum_sub_and_concat_of_data_match_onnxruntime_in_float64():
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["a"], name="g1"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Sub", ["x", "r"], ["d"], name="sub"),
        helper.make_node("Sum", ["d", "x", "r", "k"], ["s"], name="sum"),
        helper.make_node("Add", ["s", "s"], ["m2"], name="twice"),
        helper.make_node("Unsqueeze", ["k2", "ax"], ["k3"], name="uq"),
        helper.make_node("Concat", ["m2", "k3", "x"], ["y"], name="cat", axis=1),
    ]
    inits = {
        "W": RNG.normal(size=(3, 3)),
        "k": RNG.normal(size=3),
        "k2": RNG.normal(size=2),
        "ax": np.array([0], dtype=np.int64),
    }

    # a constant has a batch dimension, so Concat with one needs a batch of 1: run row by row
    network = read_and_check(model(nodes, inits, batch=1), (3,), True)

    assert [layer.kind for layer in network.layers] == ["mixed", "linear"]
    assert network.output_shape == (8,)


def test_mean_of_data_tensors_matches_onnxruntime():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mean", ["r", "x", "k"], ["y"], name="mean"),
    ]

    read_and_check(model(nodes, {"k": RNG.normal(size=3)}, (3,), F32), (3,), False)


def test_one_weight_tensor_used_twice_shares_its_parameters_within_a_layer():
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm1"),
        helper.make_node("Mul", ["x", "two"], ["x2"], name="double"),
        helper.make_node("MatMul", ["x2", "W"], ["b"], name="mm2"),
        helper.make_node("Concat", ["a", "b"], ["c"], name="cat", axis=1),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    proto = model(nodes, {"W": RNG.normal(size=(3, 4)), "two": np.array(2.0)})

    network = read_and_check(proto, (3,), True)

    tie = network.layers[0].tie
    assert tie is not None and tie.n_params == 12 and tie.tied.all()
    np.testing.assert_array_equal(tie.index[:4], tie.index[4:])
    np.testing.assert_allclose(tie.mult[4:], 2.0 * tie.mult[:4])


def test_composed_weights_without_an_activation_become_free_entries():
    conv2 = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c", "V"], ["y"], name="conv2"),
    ]
    proto = model(
        conv2,
        {"W": RNG.normal(size=(2, 1, 3, 3)), "V": RNG.normal(size=(1, 2, 2, 2))},
        (1, 4, 4),
        F32,
    )
    gemm2 = [
        helper.make_node("Gemm", ["x", "W"], ["h"], name="g1"),
        helper.make_node("Gemm", ["h", "V"], ["y"], name="g2"),
    ]

    network = read_and_check(proto, (1, 4, 4), False)
    dense = read_and_check(
        model(gemm2, {"W": RNG.normal(size=(3, 4)), "V": RNG.normal(size=(4, 2))}), (3,), True
    )

    tie = network.layers[0].tie
    assert tie.n_params == np.count_nonzero(tie.tied)  # every nonzero its own parameter
    assert np.count_nonzero(tie.tied) < tie.index.size  # the zeros outside the kernel stay
    assert dense.layers[0].tie is None


# ====================================================================== errors
def _conv_nodes():
    return [helper.make_node("Conv", ["x", "W"], ["y"], name="conv")]


def test_a_conv_whose_weight_is_a_graph_input_is_unsupported():
    proto = model(_conv_nodes(), {}, (1, 4, 4), F32)
    proto.graph.input.append(helper.make_tensor_value_info("W", F32, [2, 1, 3, 3]))

    with pytest.raises(UnsupportedOperationError, match=r"'conv' \(Conv\)"):
        read_onnx(proto)


def test_a_conv_whose_weight_depends_on_the_data_is_unsupported():
    nodes = [
        helper.make_node("Identity", ["x"], ["W"], name="to_weight"),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv"),
    ]

    with pytest.raises(UnsupportedOperationError, match=r"'conv' \(Conv\): input 1 .*constant"):
        read_onnx(model(nodes, {}, (1, 4, 4), F32))


@pytest.mark.parametrize(
    "node, pattern",
    [
        (
            helper.make_node("LpPool", ["x"], ["y"], name="lp", kernel_shape=[2, 2]),
            r"'lp' \(LpPool\): Lp pooling",
        ),
        (helper.make_node("GlobalLpPool", ["x"], ["y"], name="glp"), r"'glp' \(GlobalLpPool\)"),
        (
            helper.make_node("MaxPool", ["x"], ["y", "idx"], name="mp", kernel_shape=[2, 2]),
            r"'mp' \(MaxPool\): the Indices output",
        ),
        (
            helper.make_node("Sigmoid", ["x"], ["y"], name="sig"),
            r"'sig' \(Sigmoid\): not piecewise linear, so it has no exact MILP formulation",
        ),
        (
            helper.make_node("HardSwish", ["x"], ["y"], name="hsw"),
            r"'hsw' \(HardSwish\): not piecewise linear.*HardSigmoid, Abs, Max",
        ),
        (
            helper.make_node("ThresholdedRelu", ["x"], ["y"], name="tr"),
            r"'tr' \(ThresholdedRelu\): discontinuous",
        ),
        (
            helper.make_node("ReduceMax", ["x"], ["y"], name="all", keepdims=0),
            r"'all' \(ReduceMax\): reducing over all axes includes the batch axis",
        ),
        (
            helper.make_node("ReduceMin", ["x"], ["y"], name="rb", axes=[0, 2]),
            r"'rb' \(ReduceMin\): operating on the batch axis",
        ),
        (
            helper.make_node("PRelu", ["x", "x"], ["y"], name="pr"),
            r"'pr' \(PRelu\): input 1 must be a constant",
        ),
        (
            helper.make_node("Clip", ["x", "x"], ["y"], name="cl"),
            r"'cl' \(Clip\): the min bound depends on the network input",
        ),
        (
            helper.make_node(
                "MaxPool",
                ["x"],
                ["y"],
                name="mpd",
                kernel_shape=[2, 2],
                dilations=[2, 2],
                auto_pad="SAME_UPPER",
            ),
            r"'mpd' \(MaxPool\): auto_pad",
        ),
        (
            helper.make_node("Mul", ["x", "x"], ["y"], name="sq"),
            r"'sq' \(Mul\): multiplies two data-dependent tensors",
        ),
    ],
)
def test_operations_without_an_exact_form_raise_naming_node_and_op(node, pattern):
    proto = model([node], {}, (1, 4, 4), F32)

    with pytest.raises(UnsupportedOperationError, match=pattern):
        read_onnx(proto)


def test_what_would_not_fit_in_memory_is_refused_naming_node_op_and_size(monkeypatch):
    from pyomo_nnrelax.onnx import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 40_000_000)
    conv = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    big_conv = model(conv, {"W": RNG.normal(size=(8, 4, 3, 3))}, (4, 64, 64), F32)
    gemm = [helper.make_node("Gemm", ["x", "W"], ["y"], name="gemm")]
    dense = model(gemm, {"W": RNG.normal(size=(1500, 1500))}, (1500,))

    # 1.2 million entries of the map; a 1500 x 1500 dense last layer with its tie (read in chunks)
    with pytest.raises(
        OnnxImportError, match=r"node 'conv' \(Conv\): the 1,155,200 entries .* 129.4 MB"
    ):
        read_onnx(big_conv)
    with pytest.raises(
        OnnxImportError, match=r"graph output 'y': .*1500 x 1500 would take about 216"
    ):
        read_onnx(dense)


def test_max_min_and_reduce_max_refuse_what_mixes_the_batch_or_is_out_of_range():
    rank_mix = [
        helper.make_node("ReduceSum", ["x", "ax"], ["s"], name="sum", keepdims=0),
        helper.make_node("Min", ["x", "s"], ["y"], name="mn"),
    ]
    batch_const = [helper.make_node("Max", ["x", "c"], ["y"], name="mx")]
    out_of_range = [helper.make_node("ReduceMax", ["x"], ["y"], name="rm", axes=[3])]

    with pytest.raises(UnsupportedOperationError, match=r"'mn' \(Min\): .*different ranks"):
        read_onnx(model(rank_mix, {"ax": np.array([2], dtype=np.int64)}, (2, 3)))
    with pytest.raises(UnsupportedOperationError, match=r"'mx' \(Max\): .*across the batch"):
        read_onnx(model(batch_const, {"c": np.ones((4, 2, 3))}, (2, 3)))
    with pytest.raises(OnnxImportError, match=r"'rm' \(ReduceMax\): axes \[3\] are out of"):
        read_onnx(model(out_of_range, {}, (2, 3)))


# ====================================================================== the tag algebra
def _dense(value) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A value's coefficients, ``src`` and ``mult`` as (entries, n_in + 1) arrays (FIXED and 0
    where nothing is stored), the last column its constant terms (a fixed zero: nothing)."""
    from pyomo_nnrelax.onnx.tags import FIXED

    shape = (value.size, value.n_in + 1)
    coef, mult, src = np.zeros(shape), np.zeros(shape), np.full(shape, FIXED)
    at = (value.entry_rows(), value.cols)
    coef[at], (src[at], mult[at]) = value.vals, value.tags()
    coef[:, -1], (src[:, -1], mult[:, -1]) = value.offset, value.offset_tags()
    return coef, src, mult


def _product_by_terms(matrix, params, mult, value) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``matrix @ value`` and its tags coefficient by coefficient (constant terms last), by the
    rule of ``pyomo_nnrelax.onnx.tags`` (the reference the vectorised algebra is checked
    against), and how many coefficients are one parameter from several terms."""
    from pyomo_nnrelax.onnx.tags import FIXED, FREE

    coef, src, dmult = _dense(value)
    out_src = np.full((matrix.shape[0], coef.shape[1]), FIXED)
    out_mult, merged = np.zeros(out_src.shape), 0
    for i, j in np.ndindex(*out_src.shape):
        params_seen, factor, free, n_terms = set(), 0.0, False, 0
        for k in range(matrix.shape[1]):
            a, p, am, d, s, dm = (
                matrix[i, k],
                params[i, k],
                mult[i, k],
                *(x[k, j] for x in (coef, src, dmult)),
            )
            if (a == 0.0 and p == FIXED) or (d == 0.0 and s == FIXED):
                continue  # nothing stored on one side: no term
            if p == FIXED and s == FIXED:
                continue  # a fixed term: adds to the offset
            if s == FIXED and p >= 0 or p == FIXED and s >= 0:
                params_seen.add(max(p, s))
                factor += am * d if p >= 0 else a * dm
                n_terms += 1
            else:
                free = True
        if free or len(params_seen) > 1:
            out_src[i, j], out_mult[i, j] = FREE, 1.0
        elif params_seen and factor != 0.0:
            out_src[i, j], out_mult[i, j] = params_seen.pop(), factor
            merged += n_terms > 1
    return matrix @ coef, out_src, out_mult, merged


@pytest.mark.parametrize("chunk", [1 << 16, 3])
def test_products_and_sums_of_values_follow_the_tag_rule_term_by_term(monkeypatch, chunk):
    from pyomo_nnrelax.onnx import values
    from pyomo_nnrelax.onnx.tags import FREE
    from pyomo_nnrelax.onnx.values import (
        OpMatrix,
        apply_matrix,
        constant_value,
        linear_sum,
        selection,
    )

    monkeypatch.setattr(values, "TERMS_PER_CHUNK", chunk)
    rng = np.random.default_rng(3)
    n_in, k, n = 9, 6, 5

    def op(shape, n_params):
        matrix = rng.normal(size=shape) * (rng.random(shape) < 0.6)
        params = np.where(rng.random(shape) < 0.7, rng.integers(0, n_params, shape), -1)
        params[0, 0], matrix[0, 1], params[0, 1] = 0, 0.0, 1  # a tied zero is trainable
        mult = np.where(params >= 0, rng.uniform(0.5, 1.5, shape), 0.0)
        return matrix, params, mult

    # a scaled selection (each input feeds one entry: no terms to merge), the selection twice
    # (two terms per coefficient: one parameter twice merges), and a tagged value (fixed,
    # tied and free coefficients, and constant terms tied to a bias, some beside fixed ones)
    picked = selection(0, (n_in,), n_in).take(rng.permutation(n_in)[:k])
    chosen = values.scale_shift(picked, rng.uniform(0.5, 2.0, k), rng.normal(size=k))
    twice = values.concatenate([chosen, chosen.take(rng.permutation(k))])
    first = op((k, k), 3)
    bias = constant_value(rng.normal(size=k), n_in, rng.integers(3, 5, k), 0.5)
    tagged = linear_sum(
        [(1.0, apply_matrix(chosen, OpMatrix((k, k), *first))), (0.5, chosen), (1.0, bias)]
    )
    kinds, merged = set(), 0
    for value in (chosen, twice, tagged):
        matrix, params, mult = op((n, value.size), 2)
        out = apply_matrix(value, OpMatrix(matrix.shape, matrix, params, mult))
        coef, src, tag_mult = _dense(out)
        expected = _product_by_terms(matrix, params, mult, value)
        np.testing.assert_allclose(coef, expected[0], atol=1e-12)
        np.testing.assert_array_equal(src, expected[1])
        np.testing.assert_allclose(tag_mult, expected[2], atol=1e-12)
        kinds |= {"tied" if t >= 0 else "free" if t == FREE else "fixed" for t in src.flat}
        merged += expected[3]
    assert kinds == {"tied", "free", "fixed"} and merged > 0  # every case was checked


# ====================================================================== BatchNormalization
def _batchnorm(channels: int, epsilon: float = 0.25) -> tuple[dict, dict]:
    """BatchNormalization's parameters, none trivial: scales of both signs, shifts, means, and
    variances from 0.1 to 3 with a large epsilon (a float32 attribute: exact here), so that
    ``sqrt(var + eps)`` matters."""
    rng = np.random.default_rng(channels)
    inits = {
        "s": rng.uniform(0.5, 2.0, channels) * np.where(np.arange(channels) % 2, -1.0, 1.0),
        "b": rng.normal(size=channels),
        "mean": rng.normal(size=channels),
        "var": rng.uniform(0.1, 3.0, channels),
    }
    return inits, {"epsilon": epsilon}


def _bn_node(data: str, out: str, attrs: dict):
    return helper.make_node(
        "BatchNormalization", [data, "s", "b", "mean", "var"], [out], name="bn", **attrs
    )


def _batchnorm_by_hand(h: np.ndarray, inits: dict, epsilon: float) -> np.ndarray:
    """``s (h - mean) / sqrt(var + eps) + b`` per channel (axis 1), from ONNX's definition."""
    shape = (1, -1) + (1,) * (h.ndim - 2)
    s, b, mean, var = (inits[k].reshape(shape) for k in ("s", "b", "mean", "var"))
    return s * (h - mean) / np.sqrt(var + epsilon) + b


@pytest.mark.parametrize(
    "case, input_shape",
    [("after_max_pool", (3, 4, 4)), ("after_relu", (3, 2, 3)), ("1d", (5,)), ("1d_length", (4, 6))],
)
def test_batch_normalization_kept_in_the_graph_matches_onnxruntime(case, input_shape):
    """Torch exports fold BatchNormalization into the Conv before it; these graphs keep the
    node, after a pool, after an activation and on BatchNorm1d's (N, C) and (N, C, L) data.
    Checked against onnxruntime and against the definition written out here."""
    inits, attrs = _batchnorm(input_shape[0])
    if case == "after_max_pool":
        nodes = [
            helper.make_node(
                "MaxPool", ["x"], ["h"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
            ),
            _bn_node("h", "y", attrs),
        ]
    elif case == "after_relu":
        nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"), _bn_node("h", "y", attrs)]
    else:
        nodes = [_bn_node("x", "y", attrs)]
    proto = model(nodes, inits, input_shape)
    network = read_and_check(proto, input_shape, float64=True)
    X = RNG.normal(size=(6, *input_shape))
    h = X
    if case == "after_max_pool":
        h = X.reshape(6, input_shape[0], 2, 2, 2, 2).max(axis=(3, 5))
    elif case == "after_relu":
        h = np.maximum(X, 0.0)
    expected = _batchnorm_by_hand(h, inits, attrs["epsilon"]).reshape(6, -1)
    np.testing.assert_allclose(network.forward(X), expected, rtol=1e-12, atol=1e-12)


def test_batch_normalization_with_the_default_epsilon_and_in_float32():
    inits, _ = _batchnorm(3)
    inits["var"] = np.array([1e-4, 2e-5, 3e-4])  # the default epsilon (1e-5) matters
    proto = model([_bn_node("x", "y", {})], inits, (3, 2), F32)
    network = read_and_check(proto, (3, 2), float64=False)
    X = RNG.normal(size=(4, 3, 2))
    expected = _batchnorm_by_hand(X, inits, 1e-5).reshape(4, -1)
    np.testing.assert_allclose(network.forward(X), expected, rtol=1e-5)


# ====================================================================== LeakyRelu and PRelu
SLOPES = np.array([0.375, -0.4, 1.7, 0.0, 1.0, 0.15])
"""PRelu slopes per neuron: every kind (none 0.5, where swapping ``a`` and ``1 - a`` would not
show); LeakyRelu's alpha is the first (a float32 attribute: exact)."""


def _sloped_graph(op: str) -> object:
    """``Gemm -> LeakyRelu / PRelu -> Gemm`` with 6 hidden neurons, about half of them
    negative at random inputs: the negative side of the slopes decides the outputs."""
    rng = np.random.default_rng(11)
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["z"], name="g1")]
    inits = {"W1": rng.normal(size=(3, 6)), "b1": rng.normal(size=6) * 0.1}
    if op == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", ["z"], ["h"], name="act", alpha=SLOPES[0]))
    else:
        nodes.append(helper.make_node("PRelu", ["z", "a"], ["h"], name="act"))
        inits["a"] = SLOPES
    nodes.append(helper.make_node("Gemm", ["h", "W2"], ["y"], name="g2"))
    inits["W2"] = rng.normal(size=(6, 2))
    return model(nodes, inits, (3,), out_rank=2), inits


@pytest.mark.parametrize("op", ["LeakyRelu", "PRelu"])
def test_leaky_relu_and_prelu_match_onnxruntime_where_pre_activations_are_negative(op):
    from pyomo_nnrelax import run_onnxruntime

    proto, inits = _sloped_graph(op)
    X = RNG.normal(size=(8, 3))
    z = X @ inits["W1"] + inits["b1"]
    assert 0.3 < np.mean(z < 0) < 0.7  # both sides of every slope are exercised
    slope = np.full(6, SLOPES[0]) if op == "LeakyRelu" else SLOPES
    by_hand = np.where(z > 0, z, slope * z) @ inits["W2"]
    network = read_and_check(proto, (3,), float64=True)
    np.testing.assert_allclose(network.forward(X), by_hand, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run_onnxruntime(proto, X), by_hand, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("formulation", ["bigm", "partition"])
@pytest.mark.parametrize("op", ["LeakyRelu", "PRelu"])
def test_leaky_relu_and_prelu_through_the_milp_at_fixed_inputs(op, formulation):
    """Inputs fixed where some pre-activations are negative: the MILP's outputs are
    onnxruntime's."""
    from pyomo_nnrelax import run_onnxruntime
    from tests.support.solving import solve_optimal

    proto, inits = _sloped_graph(op)
    for x in RNG.uniform(-2.0, 2.0, size=(3, 3)):
        assert np.any(x @ inits["W1"] + inits["b1"] < -1e-3)
        m = pyo.ConcreteModel()
        m.nn = NNBlock(proto, input_bounds=InputBox.uniform(-2.0, 2.0, 3), formulation=formulation)
        for i, v in enumerate(x):
            m.nn.inputs[i].fix(float(v))
        m.obj = pyo.Objective(expr=sum(m.nn.outputs.values()))
        solve_optimal(m)
        expected = run_onnxruntime(proto, x[None])[0]
        np.testing.assert_allclose(m.nn.output_values(), expected, rtol=0, atol=1e-6)
