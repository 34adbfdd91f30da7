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
    layers = [(layer.weight, layer.bias) for layer in network.layers]
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


def test_the_selection_fast_path_gives_the_general_products_coefficients_and_tags():
    from pyomo_nnrelax.onnx.values import (
        FREE,
        Affine,
        _apply_to_selection,
        contract_tags,
    )

    rng = np.random.default_rng(3)
    n_in, k, n = 9, 6, 5
    coef = np.zeros((k, n_in + 1))
    coef[np.arange(k), rng.permutation(n_in)[:k]] = rng.uniform(0.5, 2.0, k)  # scaled selection
    coef[:, -1] = rng.normal(size=k)
    value = Affine(coef)
    matrix = rng.normal(size=(n, k)) * (rng.random((n, k)) < 0.7)
    params = np.where(matrix != 0.0, rng.integers(0, 4, (n, k)), -1)
    params[0, np.flatnonzero(matrix[0])[:1]] = FREE
    mult = np.where(params >= 0, rng.uniform(0.5, 1.5, (n, k)), 0.0)
    fast = _apply_to_selection(value, matrix, params, mult)
    src, tag_mult = contract_tags(matrix, params, mult, value, coef[:, :-1])
    np.testing.assert_allclose(fast.coef, matrix @ coef, atol=1e-12)
    np.testing.assert_array_equal(fast.src, src)
    np.testing.assert_allclose(fast.mult, tag_mult, atol=1e-12)
    assert (src >= 0).any() and (src == FREE).any() and (src == -1).any()
