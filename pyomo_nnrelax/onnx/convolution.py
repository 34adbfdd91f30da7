"""Convolutions and average pools, folded into the pending layer.

Conv, ConvTranspose (constant weights; any rank, strides, pads, auto_pad, dilations, groups,
bias, output_padding, output_shape), AveragePool and GlobalAveragePool are affine maps built
by :mod:`.index_maps` and folded into the pending layer; a Conv weight that is a graph
initializer is tagged with its parameter numbers, so the closed layer shares the kernel (its
bias becomes one bias per output position: training does not keep that shared).  An average
pool is a fixed map: on data that holds parameters, an entry that mixes several becomes
free.  A pool with ``auto_pad`` SAME and dilations is refused (onnxruntime and the spec pad
it differently).
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import numpy as np

from . import index_maps
from .nodes import Node, ReadState
from .values import FREE, Affine, Value, apply_matrix


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
        out.coef[..., -1] += bias[index_maps.channel_of_output(smap.out_shape)].reshape(
            smap.out_shape
        )
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
