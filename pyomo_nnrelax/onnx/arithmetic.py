"""Affine ops on data tensors, folded into the pending layer: Add/Sub/Mul/Div with a broadcast
constant (input normalisation) or of data tensors (skip connections), Sum, Mean, Concat, Neg,
Gemm and MatMul with a constant (weights and biases that are initializers keep their
parameter numbers, :mod:`.tags`), inference-mode BatchNormalization, and the reductions
ReduceSum, ReduceMean (rows of the map) and ReduceMax, ReduceMin (max trees of
:mod:`.maxima`).
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import numpy as np

from ..errors import InvalidNetworkError
from . import maxima
from .nodes import Node, ReadState, broadcast_operands, sample_const
from .shapes import sample_axes
from .values import (
    Affine,
    OpMatrix,
    Value,
    apply_matrix,
    concatenate,
    constant_value,
    expand,
    linear_sum,
    scale_shift,
)


# ---------------------------------------------------------------------- helpers
def _moved(value: Affine, axis: int, to: int) -> Affine:
    """The value with its sample axis ``axis`` moved to ``to``."""
    return value.rearranged(lambda a: np.moveaxis(a, axis, to))


# ---------------------------------------------------------------------- elementwise
_SCALE_SHIFT: dict[str, Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray]]] = {
    "Add": lambda k, data_first: (np.ones_like(k), k),
    "Sub": lambda k, data_first: (np.ones_like(k), -k) if data_first else (-np.ones_like(k), k),
    "Mul": lambda k, data_first: (k, np.zeros_like(k)),
    "Div": lambda k, data_first: (1.0 / k, np.zeros_like(k)),
}


def _sum_of_data(node: Node, signs: list[float]) -> Affine:
    """Sum of the inputs (data or constant) with the given signs, numpy broadcasting."""
    shape, data, consts = broadcast_operands(node)
    offset = sum((signs[i] * k for i, k in consts), np.zeros(shape))
    return scale_shift(linear_sum([(signs[i], v) for i, v in data]), 1.0, offset)


#: Ops whose output an initializer added by the next node (Add, or Sub) is the bias of.
BIASED_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})


def _added_bias(node: Node, state: ReadState, data: Affine, data_first: bool) -> Affine | None:
    """``data + b`` (Add) or ``+-(data - b)`` (Sub) where ``b`` is an initializer and the data
    comes straight from a MatMul, Gemm, Conv or ConvTranspose: ``b`` is that op's bias, a
    trainable parameter as Gemm's C is (None otherwise)."""
    index = 1 if data_first else 0
    if state.producers.get(node.proto.input[1 - index]) not in BIASED_OPS:
        return None
    k = node.const(index)
    ids = state.param_ids(node, index, k.shape)
    if ids is None:
        return None
    k, shape = sample_const(node, k, data.shape)
    ids, _ = sample_const(node, ids, data.shape)
    sign = -1.0 if node.proto.op_type == "Sub" else 1.0
    data_sign, bias_sign = (1.0, sign) if data_first else (sign, 1.0)
    bias = constant_value(k, data.n_in, ids)
    return linear_sum([(data_sign, expand(data, shape)), (bias_sign, bias)])


def read_elementwise(node: Node, state: ReadState) -> list[Value]:
    """Add, Sub (any operands: a skip connection adds two data tensors), Mul, Div with one
    constant operand (e.g. input normalisation, or an op's bias: :func:`_added_bias`)."""
    op = node.proto.op_type
    if op in ("Add", "Sub") and all(isinstance(v, Affine) for v in node.inputs[:2]):
        return [_sum_of_data(node, [1.0, 1.0 if op == "Add" else -1.0])]
    if op == "Div" and isinstance(node.inputs[1], Affine):
        raise node.unsupported("dividing by a data-dependent tensor is not affine")
    data, k, data_first = node.data_and_const()
    if op in ("Add", "Sub"):
        biased = _added_bias(node, state, data, data_first)
        if biased is not None:
            return [biased]
    if op == "Div" and np.any(k == 0):
        raise InvalidNetworkError(f"node '{node.label}' (Div): division by zero")
    k, shape = sample_const(node, k, data.shape)
    scale, shift = _SCALE_SHIFT[op](k, data_first)
    return [scale_shift(expand(data, shape), scale, shift)]


def read_sum(node: Node, state: ReadState) -> list[Value]:
    """Sum (and Mean) of any number of data and constant tensors."""
    n = len(node.inputs)
    factor = 1.0 / n if node.proto.op_type == "Mean" else 1.0
    return [_sum_of_data(node, [factor] * n)]


def read_concat(node: Node, state: ReadState) -> list[Value]:
    """Concat of data (and constant) tensors along a non-batch axis, e.g. DenseNet blocks."""
    data = [v for v in node.inputs if isinstance(v, Affine)]
    rank = len(data[0].shape) + 1
    axis = node.attr("axis")
    if axis is None or not -rank <= axis < rank:
        raise node.mismatch(f"axis {axis} is missing or out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise node.unsupported("concatenating along the batch axis mixes samples")
    parts = []
    for i, value in enumerate(node.inputs):
        if not isinstance(value, Affine):
            k = node.const(i)
            batch_ok = k.ndim == rank and (k.shape[0] == 1 or np.all(k == k[:1]))
            if not batch_ok:
                raise node.unsupported(f"constant of shape {k.shape} does not fit the batch")
            value = constant_value(k[0], data[0].n_in)
        parts.append(value)
    shapes = [p.shape for p in parts]
    others = {s[: axis - 1] + s[axis:] for s in shapes}
    if len(others) > 1 or any(len(s) != rank - 1 for s in shapes):
        raise node.mismatch(f"cannot concatenate sample shapes {shapes} along axis {axis}")
    return [concatenate(parts, axis - 1)]


def read_neg(node: Node, state: ReadState) -> list[Value]:
    return [scale_shift(node.inputs[0], -1.0, 0.0)]


# ---------------------------------------------------------------------- matrix products
def read_gemm(node: Node, state: ReadState) -> list[Value]:
    """``alpha * X @ B' + beta * C`` with X the data (batch, k) and B, C constant."""
    data = node.inputs[0]
    if not isinstance(data, Affine):
        raise node.unsupported(
            "Gemm with the data as input B multiplies across the batch dimension"
        )
    if node.attr("transA", 0):
        raise node.unsupported("transA=1 on the data input transposes the batch dimension")
    if len(data.shape) != 1:
        raise node.mismatch(f"input A must be 2-D (batch, k), got sample shape {data.shape}")
    b = node.const(1)
    if b.ndim != 2:
        raise node.mismatch(f"input B must be 2-D, got shape {b.shape}")
    ids = state.param_ids(node, 1, b.shape)
    if node.attr("transB", 0):
        b, ids = b.T, None if ids is None else ids.T
    if b.shape[0] != data.shape[0]:
        raise node.mismatch(
            f"input B of shape {b.shape} does not match data of width {data.shape[0]}"
        )
    alpha = node.attr("alpha", 1.0)
    params = None if ids is None else ids.T
    out = apply_matrix(data, OpMatrix(b.T.shape, alpha * b.T, params, np.full(b.T.shape, alpha)))
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        c = node.const(2)
        if c.ndim == 2 and c.shape[0] != 1:
            raise node.unsupported(f"bias C of shape {c.shape} varies along the batch dimension")
        try:
            bias = np.broadcast_to(c.reshape(-1) if c.ndim else c, (b.shape[1],))
        except ValueError:
            raise node.mismatch(
                f"bias C of shape {c.shape} does not match {b.shape[1]} outputs"
            ) from None
        ids = state.param_ids(node, 2, c.shape)
        if ids is not None:
            ids = np.broadcast_to(ids.reshape(-1) if c.ndim else ids, bias.shape)
        beta = node.attr("beta", 1.0)
        out = linear_sum([(1.0, out), (1.0, constant_value(beta * bias, out.n_in, ids, beta))])
    return [out]


def read_matmul(node: Node, state: ReadState) -> list[Value]:
    """Data @ constant (per-row for N-D data) or constant @ data (N-D data only)."""
    data, k, data_first = node.data_and_const()
    if k.ndim not in (1, 2):
        raise node.unsupported(f"constant operand of shape {k.shape} is a batched matrix product")
    ids = state.param_ids(node, 1 if data_first else 0, k.shape)
    if data_first:
        if data.shape[-1:] != k.shape[:1]:
            raise node.mismatch(
                f"data of sample shape {data.shape} cannot multiply a {k.shape} matrix"
            )
        k2, ids2 = (k[:, None], None if ids is None else ids[:, None]) if k.ndim == 1 else (k, ids)
        op = OpMatrix(k2.T.shape, k2.T, None if ids2 is None else ids2.T, np.ones(k2.T.shape))
        out = _moved(apply_matrix(_moved(data, -1, 0), op), 0, -1)
        return [out.reshaped(out.shape[:-1]) if k.ndim == 1 else out]
    if len(data.shape) < 2 or k.ndim == 1:
        raise node.unsupported("constant @ data multiplies across the batch dimension for 2-D data")
    if data.shape[-2] != k.shape[-1]:
        raise node.mismatch(f"a {k.shape} matrix cannot multiply data of sample shape {data.shape}")
    out = apply_matrix(_moved(data, -2, 0), OpMatrix(k.shape, k, ids, np.ones(k.shape)))
    return [_moved(out, 0, -2)]


# ---------------------------------------------------------------------- normalisation, shapes
def read_batchnorm(node: Node, state: ReadState) -> list[Value]:
    """Inference-mode BatchNormalization as a per-channel scale and shift (channel = axis 1)."""
    if node.attr("training_mode", 0) or any(node.proto.output[1:]):
        raise node.unsupported("BatchNormalization in training mode depends on batch statistics")
    if node.attr("spatial", 1) != 1:
        raise node.unsupported("BatchNormalization with spatial=0 is not supported")
    data = node.inputs[0]
    scale, bias, mean, var = (node.const(i) for i in range(1, 5))
    if not data.shape or any(p.shape != (data.shape[0],) for p in (scale, bias, mean, var)):
        raise node.mismatch(
            f"parameters do not match {data.shape[:1]} channels of data {data.shape}"
        )
    factor = scale / np.sqrt(var + node.attr("epsilon", 1e-5))
    trailing = (1,) * (len(data.shape) - 1)
    factor_full = np.broadcast_to(factor.reshape(-1, *trailing), data.shape)
    shift_full = np.broadcast_to((bias - mean * factor).reshape(-1, *trailing), data.shape)
    return [scale_shift(data, factor_full, shift_full)]


def read_reduce(node: Node, state: ReadState) -> list[Value]:
    """ReduceSum, ReduceMean (one row of the map per output, e.g. a global average pool) and
    ReduceMax, ReduceMin (a max tree per output, :mod:`.maxima`) over non-batch axes."""
    data = node.data(0)
    rank = len(data.shape) + 1
    axes = node.ints(1, "axes")
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return [data]
        raise node.unsupported("reducing over all axes includes the batch axis")
    axes = sorted(set(sample_axes(node, axes, rank)))
    size = prod(data.shape[a] for a in axes)
    kept = [a for a in range(rank - 1) if a not in axes]
    shape = [1 if a in axes else d for a, d in enumerate(data.shape)]
    if not node.attr("keepdims", 1):
        shape = [d for a, d in enumerate(data.shape) if a not in axes]
    op = node.proto.op_type
    if op in ("ReduceMax", "ReduceMin"):
        moved = data.rearranged(lambda a: np.transpose(a, [*kept, *axes]))
        rows = moved.reshaped((prod(data.shape) // size, size))
        return [maxima.row_extreme(state, rows, op == "ReduceMin").reshaped(tuple(shape))]
    factor = 1.0 / size if op == "ReduceMean" else 1.0
    moved = data.rearranged(lambda a: np.transpose(a, [*axes, *kept]))
    rows = moved.reshaped((size, *(data.shape[a] for a in kept)))
    out = apply_matrix(rows, OpMatrix((1, size), np.full((1, size), factor)))
    return [out.reshaped(tuple(shape))]
