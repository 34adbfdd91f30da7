"""Convolutions and average pools, folded into the pending layer.

Conv, ConvTranspose (constant weights; any rank, strides, pads, auto_pad, dilations, groups,
bias, output_padding, output_shape), AveragePool and GlobalAveragePool are affine maps built
by :mod:`.index_maps` and folded into the pending layer; a weight that is a graph
initializer is tagged with its parameter numbers, so the closed layer shares the kernel, and
so is a bias that is one: each channel's bias is one parameter at all its positions.  An
average pool is a fixed map: on data that holds parameters, an entry that mixes several becomes
free.  A pool with ``auto_pad`` SAME and dilations is refused (onnxruntime and the spec pad
it differently).
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import numpy as np

from . import index_maps
from .nodes import Node, ReadState
from .tags import FIXED
from .values import Affine, OpMatrix, Value, apply_matrix, constant_value, linear_sum


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
        pads = index_maps.resolve_pads(
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
def _op_matrix(smap: index_maps.SparseMap, weight, ids) -> OpMatrix:
    """The map's entries as an op matrix sorted by row: ``coef * weight.flat[param]`` tagged
    with ``ids.flat[param]`` (factor ``coef``) where ``param >= 0`` (fixed without ``ids``),
    ``coef`` elsewhere; fixed zeros left out.  The map's arrays are used, not copied, where
    they serve as they are."""
    tied = smap.param >= 0
    param = smap.param if tied.all() else np.where(tied, smap.param, 0)
    vals = smap.coef
    if weight is not None:
        vals = vals * np.where(tied, np.asarray(weight, dtype=np.float64).reshape(-1)[param], 1.0)
    params = None if ids is None else np.where(tied, ids.reshape(-1)[param], FIXED)
    keep = (vals != 0.0) | (tied if params is not None else False)
    rows, cols, mult = smap.rows, smap.cols, smap.coef
    if not keep.all() or np.any(np.diff(rows) < 0):  # ConvTranspose maps are not row by row
        order = np.flatnonzero(keep)
        order = order[np.argsort(rows[order], kind="stable")]
        rows, cols, vals, mult = rows[order], cols[order], vals[order], mult[order]
        params = None if params is None else params[order]
    shape = (prod(smap.out_shape), prod(smap.in_shape))
    return OpMatrix(shape, vals, params, None if params is None else mult, rows=rows, cols=cols)


def _apply_map(
    node: Node,
    state: ReadState,
    data: Affine,
    build: Callable[[], index_maps.SparseMap],
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> Affine:
    """The data through a sparse map of :mod:`.index_maps` (plus a per-channel bias), with tags."""
    try:
        smap = build()
    except ValueError as exc:
        raise node.mismatch(str(exc)) from None
    ids = None if weight is None else state.param_ids(node, 1, weight.shape)
    op, out_shape = _op_matrix(smap, weight, ids), smap.out_shape
    del smap  # the op holds what it needs of the map
    out = apply_matrix(data.reshaped((prod(data.shape),)), op).reshaped(out_shape)
    if bias is not None:
        if bias.shape != (out_shape[0],):
            raise node.mismatch(f"bias of shape {bias.shape} does not match the output channels")
        channel = index_maps.channel_of_output(out_shape).reshape(out_shape)
        ids = state.param_ids(node, 2, bias.shape)
        bias_value = constant_value(bias[channel], out.n_in, None if ids is None else ids[channel])
        out = linear_sum([(1.0, out), (1.0, bias_value)])
    return out


def _conv_weight(node: Node, data: Affine) -> np.ndarray:
    weight = node.const(1)
    if weight.ndim != len(data.shape) + 1:
        raise node.mismatch(f"weight of shape {weight.shape} does not fit data {data.shape}")
    kernel = node.attr("kernel_shape")
    if kernel is not None and list(kernel) != list(weight.shape[2:]):
        raise node.mismatch(f"kernel_shape {list(kernel)} differs from weight {weight.shape}")
    return weight


def read_conv(node: Node, state: ReadState) -> list[Value]:
    """Conv (any rank, groups, dilations, auto_pad) with a constant weight and bias."""
    data = node.data(0)
    weight = _conv_weight(node, data)
    strides, dilations, pads = spatial_attrs(node, data, weight.shape[2:])
    bias = node.const(2) if node.optional(2) is not None else None
    group = node.attr("group", 1)

    def build() -> index_maps.SparseMap:
        return index_maps.conv_map(data.shape, weight.shape, strides, pads, dilations, group)

    return [_apply_map(node, state, data, build, weight, bias)]


def read_conv_transpose(node: Node, state: ReadState) -> list[Value]:
    """ConvTranspose with a constant weight and bias (output_padding, output_shape, auto_pad)."""
    data = node.data(0)
    weight = _conv_weight(node, data)
    n = len(data.shape) - 1
    bias = node.const(2) if node.optional(2) is not None else None
    shape = node.attr("output_shape")
    shape = None if shape is None else list(shape)[-n:]

    def build() -> index_maps.SparseMap:
        return index_maps.conv_transpose_map(
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


def read_average_pool(node: Node, state: ReadState) -> list[Value]:
    """AveragePool (pads, count_include_pad, ceil_mode, dilations) and GlobalAveragePool: fixed
    maps, so on tagged data an entry mixing several parameters becomes free."""
    data = node.data(0)
    if node.proto.op_type == "GlobalAveragePool":
        return [
            _apply_map(node, state, data, lambda: index_maps.global_average_pool_map(data.shape))
        ]
    kernel = node.attr("kernel_shape")
    if kernel is None:
        raise node.mismatch("attribute kernel_shape is missing")
    strides, dilations, pads = spatial_attrs(node, data, kernel)

    def build() -> index_maps.SparseMap:
        return index_maps.average_pool_map(
            data.shape,
            kernel,
            strides,
            pads,
            dilations,
            bool(node.attr("count_include_pad", 0)),
            bool(node.attr("ceil_mode", 0)),
        )

    return [_apply_map(node, state, data, build)]
