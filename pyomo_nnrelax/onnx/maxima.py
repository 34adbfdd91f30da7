"""Maxima and minima of data tensors, folded exactly into ReLU and linear neurons.

The maximum of ``k`` candidates is a tree of pairwise maxima ``max(a, b) = a + relu(b - a)``,
one closed layer per tree level with rows ``[b - a]`` as ReLUs and ``a`` (or the odd candidate
out) linear; a single candidate needs no layer, and ``min(a, b) = -max(-a, -b)``.  If the
candidates hold trainable parameters, a linear layer is closed first so that the tree's rows
do not mix them (their sharing is kept); otherwise the first level reads their map.

* ``MaxPool`` (kernel_shape, strides, pads, dilations, auto_pad, ceil_mode; padding is ignored
  as ONNX does; the optional Indices output is refused) and ``GlobalMaxPool``: one tree per
  window (``ReduceMax``/``ReduceMin`` over non-batch axes are read by :mod:`.arithmetic` with
  :func:`row_extreme`).
* ``Max`` and ``Min`` of any number of data tensors and constants, broadcast as numpy does
  (e.g. ``torch.maximum(x, y)``, ``torch.clamp(x, min=t)`` with a tensor ``t``): one tree per
  output entry over its candidates; the constants are first folded into one, and a data
  tensor given twice counts once.
"""

from __future__ import annotations

from math import prod

import numpy as np

from . import index_maps
from .closing import close_layer
from .convolution import spatial_attrs
from .nodes import Node, ReadState, broadcast_operands
from .values import Affine, Value, concatenate, constant_value, linear_sum, scale_shift


def window_max(
    state: ReadState, data: Affine, windows: np.ndarray, out_shape: tuple[int, ...]
) -> Affine:
    """The maximum over each row of ``windows`` (flat positions of ``data``, -1 ignored)."""
    valid = windows >= 0
    items = np.take_along_axis(windows, np.argsort(~valid, axis=1, kind="stable"), axis=1)
    items = items[:, : max(1, int(valid.sum(axis=1).max()))]
    if items.shape[1] == 1:  # one candidate per window: a selection, tags and all
        return data.take(items[:, 0]).reshaped(out_shape)
    if data.has_parameters:
        [data] = close_layer(state, [(data, False)])
    rows = data.reshaped((data.size,))
    while items.shape[1] > 1:
        if items.shape[1] % 2:
            items = np.pad(items, ((0, 0), (0, 1)), constant_values=-1)
        a, b = items[:, 0::2], items[:, 1::2]
        keep, pair = a >= 0, (a >= 0) & (b >= 0)
        diff = linear_sum([(1.0, rows.take(b[pair])), (-1.0, rows.take(a[pair]))])
        r, l = close_layer(state, [(diff, True), (rows.take(a[keep]), False)])
        items = np.full(a.shape, -1, dtype=np.int64)
        items[keep] = np.arange(int(keep.sum()))
        where = np.full(l.size, -1, dtype=np.int64)
        where[items[pair]] = np.arange(r.size)
        rows = linear_sum([(1.0, l), (1.0, r.take(where))])
        items = items[:, : max(1, int((items >= 0).sum(axis=1).max()))]
    return rows.take(items[:, 0]).reshaped(out_shape)


def row_extreme(state: ReadState, value: Affine, minimum: bool = False) -> Affine:
    """The maximum (or minimum) of each row of a value of sample shape ``(n, k)``: ``(n,)``."""
    n, k = value.shape
    windows = np.arange(n * k, dtype=np.int64).reshape(n, k)
    if not minimum:
        return window_max(state, value, windows, (n,))
    return scale_shift(window_max(state, scale_shift(value, -1.0, 0.0), windows, (n,)), -1.0, 0.0)


def read_max_pool(node: Node, state: ReadState) -> list[Value]:
    if any(node.proto.output[1:]):
        raise node.unsupported("the Indices output (positions of the maxima) is not affine")
    data = node.data(0)
    if len(data.shape) < 2:
        raise node.mismatch(f"data of sample shape {data.shape} has no spatial dimensions")
    if node.proto.op_type == "GlobalMaxPool":
        size = prod(data.shape[1:])
        windows = np.arange(prod(data.shape), dtype=np.int64).reshape(-1, size)
        return [window_max(state, data, windows, (data.shape[0],) + (1,) * (len(data.shape) - 1))]
    kernel = node.attr("kernel_shape")
    if kernel is None:
        raise node.mismatch("attribute kernel_shape is missing")
    strides, dilations, pads = spatial_attrs(node, data, kernel)
    try:
        windows, out_shape = index_maps.pool_windows(
            data.shape, kernel, strides, pads, dilations, bool(node.attr("ceil_mode", 0))
        )
    except ValueError as exc:
        raise node.mismatch(str(exc)) from None
    if not np.all((windows >= 0).any(axis=1)):
        raise node.mismatch("a pooling window lies entirely in the padding")
    return [window_max(state, data, windows, out_shape)]


def read_max_min(node: Node, state: ReadState) -> list[Value]:
    """Max and Min of data tensors and constants (numpy broadcasting), entry by entry."""
    minimum = node.proto.op_type == "Min"
    shape, data, consts = broadcast_operands(node)
    candidates = list({id(node.inputs[i]): v for i, v in data}.values())  # given twice: once
    if consts:
        folded = (np.minimum if minimum else np.maximum).reduce([k for _, k in consts])
        candidates.append(constant_value(folded, candidates[0].n_in))
    if len(candidates) == 1:
        return [candidates[0]]
    n = prod(shape)
    stacked = concatenate([v.reshaped((1, n)) for v in candidates])
    columns = stacked.rearranged(lambda a: np.swapaxes(a, 0, 1))
    return [row_extreme(state, columns, minimum).reshaped(shape)]
