"""ONNX operations on data-dependent tensors, each folded into an affine map.

Every tensor met while reading a graph is either a *constant* (a numpy array in its ONNX
dtype) or an :class:`Affine` value: an affine map of the current layer's input, stored as one
float64 array of shape ``(*sample_shape, n_in + 1)`` whose last axis holds the coefficients and,
in the final slot, the constant term.  Linear per-sample operations (Gemm, MatMul, broadcast
Add/Sub/Mul/Div, BatchNormalization, Transpose, reshapes) act on that array directly, so any
chain of them folds into a single matrix; ``Relu`` closes a layer (see :mod:`.read`).  Nodes
whose inputs are all constant are evaluated with ONNX's reference implementation.  ``Shape`` of
a data tensor reports the batch dimension as the sentinel :data:`BATCH`, which a ``Reshape``
accepts only in position 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from ..errors import InvalidNetworkError, OnnxImportError, UnsupportedOperationError
from ..network import Layer
from .load import FLOAT_TYPES

#: Stands for the (unknown) batch size in the output of ``Shape`` applied to a data tensor.
BATCH = -(2**40) - 7

_ACTIVATIONS = (
    "Sigmoid Tanh Softmax LogSoftmax Softplus Softsign Elu Selu Celu Gelu Mish LeakyRelu PRelu "
    "HardSigmoid HardSwish ThresholdedRelu Clip Exp Log Sqrt Abs Erf Sin Cos Pow Reciprocal"
).split()
RANDOM_OPS = (
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
)
WHY_UNSUPPORTED = {
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
    **{op: "random operations have no fixed value" for op in RANDOM_OPS},
}


@dataclass(frozen=True)
class Affine:
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

    def reshaped(self, shape: tuple[int, ...]) -> Affine:
        return Affine(self.coef.reshape(*shape, self.coef.shape[-1]), self.fresh)


Value = np.ndarray | Affine


def identity_value(shape: tuple[int, ...]) -> Affine:
    """The affine value of a fresh layer input of the given sample shape."""
    n = prod(shape)
    coef = np.hstack([np.eye(n), np.zeros((n, 1))])
    return Affine(coef.reshape(*shape, n + 1), fresh=True)


@dataclass
class Node:
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

    def data_and_const(self) -> tuple[Affine, np.ndarray, bool]:
        """The data input, the constant input and whether the data comes first (binary ops)."""
        a, b = self.inputs[0], self.inputs[1]
        if isinstance(a, Affine) and isinstance(b, Affine):
            raise self.unsupported(
                "combines two data-dependent tensors (e.g. a skip connection); "
                "only feed-forward chains are supported"
            )
        if isinstance(a, Affine):
            return a, self.const(1), True
        return b, self.const(0), False

    def const(self, index: int) -> np.ndarray:
        """Constant input ``index`` as finite float64."""
        value = self.inputs[index]
        if isinstance(value, Affine):
            raise self.unsupported(
                f"input {index} must be a constant, but it depends on the network input"
            )
        if value is None:
            raise self.mismatch(f"input {index} is missing")
        if not np.issubdtype(np.asarray(value).dtype, np.floating):
            raise self.mismatch(
                f"constant input '{self.proto.input[index]}' has element type "
                f"{np.asarray(value).dtype}; it must be a float tensor like the data"
            )
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
            if isinstance(self.inputs[index], Affine):
                raise self.unsupported(f"input {index} must be a constant")
            return [int(v) for v in np.asarray(self.inputs[index]).reshape(-1)]
        value = self.attr(attr)
        return None if value is None else [int(v) for v in value]


@dataclass
class ReadState:
    """Layers closed so far while reading a graph."""

    layers: list[Layer]
    fixed_batch: int | None


# ---------------------------------------------------------------------- op handlers
def _sample_const(
    node: Node, k: np.ndarray, shape: tuple[int, ...]
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


def _expand(value: Affine, shape: tuple[int, ...]) -> Affine:
    """Broadcast a data tensor to a larger sample shape by repeating rows of its map."""
    if shape == value.shape:
        return value
    return Affine(np.broadcast_to(value.coef, (*shape, value.coef.shape[-1])).copy())


def _scale_shift(value: Affine, scale: np.ndarray, shift: np.ndarray) -> Affine:
    """``scale * value + shift`` elementwise (both already of the value's sample shape)."""
    coef = value.coef * scale[..., None]
    coef[..., -1] += shift
    return Affine(coef)


_SCALE_SHIFT: dict[str, Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray]]] = {
    "Add": lambda k, data_first: (np.ones_like(k), k),
    "Sub": lambda k, data_first: (np.ones_like(k), -k) if data_first else (-np.ones_like(k), k),
    "Mul": lambda k, data_first: (k, np.zeros_like(k)),
    "Div": lambda k, data_first: (1.0 / k, np.zeros_like(k)),
}


def _elementwise(node: Node, state: ReadState) -> list[Value]:
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


def _neg(node: Node, state: ReadState) -> list[Value]:
    return [Affine(-node.inputs[0].coef)]


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


def _relu(node: Node, state: ReadState) -> list[Value]:
    """Close the pending affine map as a ReLU layer; its output starts a fresh one."""
    value = node.inputs[0]
    weight, bias = value.flat()
    state.layers.append(Layer(weight, bias, "relu"))
    return [identity_value(value.shape)]


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
    return [Affine(coef)]


def _matmul(node: Node, state: ReadState) -> list[Value]:
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
        return [Affine(coef)]
    if len(data.shape) < 2 or k.ndim == 1:
        raise node.unsupported("constant @ data multiplies across the batch dimension for 2-D data")
    if data.shape[-2] != k.shape[-1]:
        raise node.mismatch(f"a {k.shape} matrix cannot multiply data of sample shape {data.shape}")
    return [Affine(np.einsum("pm,...mnj->...pnj", k, data.coef))]


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
    return [_scale_shift(data, factor_full, shift_full)]


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
    return [
        Affine(
            np.ascontiguousarray(np.transpose(data.coef, [p - 1 for p in perm[1:]] + [rank - 1]))
        )
    ]


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
