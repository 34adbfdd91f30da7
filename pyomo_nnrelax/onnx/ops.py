"""ONNX operations on data-dependent tensors, each folded into an affine map.

Every tensor met while reading a graph is a constant (a numpy array) or an
:class:`~.graph.Affine` value, an affine map of the current layer's input (see :mod:`.graph`).
Linear per-sample operations act on that map directly, so any chain of them folds into one
matrix: Gemm, MatMul, broadcast Add/Sub/Mul/Div with constants, Neg, BatchNormalization,
Transpose, reshapes, ReduceSum/ReduceMean, the skip connections Add/Sub/Sum/Mean of data
tensors and Concat of data (and constant) tensors along a non-batch axis, and Conv,
ConvTranspose, AveragePool and GlobalAveragePool (maps built by :mod:`.conv`, handlers in
:mod:`.activations`).  The piecewise linear ops close layers: Relu, LeakyRelu, PRelu, Clip,
HardSigmoid and Abs (:mod:`.activations`); MaxPool, GlobalMaxPool, elementwise Max/Min of
data and constants, and ReduceMax/ReduceMin over non-batch axes (axes as attribute or, from
opset 18, as input; keepdims; noop_with_empty_axes), all as max trees (:mod:`.maxima`).  An
op without an exact form raises, saying why (:data:`WHY_UNSUPPORTED`).  Nodes whose inputs
are all constant are evaluated with ONNX's reference implementation.  ``Shape`` of a data
tensor reports the batch dimension as the sentinel :data:`BATCH`, which a ``Reshape`` accepts
only in position 0.

Weights (constant B of Gemm/MatMul, W of Conv/ConvTranspose) that are graph initializers are
tagged with their parameter numbers, so the closed layers share them (:mod:`.graph`).  A
convolution's bias becomes one bias per output position: training does not keep it shared.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import numpy as np
from onnx.reference import ReferenceEvaluator

from ..errors import InvalidNetworkError
from . import activations, maxima
from .graph import (
    Affine,
    Node,
    ReadState,
    Value,
    apply_matrix,
    broadcast_operands,
    concatenate,
    constant_value,
    expand,
    linear_sum,
    sample_const,
    scale_shift,
)
from .load import FLOAT_TYPES

#: Stands for the (unknown) batch size in the output of ``Shape`` applied to a data tensor.
BATCH = -(2**40) - 7

#: The data ops that have an exact form (named in the messages below).
_EXACT = "Relu, LeakyRelu, PRelu, Clip, HardSigmoid, Abs, Max, Min, MaxPool, ReduceMax, ReduceMin"
_CURVED = (
    "Sigmoid Tanh Softmax LogSoftmax Softplus Softsign Elu Selu Celu Gelu Mish HardSwish "
    "Exp Log Sqrt Erf Sin Cos Tan Pow Reciprocal"
).split()
_JUMPS = "ThresholdedRelu Sign Floor Ceil Round".split()
RANDOM_OPS = (
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
)
WHY_UNSUPPORTED = {
    **{
        op: "not piecewise linear, so it has no exact MILP formulation (only ReLU-like "
        f"piecewise-linear activations do: {_EXACT})"
        for op in _CURVED
    },
    **{
        op: "discontinuous, so it has no exact MILP formulation (only ReLU-like continuous "
        f"piecewise-linear activations do: {_EXACT})"
        for op in _JUMPS
    },
    **{
        op: "Lp pooling (a p-norm of each window) has no exact MILP formulation"
        for op in ("LpPool", "GlobalLpPool")
    },
    **{op: "control flow is not supported" for op in ("If", "Loop", "Scan")},
    **{op: "random operations have no fixed value" for op in RANDOM_OPS},
}


# ---------------------------------------------------------------------- helpers
def _moved(value: Affine, axis: int, to: int) -> Affine:
    return value.apply(lambda a: np.moveaxis(a, axis, to))


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


def _elementwise(node: Node, state: ReadState) -> list[Value]:
    """Add, Sub (any operands: a skip connection adds two data tensors), Mul, Div with one
    constant operand (e.g. input normalisation)."""
    op = node.proto.op_type
    if op in ("Add", "Sub") and all(isinstance(v, Affine) for v in node.inputs[:2]):
        return [_sum_of_data(node, [1.0, 1.0 if op == "Add" else -1.0])]
    if op == "Div" and isinstance(node.inputs[1], Affine):
        raise node.unsupported("dividing by a data-dependent tensor is not affine")
    data, k, data_first = node.data_and_const()
    if op == "Div" and np.any(k == 0):
        raise InvalidNetworkError(f"node '{node.label}' (Div): division by zero")
    k, shape = sample_const(node, k, data.shape)
    scale, shift = _SCALE_SHIFT[op](k, data_first)
    return [scale_shift(expand(data, shape), scale, shift)]


def _sum(node: Node, state: ReadState) -> list[Value]:
    """Sum (and Mean) of any number of data and constant tensors."""
    n = len(node.inputs)
    factor = 1.0 / n if node.proto.op_type == "Mean" else 1.0
    return [_sum_of_data(node, [factor] * n)]


def _concat(node: Node, state: ReadState) -> list[Value]:
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


def _neg(node: Node, state: ReadState) -> list[Value]:
    return [scale_shift(node.inputs[0], -1.0, 0.0)]


def _passthrough(node: Node, state: ReadState) -> list[Value]:
    """Identity, and Dropout in inference mode (its optional mask output is not produced)."""
    if node.proto.op_type == "Dropout":
        training = node.inputs[2] if len(node.inputs) > 2 else None
        if isinstance(training, Affine) or (training is not None and bool(np.asarray(training))):
            raise node.unsupported("Dropout in training mode is random")
    return [node.inputs[0]]


def _cast(node: Node, state: ReadState) -> list[Value]:
    if node.attr("to") not in FLOAT_TYPES:
        raise node.unsupported("casting a data-dependent tensor to a non-float type is not affine")
    return [node.inputs[0]]


# ---------------------------------------------------------------------- matrix products
def _gemm(node: Node, state: ReadState) -> list[Value]:
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
    out = apply_matrix(data, alpha * b.T, None if ids is None else ids.T, np.full(b.T.shape, alpha))
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        c = node.const(2)
        if c.ndim == 2 and c.shape[0] != 1:
            raise node.unsupported(f"bias C of shape {c.shape} varies along the batch dimension")
        try:
            out.coef[:, -1] += node.attr("beta", 1.0) * np.broadcast_to(
                c.reshape(-1) if c.ndim else c, (b.shape[1],)
            )
        except ValueError:
            raise node.mismatch(
                f"bias C of shape {c.shape} does not match {b.shape[1]} outputs"
            ) from None
    return [out]


def _matmul(node: Node, state: ReadState) -> list[Value]:
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
        moved = _moved(data, -2, 0)
        out = apply_matrix(moved, k2.T, None if ids2 is None else ids2.T, np.ones(k2.T.shape))
        out = _moved(out, 0, -2)
        return [out.reshaped(out.shape[:-1]) if k.ndim == 1 else out]
    if len(data.shape) < 2 or k.ndim == 1:
        raise node.unsupported("constant @ data multiplies across the batch dimension for 2-D data")
    if data.shape[-2] != k.shape[-1]:
        raise node.mismatch(f"a {k.shape} matrix cannot multiply data of sample shape {data.shape}")
    out = apply_matrix(_moved(data, -3, 0), k, ids, np.ones(k.shape))
    return [_moved(out, 0, -3)]


# ---------------------------------------------------------------------- normalisation, shapes
def _batchnorm(node: Node, state: ReadState) -> list[Value]:
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


def _flatten(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    rank = len(data.shape) + 1
    axis = node.attr("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if axis == 0 or prod(data.shape[: axis - 1]) != 1:
        raise node.unsupported(
            f"Flatten with axis={node.attr('axis', 1)} merges the batch dimension"
        )
    return [data.reshaped((prod(data.shape),))]


def _reshape_target(
    node: Node, data_shape: tuple[int, ...], fixed_batch: int | None
) -> tuple[int, ...]:
    """The sample shape a Reshape produces, checking that the batch dimension stays first."""
    target = node.ints(1, "shape")
    allowzero = node.attr("allowzero", 0)
    if not target:
        raise node.unsupported("reshaping to a scalar drops the batch dimension")
    first, rest = target[0], target[1:]
    batch_kept = (
        first == BATCH
        or (first == 0 and not allowzero)
        or (fixed_batch is not None and first == fixed_batch)
    )
    if not batch_kept and first != -1:
        raise node.unsupported(f"reshape target {target} does not keep the batch dimension first")
    full = (None, *data_shape)
    dims = [
        full[i + 1] if d == 0 and not allowzero and i + 1 < len(full) else d
        for i, d in enumerate(rest)
    ]
    if any(d is None or (d < 0 and d != -1) for d in dims) or dims.count(-1) + (first == -1) > 1:
        raise node.unsupported(
            f"reshape target {target} cannot be resolved per sample; only reshapes of the form "
            f"(batch, d1, ..., dk) with at most one -1 are supported"
        )
    size = prod(data_shape)
    known = prod(d for d in dims if d != -1)
    if first == -1 and known != size:
        raise node.unsupported(
            f"reshape target {target} mixes the batch dimension with the features"
        )
    if -1 in dims:
        if known == 0 or size % known:
            raise node.mismatch(f"cannot reshape {size} entries per sample to {target}")
        dims[dims.index(-1)] = size // known
    if prod(dims) != size:
        raise node.mismatch(f"cannot reshape sample shape {data_shape} to {target} per sample")
    return tuple(dims)


def _reshape(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    return [data.reshaped(_reshape_target(node, data.shape, state.fixed_batch))]


def _sample_axes(node: Node, axes: list[int], rank: int) -> list[int]:
    """Axes of the full tensor (rank includes batch) as sample axes; the batch axis is refused."""
    normal = sorted(a + rank if a < 0 else a for a in axes)
    if any(not 0 <= a < rank for a in normal):
        raise node.mismatch(f"axes {axes} are out of range for rank {rank}")
    if 0 in normal:
        raise node.unsupported("operating on the batch axis is not supported")
    return [a - 1 for a in normal]


def _squeeze(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    axes = node.ints(1, "axes")
    axes = [i + 1 for i, d in enumerate(data.shape) if d == 1] if axes is None else axes
    drop = _sample_axes(node, axes, len(data.shape) + 1)
    if any(data.shape[a] != 1 for a in drop):
        raise node.mismatch(f"cannot squeeze axes {axes} of sample shape {data.shape}")
    return [data.reshaped(tuple(d for i, d in enumerate(data.shape) if i not in drop))]


def _unsqueeze(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    axes = node.ints(1, "axes") or []
    shape = list(data.shape)
    for a in _sample_axes(node, axes, len(shape) + 1 + len(axes)):
        shape.insert(a, 1)
    return [data.reshaped(tuple(shape))]


def _transpose(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    rank = len(data.shape) + 1
    perm = node.attr("perm") or list(range(rank))[::-1]
    if perm[0] != 0:
        raise node.unsupported(f"perm {list(perm)} moves the batch axis")
    axes = [p - 1 for p in perm[1:]] + [rank - 1]
    return [data.apply(lambda a: np.ascontiguousarray(np.transpose(a, axes)))]


def _reduce(node: Node, state: ReadState) -> list[Value]:
    """ReduceSum, ReduceMean (one row of the map per output, e.g. a global average pool) and
    ReduceMax, ReduceMin (a max tree per output, :mod:`.maxima`) over non-batch axes."""
    data = node.data(0)
    rank = len(data.shape) + 1
    axes = node.ints(1, "axes")
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return [data]
        raise node.unsupported("reducing over all axes includes the batch axis")
    axes = sorted(set(_sample_axes(node, axes, rank)))
    size = prod(data.shape[a] for a in axes)
    kept = [a for a in range(rank - 1) if a not in axes]
    shape = [1 if a in axes else d for a, d in enumerate(data.shape)]
    if not node.attr("keepdims", 1):
        shape = [d for a, d in enumerate(data.shape) if a not in axes]
    op = node.proto.op_type
    if op in ("ReduceMax", "ReduceMin"):
        moved = data.apply(lambda a: np.transpose(a, [*kept, *axes, rank - 1]))
        rows = moved.reshaped((prod(data.shape) // size, size))
        return [maxima.row_extreme(state, rows, op == "ReduceMin").reshaped(tuple(shape))]
    factor = 1.0 / size if op == "ReduceMean" else 1.0
    moved = data.apply(lambda a: np.transpose(a, [*axes, *kept, rank - 1]))
    out = apply_matrix(
        moved.reshaped((size, *(data.shape[a] for a in kept))), np.full((1, size), factor)
    )
    return [out.reshaped(tuple(shape))]


def _shape(node: Node, state: ReadState) -> list[Value]:
    """Shape of a data tensor, with :data:`BATCH` standing for the batch size."""
    full = np.array([BATCH, *node.inputs[0].shape], dtype=np.int64)
    start, end = node.attr("start", 0), node.attr("end")
    return [full[start:end]]


_Handler = Callable[[Node, ReadState], list[Value]]
_HANDLERS: dict[str, _Handler] = {
    "Add": _elementwise,
    "Sub": _elementwise,
    "Mul": _elementwise,
    "Div": _elementwise,
    "Sum": _sum,
    "Mean": _sum,
    "Concat": _concat,
    "Neg": _neg,
    "Identity": _passthrough,
    "Dropout": _passthrough,
    "Cast": _cast,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batchnorm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "ReduceSum": _reduce,
    "ReduceMean": _reduce,
    "ReduceMax": _reduce,
    "ReduceMin": _reduce,
    "Shape": _shape,
    **activations.HANDLERS,
    **maxima.HANDLERS,
}
#: Ops that read only the shape of a data tensor, so using it there is not a data path.
SHAPE_ONLY = {"Shape"}


# ---------------------------------------------------------------------- dispatch
def fold_constant(node: Node) -> list[Value]:
    """Evaluate a node whose inputs are all constant with ONNX's reference implementation."""
    op = node.proto.op_type
    if op in ("If", "Loop", "Scan") or op in RANDOM_OPS:
        raise node.unsupported(WHY_UNSUPPORTED[op])
    feeds = {name: value for name, value in zip(node.proto.input, node.inputs) if name}
    try:
        outputs = ReferenceEvaluator(node.proto, opsets={"": node.opset}).run(None, feeds)
    except Exception as exc:
        raise node.mismatch(f"could not evaluate constant node: {exc}") from exc
    return [np.asarray(v) for v in outputs]


def read_node(node: Node, state: ReadState) -> list[Value]:
    if node.proto.domain not in ("", "ai.onnx"):
        raise node.unsupported(
            f"operations of the custom domain '{node.proto.domain}' are not supported"
        )
    if not any(isinstance(v, Affine) for v in node.inputs):
        return fold_constant(node)
    handler = _HANDLERS.get(node.proto.op_type)
    if handler is None:
        raise node.unsupported(
            WHY_UNSUPPORTED.get(
                node.proto.op_type, "this operation is not supported on data-dependent tensors"
            )
        )
    outputs = handler(node, state)
    for value in outputs:
        if isinstance(value, Affine) and not np.all(np.isfinite(value.coef)):
            raise InvalidNetworkError(
                f"node '{node.label}' ({node.proto.op_type}) produces NaN or infinite weights"
            )
    return outputs
