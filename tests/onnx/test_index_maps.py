"""Tests of pyomo_nnrelax.onnx.index_maps: each map against onnxruntime on one-node ONNX models.

onnxruntime's CPU provider has float64 kernels only for MaxPool; Conv, ConvTranspose and the
average pools run in float32, with inputs and weights rounded to float32 first so that the
only difference is onnxruntime's float32 arithmetic (tolerance 1e-5 instead of 1e-9).
"""

from __future__ import annotations

from math import prod

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from pyomo_nnrelax.onnx.index_maps import (
    SparseMap,
    average_pool_map,
    channel_of_output,
    conv_map,
    conv_transpose_map,
    global_average_pool_map,
    pool_windows,
    resolve_pads,
)

N_SAMPLES = 3
FLOAT32_RTOL = 1e-5
FLOAT64_RTOL = 1e-9


def _model(
    op: str,
    in_shape: tuple[int, ...],
    attrs: dict,
    initializers: dict[str, np.ndarray] | None = None,
    elem_type: int = TensorProto.FLOAT,
    opset: int = 17,
) -> onnx.ModelProto:
    """A model of one ``op`` node on input ``x`` of shape (batch, *in_shape), extra inputs
    given as initializers (in order)."""
    dtype = np.float64 if elem_type == TensorProto.DOUBLE else np.float32
    initializers = initializers or {}
    node = helper.make_node(op, ["x", *initializers], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", elem_type, ["batch", *in_shape])],
        [helper.make_tensor_value_info("y", elem_type, None)],
        [numpy_helper.from_array(v.astype(dtype), name) for name, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, X: np.ndarray) -> np.ndarray:
    """onnxruntime's output on ``X`` (cast to the model's input type), flattened to (n, -1)."""
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    elem_type = model.graph.input[0].type.tensor_type.elem_type
    dtype = np.float64 if elem_type == TensorProto.DOUBLE else np.float32
    (y,) = session.run(None, {"x": X.astype(dtype)})
    return y.reshape(len(X), -1).astype(np.float64)


def _float32(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal samples rounded to float32, held in float64."""
    return rng.standard_normal(shape).astype(np.float32).astype(np.float64)


def _assert_close(ours: np.ndarray, theirs: np.ndarray, rtol: float) -> None:
    """Equal shapes and values within ``rtol`` of the output's scale."""
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * max(1.0, np.abs(theirs).max()))


def _apply(sparse_map: SparseMap, X: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """The map applied to a batch through its dense matrix, as the tests compare it."""
    return X.reshape(len(X), -1) @ sparse_map.dense(weight).T


# (in_shape, weight_shape, strides, pads, dilations, group)
CONV_CASES = {
    "1d_asymmetric_pads_stride2": ((2, 9), (3, 2, 3), [2], [1, 2], [1], 1),
    "1d_dilation2": ((2, 10), (2, 2, 3), [1], [0, 1], [2], 1),
    "1d_depthwise": ((3, 8), (3, 1, 2), [1], [1, 0], [1], 3),
    "2d_plain": ((2, 5, 6), (3, 2, 3, 3), [1, 1], [0, 0, 0, 0], [1, 1], 1),
    "2d_asymmetric_pads": ((2, 7, 6), (4, 2, 3, 2), [2, 1], [1, 0, 2, 1], [1, 2], 1),
    "2d_stride2_dilation2": ((2, 9, 8), (2, 2, 3, 3), [2, 2], [1, 2, 1, 0], [2, 2], 1),
    "2d_groups": ((4, 6, 6), (6, 2, 3, 3), [2, 2], [1, 1, 1, 1], [1, 1], 2),
    "2d_depthwise": ((3, 6, 5), (6, 1, 3, 3), [1, 2], [0, 1, 2, 1], [2, 1], 3),
    "2d_kernel_larger_than_stride": ((1, 9, 8), (2, 1, 4, 5), [2, 3], [1, 2, 2, 1], [1, 1], 1),
    "3d": ((2, 5, 4, 6), (2, 1, 2, 3, 2), [1, 2, 2], [1, 0, 1, 0, 2, 1], [2, 1, 1], 2),
}


@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_matches_onnxruntime(case, bias: bool) -> None:
    in_shape, weight_shape, strides, pads, dilations, group = case
    rng = np.random.default_rng(0)
    W = _float32(rng, weight_shape)
    b = _float32(rng, (weight_shape[0],))
    X = _float32(rng, (N_SAMPLES, *in_shape))
    attrs = dict(
        kernel_shape=list(weight_shape[2:]),
        strides=strides,
        pads=pads,
        dilations=dilations,
        group=group,
    )
    model = _model("Conv", in_shape, attrs, {"W": W, "B": b} if bias else {"W": W})
    sparse_map = conv_map(in_shape, weight_shape, strides, pads, dilations, group)
    ours = _apply(sparse_map, X, W)
    if bias:
        ours = ours + b[channel_of_output(sparse_map.out_shape)]
    _assert_close(ours, _run(model, X), FLOAT32_RTOL)


# onnxruntime rejects dilations with SAME_UPPER / SAME_LOWER in Conv ("Dilation not supported").
AUTO_PAD_CASES = {
    "2d_odd_totals": ((2, 7, 8), (3, 2, 4, 3), [2, 3], [1, 1], ["SAME_UPPER", "SAME_LOWER"]),
    "2d_even_totals": ((2, 8, 6), (2, 2, 3, 3), [2, 2], [1, 1], ["SAME_UPPER", "SAME_LOWER"]),
    "1d": ((2, 11), (2, 2, 4), [3], [1], ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"]),
    "2d_dilated": ((2, 9, 6), (2, 2, 3, 2), [2, 1], [2, 2], ["VALID", "NOTSET"]),
}
AUTO_PAD_PARAMS = [
    pytest.param(*case[:4], auto_pad, id=f"{name}-{auto_pad}")
    for name, case in AUTO_PAD_CASES.items()
    for auto_pad in case[4]
]


def _same_out(in_spatial, strides) -> tuple[int, ...]:
    """``ceil(in / stride)``, the output size of SAME_UPPER and SAME_LOWER."""
    return tuple(-(-i // s) for i, s in zip(in_spatial, strides))


@pytest.mark.parametrize("in_shape, weight_shape, strides, dilations, auto_pad", AUTO_PAD_PARAMS)
def test_conv_auto_pad_matches_onnxruntime(
    in_shape, weight_shape, strides, dilations, auto_pad: str
) -> None:
    rng = np.random.default_rng(1)
    W = _float32(rng, weight_shape)
    X = _float32(rng, (N_SAMPLES, *in_shape))
    kernel = list(weight_shape[2:])
    attrs = dict(kernel_shape=kernel, strides=strides, dilations=dilations, auto_pad=auto_pad)
    pads = resolve_pads(auto_pad, in_shape[1:], kernel, strides, dilations, None)
    sparse_map = conv_map(in_shape, weight_shape, strides, pads, dilations, 1)
    _assert_close(
        _apply(sparse_map, X, W), _run(_model("Conv", in_shape, attrs, {"W": W}), X), FLOAT32_RTOL
    )
    if auto_pad.startswith("SAME"):
        assert sparse_map.out_shape[1:] == _same_out(in_shape[1:], strides)


@pytest.mark.parametrize("ceil_mode", [0, 1], ids=["floor", "ceil"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_pool_auto_pad_matches_onnxruntime(auto_pad: str, ceil_mode: int) -> None:
    in_shape, kernel, strides = (2, 7, 8), [4, 3], [2, 3]
    X = np.random.default_rng(7).standard_normal((N_SAMPLES, *in_shape))
    attrs = dict(kernel_shape=kernel, strides=strides, auto_pad=auto_pad, ceil_mode=ceil_mode)
    pads = resolve_pads(auto_pad, in_shape[1:], kernel, strides, [1, 1], None)
    windows, out_shape = pool_windows(in_shape, kernel, strides, pads, [1, 1], bool(ceil_mode))
    flat = X.reshape(N_SAMPLES, -1)
    ours = np.where(windows >= 0, flat[:, windows], -np.inf).max(axis=-1)
    model = _model("MaxPool", in_shape, attrs, elem_type=TensorProto.DOUBLE)
    _assert_close(ours, _run(model, X), FLOAT64_RTOL)
    average = average_pool_map(in_shape, kernel, strides, pads, [1, 1], False, bool(ceil_mode))
    X32 = X.astype(np.float32).astype(np.float64)
    _assert_close(
        _apply(average, X32), _run(_model("AveragePool", in_shape, attrs), X32), FLOAT32_RTOL
    )
    if auto_pad.startswith("SAME"):
        assert out_shape[1:] == _same_out(in_shape[1:], strides)


def test_resolve_pads_splits_odd_totals() -> None:
    # in 7, kernel 4, stride 2: out 4 needs (4 - 1) * 2 + 4 - 7 = 3 padded elements.
    assert resolve_pads("SAME_UPPER", [7], [4], [2], [1], None) == [1, 2]
    assert resolve_pads("SAME_LOWER", [7], [4], [2], [1], None) == [2, 1]
    assert resolve_pads("VALID", [7, 5], [4, 2], [2, 1], [1, 1], None) == [0, 0, 0, 0]
    assert resolve_pads("NOTSET", [7, 5], [4, 2], [2, 1], [1, 1], None) == [0, 0, 0, 0]
    assert resolve_pads("NOTSET", [7, 5], [4, 2], [2, 1], [1, 1], [1, 0, 2, 3]) == [1, 0, 2, 3]
    # dilation 3 makes the kernel 4 span 10: out 3 needs 2 * 2 + 10 - 6 = 8.
    assert resolve_pads("SAME_UPPER", [6], [4], [2], [3], None) == [4, 4]


# (in_shape, weight_shape, strides, pads, dilations, group, output_padding, output_shape, auto_pad)
CONV_TRANSPOSE_CASES = {
    "1d_plain": ((2, 5), (2, 3, 3), [1], [0, 0], [1], 1, [0], None, "NOTSET"),
    "1d_stride2_pads_output_padding": ((2, 5), (2, 2, 3), [2], [1, 0], [1], 1, [1], None, "NOTSET"),
    "1d_dilation2": ((1, 4), (1, 2, 3), [3], [2, 1], [2], 1, [1], None, "NOTSET"),
    "2d_strides_pads_dilations": (
        (2, 4, 3),
        (2, 3, 3, 2),
        [2, 3],
        [1, 0, 0, 2],
        [1, 2],
        1,
        [1, 0],
        None,
        "NOTSET",
    ),
    "2d_groups": ((4, 3, 4), (4, 2, 3, 3), [2, 1], [1, 1, 0, 1], [1, 1], 2, [0, 0], None, "NOTSET"),
    "2d_depthwise": (
        (3, 3, 3),
        (3, 1, 2, 2),
        [2, 2],
        [0, 0, 0, 0],
        [1, 1],
        3,
        [1, 1],
        None,
        "NOTSET",
    ),
    "1d_output_shape_odd_total": ((2, 4), (2, 2, 3), [2], None, [1], 1, [0], [8], "NOTSET"),
    "2d_output_shape": ((2, 3, 4), (2, 2, 3, 2), [2, 2], None, [1, 2], 1, [1, 0], [6, 7], "NOTSET"),
    "2d_same_upper": ((2, 3, 4), (2, 2, 3, 4), [2, 3], None, [1, 1], 1, [0, 0], None, "SAME_UPPER"),
    "2d_same_lower": ((2, 3, 4), (2, 2, 3, 4), [2, 3], None, [1, 1], 1, [0, 0], None, "SAME_LOWER"),
}


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES.values(), ids=CONV_TRANSPOSE_CASES.keys())
def test_conv_transpose_matches_onnxruntime(case) -> None:
    in_shape, weight_shape, strides, pads, dilations, group, output_padding, output_shape, auto = (
        case
    )
    rng = np.random.default_rng(2)
    W = _float32(rng, weight_shape)
    b = _float32(rng, (weight_shape[1] * group,))
    X = _float32(rng, (N_SAMPLES, *in_shape))
    attrs = dict(
        kernel_shape=list(weight_shape[2:]),
        strides=strides,
        dilations=dilations,
        group=group,
        output_padding=output_padding,
        auto_pad=auto,
    )
    if pads is not None:
        attrs["pads"] = pads
    if output_shape is not None:
        attrs["output_shape"] = output_shape
    model = _model("ConvTranspose", in_shape, attrs, {"W": W, "B": b})
    sparse_map = conv_transpose_map(
        in_shape,
        weight_shape,
        strides,
        pads,
        dilations,
        group,
        output_padding,
        output_shape,
        auto_pad=auto,
    )
    ours = _apply(sparse_map, X, W) + b[channel_of_output(sparse_map.out_shape)]
    _assert_close(ours, _run(model, X), FLOAT32_RTOL)
    if output_shape is not None:
        assert sparse_map.out_shape[1:] == tuple(output_shape)


# (in_shape, kernel, strides, pads); for each, count_include_pad and ceil_mode are 0 and 1.
POOL_CASES = {
    "1d_ceil_partial_window": ((2, 6), [3], [2], [0, 0]),
    "1d_pads": ((1, 7), [3], [2], [1, 2]),
    "2d_asymmetric_pads": ((2, 5, 7), [2, 3], [2, 2], [1, 0, 1, 2]),
    "2d_ceil_drops_window_in_pad": ((2, 5, 5), [2, 2], [2, 2], [1, 1, 1, 1]),
    "2d_stride3": ((1, 8, 7), [3, 2], [3, 3], [0, 1, 2, 1]),
}


@pytest.mark.parametrize("ceil_mode", [0, 1], ids=["floor", "ceil"])
@pytest.mark.parametrize("count_include_pad", [0, 1], ids=["exclude_pad", "include_pad"])
@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_average_pool_matches_onnxruntime(case, count_include_pad: int, ceil_mode: int) -> None:
    in_shape, kernel, strides, pads = case
    X = _float32(np.random.default_rng(3), (N_SAMPLES, *in_shape))
    attrs = dict(
        kernel_shape=kernel,
        strides=strides,
        pads=pads,
        count_include_pad=count_include_pad,
        ceil_mode=ceil_mode,
    )
    sparse_map = average_pool_map(
        in_shape,
        kernel,
        strides,
        pads,
        [1] * len(kernel),
        bool(count_include_pad),
        bool(ceil_mode),
    )
    assert (sparse_map.param == -1).all()
    _assert_close(
        _apply(sparse_map, X), _run(_model("AveragePool", in_shape, attrs), X), FLOAT32_RTOL
    )


@pytest.mark.parametrize("ceil_mode", [0, 1], ids=["floor", "ceil"])
@pytest.mark.parametrize("count_include_pad", [0, 1], ids=["exclude_pad", "include_pad"])
def test_dilated_average_pool_matches_onnxruntime(count_include_pad: int, ceil_mode: int) -> None:
    # AveragePool has dilations from opset 19 on.
    in_shape, kernel, strides, pads, dilations = (2, 8, 7), [2, 3], [2, 1], [1, 0, 1, 2], [3, 2]
    X = _float32(np.random.default_rng(4), (N_SAMPLES, *in_shape))
    attrs = dict(
        kernel_shape=kernel,
        strides=strides,
        pads=pads,
        dilations=dilations,
        count_include_pad=count_include_pad,
        ceil_mode=ceil_mode,
    )
    model = _model("AveragePool", in_shape, attrs, opset=19)
    sparse_map = average_pool_map(
        in_shape, kernel, strides, pads, dilations, bool(count_include_pad), bool(ceil_mode)
    )
    _assert_close(_apply(sparse_map, X), _run(model, X), FLOAT32_RTOL)


def test_ceil_mode_window_past_the_padded_end_divides_by_what_it_covers() -> None:
    # in 6, kernel 3, stride 2, ceil: windows [0, 3), [2, 5), [4, 7); the last covers 2 elements.
    sparse_map = average_pool_map((1, 6), [3], [2], [0, 0], [1], True, True)
    np.testing.assert_allclose(sparse_map.dense()[2], [0, 0, 0, 0, 0.5, 0.5])


@pytest.mark.parametrize("in_shape", [(3, 7), (2, 4, 5)], ids=["1d", "2d"])
def test_global_average_pool_matches_onnxruntime(in_shape) -> None:
    X = _float32(np.random.default_rng(5), (N_SAMPLES, *in_shape))
    sparse_map = global_average_pool_map(in_shape)
    assert sparse_map.out_shape == (in_shape[0], *(1,) * (len(in_shape) - 1))
    _assert_close(
        _apply(sparse_map, X), _run(_model("GlobalAveragePool", in_shape, {}), X), FLOAT32_RTOL
    )


# (in_shape, kernel, strides, pads, dilations)
MAX_POOL_CASES = {
    "1d_plain": ((2, 7), [2], [1], [0, 0], [1]),
    "1d_pads_stride2": ((2, 8), [3], [2], [2, 1], [1]),
    "1d_dilation2": ((1, 9), [3], [2], [1, 0], [2]),
    "2d_pads_strides": ((2, 5, 7), [2, 3], [2, 2], [1, 0, 1, 2], [1, 1]),
    "2d_dilations": ((2, 8, 7), [2, 3], [2, 1], [1, 0, 1, 2], [3, 2]),
    "2d_ceil_drops_window_in_pad": ((2, 5, 5), [2, 2], [2, 2], [1, 1, 1, 1], [1, 1]),
    "3d": ((2, 4, 5, 6), [2, 2, 3], [1, 2, 2], [0, 1, 1, 1, 0, 2], [2, 1, 1]),
}


@pytest.mark.parametrize("ceil_mode", [0, 1], ids=["floor", "ceil"])
@pytest.mark.parametrize("case", MAX_POOL_CASES.values(), ids=MAX_POOL_CASES.keys())
def test_max_pool_windows_match_onnxruntime(case, ceil_mode: int) -> None:
    in_shape, kernel, strides, pads, dilations = case
    X = np.random.default_rng(6).standard_normal((N_SAMPLES, *in_shape))
    attrs = dict(
        kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations, ceil_mode=ceil_mode
    )
    windows, out_shape = pool_windows(in_shape, kernel, strides, pads, dilations, bool(ceil_mode))
    assert windows.shape == (prod(out_shape), prod(kernel))
    assert (windows >= 0).any(axis=1).all()
    flat = X.reshape(N_SAMPLES, -1)
    ours = np.where(windows >= 0, flat[:, windows], -np.inf).max(axis=-1)
    model = _model("MaxPool", in_shape, attrs, elem_type=TensorProto.DOUBLE)
    _assert_close(ours, _run(model, X), FLOAT64_RTOL)


def test_max_pool_windows_stay_in_their_channel() -> None:
    in_shape = (3, 4, 5)
    windows, out_shape = pool_windows(in_shape, [2, 2], [2, 2], [1, 1, 1, 1], [1, 1], False)
    channel_of_input = np.arange(prod(in_shape)) // prod(in_shape[1:])
    channel = np.repeat(channel_of_output(out_shape)[:, None], windows.shape[1], axis=1)
    assert (channel_of_input[windows[windows >= 0]] == channel[windows >= 0]).all()


def test_entries_are_the_nonzeros() -> None:
    in_shape, weight_shape, group = (4, 9, 8), (6, 2, 3, 2), 2
    conv = conv_map(in_shape, weight_shape, [2, 1], [0, 0, 0, 0], [1, 2], group)
    n_out = prod(conv.out_shape)
    assert conv.out_shape == (6, 4, 6)
    assert len(conv.rows) == n_out * (in_shape[0] // group) * prod(weight_shape[2:])
    assert len(conv.cols) == len(conv.param) == len(conv.coef) == len(conv.rows)
    assert np.count_nonzero(conv.dense(np.ones(weight_shape))) == len(conv.rows)
    assert (np.diff(conv.rows) >= 0).all()
    assert (conv.coef == 1.0).all() and conv.param.min() >= 0
    # Padding removes the entries that fall into it.
    padded = conv_map(in_shape, weight_shape, [2, 1], [1, 1, 1, 1], [1, 2], group)
    assert len(padded.rows) == np.count_nonzero(padded.dense(np.ones(weight_shape)))
    # A transposed convolution without padding scatters every input through the whole kernel.
    transposed = conv_transpose_map((4, 3, 5), (4, 3, 2, 3), [2, 2], None, [1, 1], 2, None)
    assert len(transposed.rows) == prod((4, 3, 5)) * 3 * prod((2, 3))
    pool = average_pool_map((3, 6, 6), [2, 3], [2, 3], None, [1, 1], False, False)
    assert len(pool.rows) == prod(pool.out_shape) * 2 * 3


def test_large_conv_builds_without_a_dense_matrix() -> None:
    # 64 x 32 x 32 in and out, depthwise 3 x 3: a dense matrix would have 4.3e9 entries, the
    # map has 5.7e5 (each dim has 32 * 3 - 2 taps inside the input).
    conv = conv_map((64, 32, 32), (64, 1, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 64)
    assert conv.out_shape == (64, 32, 32)
    assert len(conv.rows) == 64 * (32 * 32 * 9 - 4 * 32 * 3 + 4)


def test_dense_sums_duplicates_and_needs_the_weight() -> None:
    tied = SparseMap(
        rows=np.array([0, 0, 1]),
        cols=np.array([1, 1, 0]),
        param=np.array([0, 1, -1]),
        coef=np.array([1.0, 2.0, 0.5]),
        out_shape=(2,),
        in_shape=(2,),
    )
    np.testing.assert_array_equal(tied.dense(np.array([3.0, 4.0])), [[0.0, 11.0], [0.5, 0.0]])
    with pytest.raises(ValueError, match="weight"):
        tied.dense()
    with pytest.raises(ValueError, match="weight"):
        tied.dense(np.array([3.0]))


def test_channel_of_output() -> None:
    np.testing.assert_array_equal(channel_of_output((3, 2, 1)), [0, 0, 1, 1, 2, 2])


BAD_ARGUMENTS = {
    "conv_pads_length": (
        lambda: conv_map((2, 5, 5), (3, 2, 3, 3), [1, 1], [1, 1], [1, 1], 1),
        "pads",
    ),
    "conv_negative_pads": (
        lambda: conv_map((2, 5, 5), (3, 2, 3, 3), [1, 1], [1, -1, 0, 0], [1, 1], 1),
        "pads",
    ),
    "conv_strides_length": (
        lambda: conv_map((2, 5, 5), (3, 2, 3, 3), [1], [0, 0, 0, 0], [1, 1], 1),
        "strides",
    ),
    "conv_zero_dilation": (
        lambda: conv_map((2, 5, 5), (3, 2, 3, 3), [1, 1], None, [1, 0], 1),
        "dilations",
    ),
    "conv_group": (lambda: conv_map((3, 5, 5), (4, 2, 3, 3), [1, 1], None, [1, 1], 2), "group"),
    "conv_kernel_too_large": (lambda: conv_map((2, 5), (3, 2, 7), [1], [0, 1], [1], 1), "kernel"),
    "conv_transpose_pads_length": (
        lambda: conv_transpose_map((2, 5), (2, 2, 3), [1], [1, 1, 1], [1], 1, [0]),
        "pads",
    ),
    "conv_transpose_negative_pads": (
        lambda: conv_transpose_map((2, 5), (2, 2, 3), [1], [-1, 0], [1], 1, [0]),
        "pads",
    ),
    "conv_transpose_output_padding": (
        lambda: conv_transpose_map((2, 5), (2, 2, 3), [2], None, [1], 1, [0, 1]),
        "output_padding",
    ),
    "conv_transpose_output_shape_too_large": (
        lambda: conv_transpose_map((2, 5), (2, 2, 3), [2], None, [1], 1, [0], [12]),
        "output_shape",
    ),
    "conv_transpose_auto_pad": (
        lambda: conv_transpose_map((2, 5), (2, 2, 3), [2], None, [1], 1, [0], auto_pad="SAME"),
        "auto_pad",
    ),
    "average_pool_pads_length": (
        lambda: average_pool_map((2, 5, 5), [2, 2], [1, 1], [0, 0, 0], [1, 1], True, False),
        "pads",
    ),
    "average_pool_negative_pads": (
        lambda: average_pool_map((2, 5), [2], [1], [0, -2], [1], True, False),
        "pads",
    ),
    "average_pool_kernel_length": (
        lambda: average_pool_map((2, 5, 5), [2], [1, 1], None, [1, 1], True, False),
        "kernel",
    ),
    "pool_windows_pads_length": (
        lambda: pool_windows((2, 5, 5), [2, 2], [1, 1], [1, 1, 1, 1, 1], [1, 1], False),
        "pads",
    ),
    "pool_windows_negative_pads": (
        lambda: pool_windows((2, 5), [2], [1], [-1, 0], [1], False),
        "pads",
    ),
    "pool_windows_strides_length": (
        lambda: pool_windows((2, 5), [2], [1, 1], None, [1], False),
        "strides",
    ),
    "resolve_pads_length": (
        lambda: resolve_pads("NOTSET", [5, 5], [2, 2], [1, 1], [1, 1], [1, 1, 1]),
        "pads",
    ),
    "resolve_pads_negative": (lambda: resolve_pads("NOTSET", [5], [2], [1], [1], [-1, 0]), "pads"),
    "resolve_pads_auto_pad": (lambda: resolve_pads("SAME", [5], [2], [1], [1], None), "auto_pad"),
    "resolve_pads_dilations_length": (
        lambda: resolve_pads("SAME_UPPER", [5], [2], [1], [1, 1], None),
        "dilations",
    ),
    "sample_shape_without_spatial_dims": (lambda: global_average_pool_map((3,)), "in_shape"),
}


@pytest.mark.parametrize("call, name", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_raise_value_error_naming_them(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()
