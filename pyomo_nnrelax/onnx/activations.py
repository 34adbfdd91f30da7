"""Convolutions, average pools and piecewise linear activations.

Conv, ConvTranspose (constant weights; any rank, strides, pads, auto_pad, dilations, groups,
bias, output_padding, output_shape), AveragePool and GlobalAveragePool are affine maps built
by :mod:`.conv` and folded into the pending layer; a Conv weight that is a graph initializer is
tagged with its parameter numbers, so the closed layer shares the kernel (its bias becomes
one bias per output position: training does not keep that shared).  An average pool is a
fixed map: on data that holds parameters, an entry that mixes several becomes free.  A pool
with ``auto_pad`` SAME and dilations is refused (onnxruntime and the spec pad it differently).

The piecewise linear ops are folded exactly into ReLU and linear neurons of closed layers:

* ``Relu``: the pending map closes as ReLU neurons.
* ``LeakyRelu(alpha)`` and ``PRelu`` (a constant slope ``a``, broadcast as ONNX does, e.g. one
  per channel): the layer gets the rows of ``z`` twice, as ReLU neurons ``r`` and as linear
  neurons ``l``, and the op's value is ``(1 - a) * r + a * l``, exact for any slope (a slope of
  0 needs no linear row, a slope of 1 no ReLU row).
* ``Clip`` with constant bounds (inputs from opset 11, attributes before; a missing or
  infinite bound is no bound; ReLU6 and Hardtanh export as Clip):
  ``clip(v) = v - relu(v - max) + relu(min - v)``, i.e. rows ``[v - max; min - v]`` as ReLUs
  and ``v`` linear; ``relu(v) - relu(v - max)`` when ``min == 0``; one ReLU row when one
  bound is given.  ``min >= max`` gives the constant ``max``, as the ONNX spec says.
* ``HardSigmoid(alpha, beta)``: ``clip(alpha * z + beta, 0, 1)``, as Clip.  (HardSwish,
  ``z * hardsigmoid(z)``, is not piecewise linear and stays unsupported.)
* ``Abs``: ``relu(z) + relu(-z)``, rows ``[z; -z]`` as ReLUs.

The maxima (MaxPool, GlobalMaxPool, Max, Min, ReduceMax, ReduceMin) are trees of ReLUs built
by :mod:`.maxima`.  Every other data value still needed later is carried through each closed
layer as linear neurons (:func:`~.graph.close_layer`).
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import numpy as np

from ..errors import InvalidNetworkError
from . import conv
from .graph import (
    FREE,
    Affine,
    Node,
    ReadState,
    Value,
    apply_matrix,
    close_layer,
    linear_sum,
    sample_const,
    scale_shift,
)


def spatial_attrs(node: Node, data: Affine, kernel) -> tuple[list[int], list[int], list[int]]:
    """``strides``, ``dilations`` and explicit ``pads`` of a conv or pool node."""
    if len(data.shape) < 2:
        raise node.mismatch(f"data of sample shape {data.shape} has no spatial dimensions")
    n = len(data.shape) - 1
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    auto_pad = node.attr("auto_pad", "NOTSET")
    if "Pool" in node.proto.op_type and auto_pad.startswith("SAME") and max(dilations) > 1:
        raise node.unsupported(
            f"auto_pad={auto_pad} with dilations {dilations}: onnxruntime pads a dilated pool "
            "for the undilated kernel, unlike the ONNX spec; give explicit pads"
        )
    try:
        pads = conv.resolve_pads(
            auto_pad,
            data.shape[1:],
            kernel,
            strides,
            dilations,
            node.attr("pads"),
        )
    except ValueError as exc:
        raise node.mismatch(str(exc)) from None
    return strides, dilations, pads


# ---------------------------------------------------------------------- convolutions, pools
def _apply_map(
    node: Node,
    state: ReadState,
    data: Affine,
    build: Callable[[], conv.SparseMap],
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> Affine:
    """The data through a sparse map of :mod:`.conv` (plus a per-channel bias), with tags."""
    try:
        smap = build()
        matrix = smap.dense(weight)
    except ValueError as exc:
        raise node.mismatch(str(exc)) from None
    ids = None if weight is None else state.param_ids(node, 1, weight.shape)
    params = mult = None
    if ids is not None:
        tied = smap.param >= 0
        params = np.full(matrix.shape, -1, dtype=np.int64)
        mult = np.zeros(matrix.shape)
        rows, cols = smap.rows[tied], smap.cols[tied]
        params[rows, cols] = ids.reshape(-1)[smap.param[tied]]
        mult[rows, cols] = smap.coef[tied]
        flat = rows * matrix.shape[1] + cols
        unique, counts = np.unique(flat, return_counts=True)
        twice = unique[counts > 1]  # one entry made of several weights: no single parameter
        params.reshape(-1)[twice] = FREE
    out = apply_matrix(data.reshaped((prod(data.shape),)), matrix, params, mult)
    out = out.reshaped(smap.out_shape)
    if bias is not None:
        if bias.shape != (smap.out_shape[0],):
            raise node.mismatch(f"bias of shape {bias.shape} does not match the output channels")
        out.coef[..., -1] += bias[conv.channel_of_output(smap.out_shape)].reshape(smap.out_shape)
    return out


def _conv_weight(node: Node, data: Affine) -> np.ndarray:
    weight = node.const(1)
    if weight.ndim != len(data.shape) + 1:
        raise node.mismatch(f"weight of shape {weight.shape} does not fit data {data.shape}")
    kernel = node.attr("kernel_shape")
    if kernel is not None and list(kernel) != list(weight.shape[2:]):
        raise node.mismatch(f"kernel_shape {list(kernel)} differs from weight {weight.shape}")
    return weight


def _conv(node: Node, state: ReadState) -> list[Value]:
    """Conv (any rank, groups, dilations, auto_pad) with a constant weight and bias."""
    data = node.data(0)
    weight = _conv_weight(node, data)
    strides, dilations, pads = spatial_attrs(node, data, weight.shape[2:])
    bias = node.const(2) if node.optional(2) is not None else None
    group = node.attr("group", 1)

    def build() -> conv.SparseMap:
        return conv.conv_map(data.shape, weight.shape, strides, pads, dilations, group)

    return [_apply_map(node, state, data, build, weight, bias)]


def _conv_transpose(node: Node, state: ReadState) -> list[Value]:
    """ConvTranspose with a constant weight and bias (output_padding, output_shape, auto_pad)."""
    data = node.data(0)
    weight = _conv_weight(node, data)
    n = len(data.shape) - 1
    bias = node.const(2) if node.optional(2) is not None else None
    shape = node.attr("output_shape")
    shape = None if shape is None else list(shape)[-n:]

    def build() -> conv.SparseMap:
        return conv.conv_transpose_map(
            data.shape,
            weight.shape,
            node.attr("strides", [1] * n),
            node.attr("pads"),
            node.attr("dilations", [1] * n),
            node.attr("group", 1),
            node.attr("output_padding"),
            shape,
            node.attr("auto_pad", "NOTSET"),
        )

    return [_apply_map(node, state, data, build, weight, bias)]


def _average_pool(node: Node, state: ReadState) -> list[Value]:
    """AveragePool (pads, count_include_pad, ceil_mode, dilations) and GlobalAveragePool: fixed
    maps, so on tagged data an entry mixing several parameters becomes free."""
    data = node.data(0)
    if node.proto.op_type == "GlobalAveragePool":
        return [_apply_map(node, state, data, lambda: conv.global_average_pool_map(data.shape))]
    kernel = node.attr("kernel_shape")
    if kernel is None:
        raise node.mismatch("attribute kernel_shape is missing")
    strides, dilations, pads = spatial_attrs(node, data, kernel)

    def build() -> conv.SparseMap:
        return conv.average_pool_map(
            data.shape,
            kernel,
            strides,
            pads,
            dilations,
            bool(node.attr("count_include_pad", 0)),
            bool(node.attr("ceil_mode", 0)),
        )

    return [_apply_map(node, state, data, build)]


# ---------------------------------------------------------------------- activations
def _relu(node: Node, state: ReadState) -> list[Value]:
    """Close the pending affine map as ReLU neurons; the output is a selection of them."""
    return close_layer(state, [(node.data(0), True)])


def _sloped(node: Node, state: ReadState, z: Affine, slope: np.ndarray) -> list[Value]:
    """``(1 - a) * relu(z) + a * z`` for a slope ``a`` of z's sample shape."""
    flat = slope.reshape(-1)
    if np.all(flat == 1.0):
        return [z]
    if np.all((flat == 0.0) | (flat == 1.0)):  # ReLU or identity per neuron: a mask layer
        return close_layer(state, [(z, (flat == 0.0).reshape(z.shape))])
    relu_at, lin_at = np.flatnonzero(flat != 1.0), np.flatnonzero(flat != 0.0)
    relu = z if relu_at.size == flat.size else z.take(relu_at)
    lin = z if lin_at.size == flat.size else z.take(lin_at)
    r, l = close_layer(state, [(relu, True), (lin, False)])
    width = r.coef.shape[-1]
    coef = np.zeros((flat.size, width))
    coef[relu_at] += (1.0 - flat[relu_at])[:, None] * r.coef.reshape(-1, width)
    coef[lin_at] += flat[lin_at][:, None] * l.coef.reshape(-1, width)
    return [Affine(coef.reshape(*z.shape, width))]


def _leaky_relu(node: Node, state: ReadState) -> list[Value]:
    z = node.data(0)
    return _sloped(node, state, z, np.full(z.shape, float(node.attr("alpha", 0.01))))


def _prelu(node: Node, state: ReadState) -> list[Value]:
    z = node.data(0)
    slope, shape = sample_const(node, node.const(1), z.shape)
    if shape != z.shape:
        raise node.mismatch(
            f"slope of shape {node.const(1).shape} does not broadcast to data of shape {z.shape}"
        )
    return _sloped(node, state, z, slope)


_FLOAT_MAX = 3.4e38  # the attribute defaults of opset < 11 are +-FLT_MAX: no bound


def _clip_bound(node: Node, index: int, attr: str) -> float | None:
    if node.opset < 11:
        value = node.attr(attr)
        if value is None or abs(value) >= _FLOAT_MAX:
            return None
    else:
        value = node.optional(index)
        if value is None:
            return None
        if isinstance(value, Affine):
            raise node.unsupported(f"the {attr} bound depends on the network input")
        value = np.asarray(value, dtype=np.float64)
        if value.size != 1:
            raise node.mismatch(f"the {attr} bound must be a scalar, got shape {value.shape}")
        value = value.reshape(-1)[0]
    value = float(value)
    if np.isnan(value):
        raise InvalidNetworkError(f"node '{node.label}' (Clip): the {attr} bound is NaN")
    if np.isinf(value):
        if (value > 0) == (attr == "max"):
            return None
        raise node.unsupported(f"an infinite {attr} bound of {value} makes the output infinite")
    return value


def clip(state: ReadState, v: Affine, lo: float | None, hi: float | None) -> Affine:
    """``clip(v, lo, hi)`` (None: no bound) as ReLU rows and ``v`` linear (module docstring)."""
    if lo is None and hi is None:
        return v
    if lo is not None and hi is not None and lo >= hi:
        return scale_shift(v, 0.0, hi)  # min >= max: max everywhere (ONNX)
    if lo is None:
        r, l = close_layer(state, [(scale_shift(v, 1.0, -hi), True), (v, False)])
        return linear_sum([(1.0, l), (-1.0, r)])
    if hi is None:
        r, l = close_layer(state, [(scale_shift(v, -1.0, lo), True), (v, False)])
        return linear_sum([(1.0, l), (1.0, r)])
    if lo == 0.0:
        r, r_hi = close_layer(state, [(v, True), (scale_shift(v, 1.0, -hi), True)])
        return linear_sum([(1.0, r), (-1.0, r_hi)])
    r_hi, r_lo, l = close_layer(
        state, [(scale_shift(v, 1.0, -hi), True), (scale_shift(v, -1.0, lo), True), (v, False)]
    )
    return linear_sum([(1.0, l), (-1.0, r_hi), (1.0, r_lo)])


def _clip(node: Node, state: ReadState) -> list[Value]:
    lo, hi = _clip_bound(node, 1, "min"), _clip_bound(node, 2, "max")
    return [clip(state, node.data(0), lo, hi)]


def _hard_sigmoid(node: Node, state: ReadState) -> list[Value]:
    """``clip(alpha * z + beta, 0, 1)``."""
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return [clip(state, scale_shift(node.data(0), alpha, beta), 0.0, 1.0)]


def _abs(node: Node, state: ReadState) -> list[Value]:
    """``|z| = relu(z) + relu(-z)``: one layer of two ReLU rows per entry."""
    z = node.data(0)
    r, r_neg = close_layer(state, [(z, True), (scale_shift(z, -1.0, 0.0), True)])
    return [linear_sum([(1.0, r), (1.0, r_neg)])]


HANDLERS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _average_pool,
    "Relu": _relu,
    "LeakyRelu": _leaky_relu,
    "PRelu": _prelu,
    "Clip": _clip,
    "HardSigmoid": _hard_sigmoid,
    "Abs": _abs,
}
