"""Read ONNX graphs into a :class:`~pyomo_nnrelax.network.Network`, and write networks back.

Reading walks the graph in topological order.  Every tensor is either a *constant* (a numpy
array in its ONNX dtype) or an *affine value*: an affine map of the current layer's input,
stored as one float64 array of shape ``(*sample_shape, n_in + 1)`` whose last axis holds the
coefficients and, in the final slot, the constant term.  Linear per-sample operations (Gemm,
MatMul, broadcast Add/Sub/Mul/Div, BatchNormalization, Transpose, reshapes) act on that array
directly, so any chain of them folds into a single matrix.  A ``Relu`` closes a layer; the
graph output closes the last one.  Nodes whose inputs are all constant (initializers,
``Constant`` nodes, ``Shape``/``Gather``/``Concat`` chains that compute a reshape target) are
evaluated with ONNX's reference implementation.  ``Shape`` of a data tensor reports the batch
dimension as the sentinel :data:`BATCH`, which a ``Reshape`` accepts only in position 0.

Supported on data-dependent tensors: Gemm (data as input A, transA=0), MatMul with a constant
(data @ W per row of N-D data; W @ data for data of rank >= 3), Add/Sub/Mul/Div with a
broadcast constant on either side (no division by data), Neg, Relu, inference-mode
BatchNormalization, Dropout (inference), Identity, Cast to a float type (treated as exact),
Flatten(axis=1), Reshape/Squeeze/Unsqueeze/Transpose that keep the batch axis first, and Shape.
One float graph input of shape (batch, d1, ..., dk) with a dynamic or fixed batch, one output.
Everything else, branching data paths (skip connections) included, raises
:class:`UnsupportedOperationError` naming the node.  Reading never builds a Pyomo component.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import uses_external_data
from onnx.reference import ReferenceEvaluator

from .bounds import NetworkBounds
from .errors import InvalidNetworkError, OnnxImportError, UnsupportedOperationError
from .network import Layer, Network

Source = str | os.PathLike | onnx.ModelProto

INPUT_BOUNDS_KEY = "nnrelax.input_bounds"
BOUNDS_KEY = "nnrelax.bounds"

#: Stands for the (unknown) batch size in the output of ``Shape`` applied to a data tensor.
BATCH = -(2**40) - 7

_FLOAT_TYPES = {
    TensorProto.FLOAT: np.float32,
    TensorProto.DOUBLE: np.float64,
    TensorProto.FLOAT16: np.float16,
}
_WRITE_DTYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}

_ACTIVATIONS = (
    "Sigmoid Tanh Softmax LogSoftmax Softplus Softsign Elu Selu Celu Gelu Mish LeakyRelu PRelu "
    "HardSigmoid HardSwish ThresholdedRelu Clip Exp Log Sqrt Abs Erf Sin Cos Pow Reciprocal"
).split()
_RANDOM = (
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
)
_WHY_UNSUPPORTED = {
    **{op: "only ReLU activations have an exact MILP formulation" for op in _ACTIVATIONS},
    **{
        op: "convolutions are not supported; only fully connected layers are"
        for op in ("Conv", "ConvTranspose")
    },
    **{
        op: "pooling layers are not supported"
        for op in ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "LpPool")
    },
    **{op: "control flow is not supported" for op in ("If", "Loop", "Scan")},
    **{op: "random operations have no fixed value" for op in _RANDOM},
}


# ====================================================================== values and nodes
@dataclass(frozen=True)
class _Affine:
    """A data-dependent tensor: ``value[idx] = coef[idx, :-1] @ x + coef[idx, -1]``.

    ``x`` is the flattened input of the layer being built; ``fresh`` is True while the map is
    still the identity (only reshaped), i.e. right after the graph input or a ``Relu``.
    """

    coef: np.ndarray
    fresh: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return self.coef.shape[:-1]

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """``(matrix, offset)`` over the flattened tensor."""
        rows = self.coef.reshape(-1, self.coef.shape[-1])
        return rows[:, :-1], rows[:, -1]

    def reshaped(self, shape: tuple[int, ...]) -> _Affine:
        return _Affine(self.coef.reshape(*shape, self.coef.shape[-1]), self.fresh)


Value = np.ndarray | _Affine


def _identity(shape: tuple[int, ...]) -> _Affine:
    """The affine value of a fresh layer input of the given sample shape."""
    n = prod(shape)
    coef = np.hstack([np.eye(n), np.zeros((n, 1))])
    return _Affine(coef.reshape(*shape, n + 1), fresh=True)


@dataclass
class _Node:
    """One node being read: its proto, its input values and error helpers."""

    proto: onnx.NodeProto
    inputs: list[Value | None]
    opset: int

    @property
    def label(self) -> str:
        return self.proto.name or (self.proto.output[0] if self.proto.output else "<unnamed>")

    def attr(self, name: str, default=None):
        for attribute in self.proto.attribute:
            if attribute.name == name:
                return helper.get_attribute_value(attribute)
        return default

    def unsupported(self, why: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(f"node '{self.label}' ({self.proto.op_type}): {why}")

    def mismatch(self, why: str) -> OnnxImportError:
        return OnnxImportError(f"node '{self.label}' ({self.proto.op_type}): {why}")

    def data_and_const(self) -> tuple[_Affine, np.ndarray, bool]:
        """The data input, the constant input and whether the data comes first (binary ops)."""
        a, b = self.inputs[0], self.inputs[1]
        if isinstance(a, _Affine) and isinstance(b, _Affine):
            raise self.unsupported(
                "combines two data-dependent tensors (e.g. a skip connection); "
                "only feed-forward chains are supported"
            )
        if isinstance(a, _Affine):
            return a, self.const(1), True
        return b, self.const(0), False

    def const(self, index: int) -> np.ndarray:
        """Constant input ``index`` as finite float64."""
        value = self.inputs[index]
        if isinstance(value, _Affine):
            raise self.unsupported(
                f"input {index} must be a constant, but it depends on the network input"
            )
        if value is None:
            raise self.mismatch(f"input {index} is missing")
        array = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise InvalidNetworkError(
                f"node '{self.label}' ({self.proto.op_type}): constant input "
                f"'{self.proto.input[index]}' contains NaN or infinite values"
            )
        return array

    def ints(self, index: int, attr: str) -> list[int] | None:
        """An integer list given as attribute (older opsets) or as constant input (newer)."""
        if len(self.inputs) > index and self.inputs[index] is not None:
            if isinstance(self.inputs[index], _Affine):
                raise self.unsupported(f"input {index} must be a constant")
            return [int(v) for v in np.asarray(self.inputs[index]).reshape(-1)]
        value = self.attr(attr)
        return None if value is None else [int(v) for v in value]


@dataclass
class _State:
    """Layers closed so far while reading a graph."""

    layers: list[Layer]
    fixed_batch: int | None


# ====================================================================== op handlers
def _sample_const(
    node: _Node, k: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Align a constant with a data tensor of sample shape ``shape`` (numpy broadcasting).

    Returns the constant broadcast to the result's sample shape, and that shape.  Constants
    that vary along (or add dimensions in front of) the batch axis are rejected.
    """
    if k.ndim > len(shape) + 1 or (k.ndim == len(shape) + 1 and k.shape[0] != 1):
        raise node.unsupported(f"constant of shape {k.shape} broadcasts across the batch dimension")
    if k.ndim == len(shape) + 1:
        k = k[0]
    try:
        out = np.broadcast_shapes(shape, k.shape)
    except ValueError:
        raise node.mismatch(
            f"cannot broadcast data of shape {shape} with constant of shape {k.shape}"
        ) from None
    return np.broadcast_to(k, out), out


def _expand(value: _Affine, shape: tuple[int, ...]) -> _Affine:
    """Broadcast a data tensor to a larger sample shape by repeating rows of its map."""
    if shape == value.shape:
        return value
    return _Affine(np.broadcast_to(value.coef, (*shape, value.coef.shape[-1])).copy())


def _scale_shift(value: _Affine, scale: np.ndarray, shift: np.ndarray) -> _Affine:
    """``scale * value + shift`` elementwise (both already of the value's sample shape)."""
    coef = value.coef * scale[..., None]
    coef[..., -1] += shift
    return _Affine(coef)


_SCALE_SHIFT: dict[str, Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray]]] = {
    "Add": lambda k, data_first: (np.ones_like(k), k),
    "Sub": lambda k, data_first: (np.ones_like(k), -k) if data_first else (-np.ones_like(k), k),
    "Mul": lambda k, data_first: (k, np.zeros_like(k)),
    "Div": lambda k, data_first: (1.0 / k, np.zeros_like(k)),
}


def _elementwise(node: _Node, state: _State) -> list[Value]:
    """Add, Sub, Mul, Div with one constant operand (e.g. input normalisation)."""
    data, k, data_first = node.data_and_const()
    op = node.proto.op_type
    if op == "Div" and not data_first:
        raise node.unsupported("dividing by a data-dependent tensor is not affine")
    if op == "Div" and np.any(k == 0):
        raise InvalidNetworkError(f"node '{node.label}' (Div): division by zero")
    k, shape = _sample_const(node, k, data.shape)
    scale, shift = _SCALE_SHIFT[op](k, data_first)
    return [_scale_shift(_expand(data, shape), scale, shift)]


def _neg(node: _Node, state: _State) -> list[Value]:
    return [_Affine(-node.inputs[0].coef)]


def _passthrough(node: _Node, state: _State) -> list[Value]:
    """Identity, and Dropout in inference mode (its optional mask output is not produced)."""
    if node.proto.op_type == "Dropout":
        training = node.inputs[2] if len(node.inputs) > 2 else None
        if isinstance(training, _Affine) or (training is not None and bool(np.asarray(training))):
            raise node.unsupported("Dropout in training mode is random")
    return [node.inputs[0]]


def _cast(node: _Node, state: _State) -> list[Value]:
    if node.attr("to") not in _FLOAT_TYPES:
        raise node.unsupported("casting a data-dependent tensor to a non-float type is not affine")
    return [node.inputs[0]]


def _relu(node: _Node, state: _State) -> list[Value]:
    """Close the pending affine map as a ReLU layer; its output starts a fresh one."""
    value = node.inputs[0]
    weight, bias = value.flat()
    state.layers.append(Layer(weight, bias, "relu"))
    return [_identity(value.shape)]


def _gemm(node: _Node, state: _State) -> list[Value]:
    """``alpha * X @ B' + beta * C`` with X the data (batch, k) and B, C constant."""
    data = node.inputs[0]
    if not isinstance(data, _Affine):
        raise node.unsupported(
            "Gemm with the data as input B multiplies across the batch dimension"
        )
    if node.attr("transA", 0):
        raise node.unsupported("transA=1 on the data input transposes the batch dimension")
    if len(data.shape) != 1:
        raise node.mismatch(f"input A must be 2-D (batch, k), got sample shape {data.shape}")
    b = node.const(1)
    b = b.T if node.attr("transB", 0) else b
    if b.ndim != 2 or b.shape[0] != data.shape[0]:
        raise node.mismatch(
            f"input B of shape {b.shape} does not match data of width {data.shape[0]}"
        )
    coef = node.attr("alpha", 1.0) * np.einsum("kn,kj->nj", b, data.coef)
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        c = node.const(2)
        if c.ndim == 2 and c.shape[0] != 1:
            raise node.unsupported(f"bias C of shape {c.shape} varies along the batch dimension")
        try:
            coef[:, -1] += node.attr("beta", 1.0) * np.broadcast_to(
                c.reshape(-1) if c.ndim else c, (b.shape[1],)
            )
        except ValueError:
            raise node.mismatch(
                f"bias C of shape {c.shape} does not match {b.shape[1]} outputs"
            ) from None
    return [_Affine(coef)]


def _matmul(node: _Node, state: _State) -> list[Value]:
    """Data @ constant (per-row for N-D data) or constant @ data (N-D data only)."""
    data, k, data_first = node.data_and_const()
    if k.ndim not in (1, 2):
        raise node.unsupported(f"constant operand of shape {k.shape} is a batched matrix product")
    if data_first:
        if data.shape[-1:] != k.shape[:1]:
            raise node.mismatch(
                f"data of sample shape {data.shape} cannot multiply a {k.shape} matrix"
            )
        coef = np.einsum("...mj,m->...j" if k.ndim == 1 else "...mj,mk->...kj", data.coef, k)
        return [_Affine(coef)]
    if len(data.shape) < 2 or k.ndim == 1:
        raise node.unsupported("constant @ data multiplies across the batch dimension for 2-D data")
    if data.shape[-2] != k.shape[-1]:
        raise node.mismatch(f"a {k.shape} matrix cannot multiply data of sample shape {data.shape}")
    return [_Affine(np.einsum("pm,...mnj->...pnj", k, data.coef))]


def _batchnorm(node: _Node, state: _State) -> list[Value]:
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
    return [_scale_shift(data, factor_full, shift_full)]


def _flatten(node: _Node, state: _State) -> list[Value]:
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
    node: _Node, data_shape: tuple[int, ...], fixed_batch: int | None
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


def _reshape(node: _Node, state: _State) -> list[Value]:
    data = node.inputs[0]
    return [data.reshaped(_reshape_target(node, data.shape, state.fixed_batch))]


def _sample_axes(node: _Node, axes: list[int], rank: int) -> list[int]:
    """Axes of the full tensor (rank includes batch) as sample axes; the batch axis is refused."""
    normal = sorted(a + rank if a < 0 else a for a in axes)
    if 0 in normal:
        raise node.unsupported("operating on the batch axis is not supported")
    return [a - 1 for a in normal]


def _squeeze(node: _Node, state: _State) -> list[Value]:
    data = node.inputs[0]
    axes = node.ints(1, "axes")
    axes = [i + 1 for i, d in enumerate(data.shape) if d == 1] if axes is None else axes
    drop = _sample_axes(node, axes, len(data.shape) + 1)
    if any(data.shape[a] != 1 for a in drop):
        raise node.mismatch(f"cannot squeeze axes {axes} of sample shape {data.shape}")
    return [data.reshaped(tuple(d for i, d in enumerate(data.shape) if i not in drop))]


def _unsqueeze(node: _Node, state: _State) -> list[Value]:
    data = node.inputs[0]
    axes = node.ints(1, "axes") or []
    shape = list(data.shape)
    for a in _sample_axes(node, axes, len(shape) + 1 + len(axes)):
        shape.insert(a, 1)
    return [data.reshaped(tuple(shape))]


def _transpose(node: _Node, state: _State) -> list[Value]:
    data = node.inputs[0]
    rank = len(data.shape) + 1
    perm = node.attr("perm") or list(range(rank))[::-1]
    if perm[0] != 0:
        raise node.unsupported(f"perm {list(perm)} moves the batch axis")
    return [
        _Affine(
            np.ascontiguousarray(np.transpose(data.coef, [p - 1 for p in perm[1:]] + [rank - 1]))
        )
    ]


def _shape(node: _Node, state: _State) -> list[Value]:
    """Shape of a data tensor, with :data:`BATCH` standing for the batch size."""
    full = np.array([BATCH, *node.inputs[0].shape], dtype=np.int64)
    start, end = node.attr("start", 0), node.attr("end")
    return [full[start:end]]


_Handler = Callable[[_Node, _State], list[Value]]
_HANDLERS: dict[str, _Handler] = {
    "Add": _elementwise,
    "Sub": _elementwise,
    "Mul": _elementwise,
    "Div": _elementwise,
    "Neg": _neg,
    "Identity": _passthrough,
    "Dropout": _passthrough,
    "Cast": _cast,
    "Relu": _relu,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batchnorm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Shape": _shape,
}
#: Ops that read only the shape of a data tensor, so using it there is not a second data path.
_SHAPE_ONLY = {"Shape"}


# ====================================================================== graph walk
def _fold_constant(node: _Node) -> list[Value]:
    """Evaluate a node whose inputs are all constant with ONNX's reference implementation."""
    op = node.proto.op_type
    if op in ("If", "Loop", "Scan") or op in _RANDOM:
        raise node.unsupported(_WHY_UNSUPPORTED[op])
    feeds = {name: value for name, value in zip(node.proto.input, node.inputs) if name}
    try:
        outputs = ReferenceEvaluator(node.proto, opsets={"": node.opset}).run(None, feeds)
    except Exception as exc:
        raise node.mismatch(f"could not evaluate constant node: {exc}") from exc
    return [np.asarray(v) for v in outputs]


def _read_node(node: _Node, state: _State) -> list[Value]:
    if node.proto.domain not in ("", "ai.onnx"):
        raise node.unsupported(
            f"operations of the custom domain '{node.proto.domain}' are not supported"
        )
    if not any(isinstance(v, _Affine) for v in node.inputs):
        return _fold_constant(node)
    handler = _HANDLERS.get(node.proto.op_type)
    if handler is None:
        raise node.unsupported(
            _WHY_UNSUPPORTED.get(
                node.proto.op_type, "this operation is not supported on data-dependent tensors"
            )
        )
    outputs = handler(node, state)
    for value in outputs:
        if isinstance(value, _Affine) and not np.all(np.isfinite(value.coef)):
            raise InvalidNetworkError(
                f"node '{node.label}' ({node.proto.op_type}) produces NaN or infinite weights"
            )
    return outputs


def _live_nodes(graph: onnx.GraphProto, output: str) -> list[onnx.NodeProto]:
    """Nodes the graph output depends on, in graph order (dead branches are ignored)."""
    needed, live = {output}, []
    for proto in reversed(graph.node):
        if needed.intersection(proto.output):
            live.append(proto)
            needed.update(name for name in proto.input if name)
    return live[::-1]


def _graph_input(graph: onnx.GraphProto) -> tuple[onnx.ValueInfoProto, tuple[int, ...], int | None]:
    """The single data input, its sample shape and its fixed batch size (None if dynamic)."""
    initialized = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialized]
    if len(inputs) != 1:
        raise UnsupportedOperationError(
            f"the graph has {len(inputs)} data inputs {[i.name for i in inputs]}; "
            "exactly one is supported"
        )
    info = inputs[0]
    tensor_type = info.type.tensor_type
    if not info.type.HasField("tensor_type") or tensor_type.elem_type not in _FLOAT_TYPES:
        raise UnsupportedOperationError(
            f"graph input '{info.name}' has element type "
            f"{TensorProto.DataType.Name(tensor_type.elem_type)}; only float inputs are supported"
        )
    dims = list(tensor_type.shape.dim)
    if len(dims) < 2:
        raise UnsupportedOperationError(
            f"graph input '{info.name}' has rank {len(dims)}; "
            "expected a batch dimension followed by features"
        )
    if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims[1:]):
        raise UnsupportedOperationError(
            f"graph input '{info.name}' has a dynamic non-batch dimension; "
            "only the batch may be dynamic"
        )
    batch = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return info, tuple(d.dim_value for d in dims[1:]), batch


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _walk(
    model: onnx.ModelProto,
) -> tuple[list[Layer], _Affine, onnx.ValueInfoProto, tuple[int, ...]]:
    """Fold the graph into layers; returns them, the pending output value, input info and shape."""
    graph = model.graph
    if len(graph.output) != 1:
        raise UnsupportedOperationError(
            f"the graph has {len(graph.output)} outputs; exactly one is supported"
        )
    info, input_shape, fixed_batch = _graph_input(graph)
    values: dict[str, Value] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    values[info.name] = _identity(input_shape)
    output = graph.output[0].name
    live = _live_nodes(graph, output)
    uses = Counter(
        name for proto in live if proto.op_type not in _SHAPE_ONLY for name in proto.input
    )
    uses[output] += 1
    state, opset = _State([], fixed_batch), _default_opset(model)
    for proto in live:
        node = _Node(proto, [], opset)
        for name in proto.input:
            if name and name not in values:
                raise OnnxImportError(
                    f"node '{node.label}' ({proto.op_type}) uses tensor '{name}', which no earlier "
                    f"node produces (or which this reader does not compute, e.g. a Dropout mask)"
                )
            value = values.get(name) if name else None
            if isinstance(value, _Affine) and uses[name] > 1 and proto.op_type not in _SHAPE_ONLY:
                raise node.unsupported(
                    f"its input '{name}' is used {uses[name]} times; branching data paths "
                    f"(skip connections) are not supported"
                )
            node.inputs.append(value)
        values.update(zip(proto.output, _read_node(node, state)))
    result = values.get(output)
    if not isinstance(result, _Affine):
        raise UnsupportedOperationError(
            f"graph output '{output}' does not depend on input '{info.name}'"
        )
    return state.layers, result, info, input_shape


def _close(layers: list[Layer], pending: _Affine) -> tuple[Layer, ...]:
    """Append the pending affine map as a linear layer unless it is the identity after a ReLU."""
    if pending.fresh and layers:
        return tuple(layers)
    weight, bias = pending.flat()
    return (*layers, Layer(weight, bias, "linear"))


# ====================================================================== loading and metadata
def _load(source: Source, name_for_errors: str | None = None) -> tuple[onnx.ModelProto, str]:
    """Load and check a model; returns it with the name used in error messages."""
    if isinstance(source, onnx.ModelProto):
        label = name_for_errors or "<ModelProto>"
        tensors = list(source.graph.initializer) + [
            a.t
            for n in source.graph.node
            for a in n.attribute
            if a.type == onnx.AttributeProto.TENSOR
        ]
        if any(uses_external_data(t) for t in tensors):
            raise OnnxImportError(
                f"{label}: the model references external data files that are not loaded; "
                f"pass the .onnx file's path instead of a ModelProto"
            )
        model = source
    elif isinstance(source, (str, os.PathLike)):
        label = name_for_errors or os.fspath(source)
        try:
            model = onnx.load(os.fspath(source), load_external_data=True)
        except FileNotFoundError as exc:
            raise OnnxImportError(f"{label}: file not found ({exc})") from exc
        except Exception as exc:
            raise OnnxImportError(
                f"{label}: not a readable ONNX model ({type(exc).__name__}: {exc})"
            ) from exc
    else:
        raise TypeError(f"source must be a path or an onnx.ModelProto, got {type(source).__name__}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise OnnxImportError(f"{label}: the ONNX checker rejects the model: {exc}") from exc
    return model, label


def _metadata_json(model: onnx.ModelProto, key: str, label: str) -> dict | None:
    entry = next((p.value for p in model.metadata_props if p.key == key), None)
    if entry is None:
        return None
    try:
        data = json.loads(entry)
    except json.JSONDecodeError as exc:
        raise OnnxImportError(f"{label}: metadata '{key}' is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise OnnxImportError(f"{label}: metadata '{key}' must be a JSON object")
    return data


def _metadata_arrays(data: dict, names: tuple[str, ...], key: str, label: str) -> list:
    missing = [n for n in names if n not in data]
    if missing:
        raise OnnxImportError(f"{label}: metadata '{key}' lacks {missing}")
    return [data[n] for n in names]


def read_onnx(source: Source, *, name_for_errors: str | None = None) -> Network:
    """Read an ONNX ReLU network into a :class:`Network` of folded affine layers.

    Parameters
    ----------
    source : path or onnx.ModelProto
        A file (external data is loaded from its directory) or an in-memory model.
    name_for_errors : str, optional
        How to call the model in error messages (default: its path).

    Raises
    ------
    OnnxImportError
        Missing, malformed or checker-rejected files; shape mismatches.
    UnsupportedOperationError
        Any operation without an exact MILP form, naming the node and its op type.
    InvalidNetworkError
        NaN or infinite weights.
    """
    model, label = _load(source, name_for_errors)
    try:
        layers, pending, info, input_shape = _walk(model)
    except (OnnxImportError, InvalidNetworkError) as exc:
        raise type(exc)(f"{label}: {exc}") from None
    bounds = _metadata_json(model, INPUT_BOUNDS_KEY, label)
    if bounds is not None:
        bounds = tuple(
            np.asarray(a, dtype=np.float64)
            for a in _metadata_arrays(bounds, ("lower", "upper"), INPUT_BOUNDS_KEY, label)
        )
    return Network(
        _close(layers, pending),
        input_shape=input_shape,
        output_shape=pending.shape,
        input_name=info.name,
        output_name=model.graph.output[0].name,
        input_bounds=bounds,
    )


def read_stored_bounds(source: Source, network: Network | None = None) -> NetworkBounds | None:
    """Per-layer pre-activation bounds stored by :func:`write_onnx`, or None if there are none.

    The bounds are checked against the network in the same file (layer count and widths);
    pass ``network`` when it has already been read from ``source``, to skip reading it again.
    """
    model, label = _load(source)
    data = _metadata_json(model, BOUNDS_KEY, label)
    if data is None:
        return None
    lower, upper, in_lo, in_hi = _metadata_arrays(
        data, ("lower", "upper", "input_lower", "input_upper"), BOUNDS_KEY, label
    )
    if network is None:
        network = read_onnx(model, name_for_errors=label)
    stored = NetworkBounds(
        np.asarray(in_lo, dtype=np.float64),
        np.asarray(in_hi, dtype=np.float64),
        tuple(np.asarray(v, dtype=np.float64) for v in lower),
        tuple(np.asarray(v, dtype=np.float64) for v in upper),
        str(data.get("method", "unknown")),
    )
    _check_bounds_fit(stored, network, OnnxImportError, f"{label}: metadata '{BOUNDS_KEY}'")
    return stored


def _check_bounds_fit(
    bounds: NetworkBounds, network: Network, error: type[Exception], what: str
) -> None:
    widths = [layer.n_out for layer in network.layers]
    sizes = [len(v) for v in bounds.lower]
    if sizes != widths or [len(v) for v in bounds.upper] != widths:
        raise error(f"{what} has layer widths {sizes}, the network has {widths}")
    if len(bounds.input_lower) != network.n_inputs or len(bounds.input_upper) != network.n_inputs:
        raise error(
            f"{what} has {len(bounds.input_lower)} input bounds, "
            f"the network has {network.n_inputs} inputs"
        )


# ====================================================================== writing
def _check_bounds_survive_rounding(network: Network, np_dtype) -> None:
    """Refuse to store bounds beside weights that the file's float type would round.

    Bounds are valid for the weights they were computed from; stored next to rounded weights
    they could exclude reachable pre-activations by a rounding error.
    """
    for i, layer in enumerate(network.layers):
        for name, array in (("weight", layer.weight), ("bias", layer.bias)):
            if not np.array_equal(array.astype(np_dtype).astype(np.float64), array):
                raise InvalidNetworkError(
                    f"layer {i} {name} is not exactly representable as {np.dtype(np_dtype).name}, "
                    "so stored bounds could be invalid for the rounded weights; write with "
                    "dtype='float64' (or compute the bounds from the rounded network)"
                )


def _bounds_json(bounds: NetworkBounds) -> str:
    return json.dumps(
        {
            "method": bounds.method,
            "lower": [np.asarray(v, dtype=np.float64).tolist() for v in bounds.lower],
            "upper": [np.asarray(v, dtype=np.float64).tolist() for v in bounds.upper],
            "input_lower": np.asarray(bounds.input_lower, dtype=np.float64).tolist(),
            "input_upper": np.asarray(bounds.input_upper, dtype=np.float64).tolist(),
        }
    )


def _layer_nodes(
    network: Network, elem_type: int, first: str, final: str
) -> tuple[list, list, str]:
    """Gemm (transB=1) and Relu nodes for every layer; returns nodes, initializers, last tensor.

    The last node writes the tensor ``final``, so a flat output needs no Identity node.
    Gemm's default attributes (alpha, beta, transA) are written out because some readers
    (OMLT 1.2) require them.
    """
    nodes, inits, current = [], [], first
    np_dtype = _FLOAT_TYPES[elem_type]
    for i, layer in enumerate(network.layers):
        w, b = f"nnrelax/layer{i}/weight", f"nnrelax/layer{i}/bias"
        inits += [
            numpy_helper.from_array(layer.weight.astype(np_dtype), w),
            numpy_helper.from_array(layer.bias.astype(np_dtype), b),
        ]
        last_layer = i == len(network.layers) - 1
        relu = layer.activation == "relu"
        z = final if last_layer and not relu else f"nnrelax/layer{i}/z"
        nodes.append(
            helper.make_node(
                "Gemm",
                [current, w, b],
                [z],
                name=f"layer{i}_gemm",
                alpha=1.0,
                beta=1.0,
                transA=0,
                transB=1,
            )
        )
        current = z
        if relu:
            current = final if last_layer else f"nnrelax/layer{i}/relu"
            nodes.append(helper.make_node("Relu", [z], [current], name=f"layer{i}_relu"))
    return nodes, inits, current


def build_onnx_model(
    network: Network,
    *,
    opset: int = 17,
    bounds: NetworkBounds | None = None,
    dtype: str = "float32",
) -> onnx.ModelProto:
    """The ONNX model of ``network`` (see :func:`write_onnx`), checked but not saved."""
    if dtype not in _WRITE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_WRITE_DTYPES)}, got {dtype!r}")
    if network.input_name == network.output_name:
        raise InvalidNetworkError(
            f"input and output are both named {network.input_name!r}; ONNX needs distinct names"
        )
    elem_type = _WRITE_DTYPES[dtype]
    nodes, inits, first = [], [], network.input_name
    if len(network.input_shape) > 1:
        first = "nnrelax/flat_input"
        nodes.append(
            helper.make_node("Flatten", [network.input_name], [first], name="flatten_input", axis=1)
        )
    flat_output = len(network.output_shape) == 1
    final = network.output_name if flat_output else "nnrelax/flat_output"
    layer_nodes, layer_inits, last = _layer_nodes(network, elem_type, first, final)
    nodes += layer_nodes
    inits += layer_inits
    if not flat_output:
        inits.append(
            numpy_helper.from_array(
                np.array([-1, *network.output_shape], dtype=np.int64), "nnrelax/output_shape"
            )
        )
        nodes.append(
            helper.make_node(
                "Reshape",
                [last, "nnrelax/output_shape"],
                [network.output_name],
                name="reshape_output",
            )
        )
    graph = helper.make_graph(
        nodes,
        "nnrelax_network",
        [
            helper.make_tensor_value_info(
                network.input_name, elem_type, ["batch", *network.input_shape]
            )
        ],
        [
            helper.make_tensor_value_info(
                network.output_name, elem_type, ["batch", *network.output_shape]
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pyomo_nnrelax"
    )
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    metadata = {}
    if network.input_bounds is not None:
        lower, upper = network.input_bounds
        metadata[INPUT_BOUNDS_KEY] = json.dumps({"lower": lower.tolist(), "upper": upper.tolist()})
    if bounds is not None:
        _check_bounds_fit(bounds, network, InvalidNetworkError, "bounds")
        _check_bounds_survive_rounding(network, np_dtype=_FLOAT_TYPES[elem_type])
        metadata[BOUNDS_KEY] = _bounds_json(bounds)
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model


def write_onnx(
    network: Network,
    path: str | os.PathLike | None = None,
    *,
    opset: int = 17,
    bounds: NetworkBounds | None = None,
    overwrite: bool = False,
    dtype: str = "float32",
) -> onnx.ModelProto:
    """Write ``network`` as an ONNX graph of Gemm (+ Relu) nodes and return the model.

    Parameters
    ----------
    network : Network
    path : path, optional
        Where to save; nothing is saved when None.  An existing file is only replaced with
        ``overwrite=True``.
    opset : int
        Default-domain opset to declare (13 or newer).
    bounds : NetworkBounds, optional
        Per-layer bounds stored in metadata key ``nnrelax.bounds`` (see :func:`read_stored_bounds`).
    dtype : {"float32", "float64"}
        Tensor element type.  float32 (default) is what most tools expect but rounds the
        float64 weights; float64 round-trips them exactly.

    Input and output names and shapes are kept (batch dimension ``"batch"``); the network's
    input bounds go to metadata key ``nnrelax.input_bounds``.
    """
    if path is not None and Path(path).exists() and not overwrite:
        raise FileExistsError(
            f"{os.fspath(path)} already exists; pass overwrite=True to replace it"
        )
    model = build_onnx_model(network, opset=opset, bounds=bounds, dtype=dtype)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model


# ====================================================================== onnxruntime
def run_onnxruntime(source: Source, X) -> np.ndarray:
    """Run a model with onnxruntime on a batch; returns float64 outputs of shape (n, n_outputs).

    ``X`` may be flat (n, n_features) or shaped (n, *input_shape); it is cast to the model's
    input type.  Models with a fixed batch size are run in chunks of that size.
    """
    import onnxruntime

    if isinstance(source, onnx.ModelProto):
        session = onnxruntime.InferenceSession(
            source.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    else:
        session = onnxruntime.InferenceSession(
            os.fspath(source), providers=["CPUExecutionProvider"]
        )
    meta = session.get_inputs()[0]
    batch, *sample = meta.shape
    X = np.asarray(X)
    X = X.reshape(X.shape[0], *sample).astype(_ORT_DTYPES.get(meta.type, np.float32))
    step = batch if isinstance(batch, int) and batch > 0 else max(len(X), 1)
    outputs = [session.run(None, {meta.name: X[i : i + step]})[0] for i in range(0, len(X), step)]
    return np.concatenate(outputs).reshape(len(X), -1).astype(np.float64)
