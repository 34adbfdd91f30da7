"""A node being read (its inputs and attributes, and errors naming it), and the state of
the reading: tensor values, the live data, the layers closed so far and the trainable
initializers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np
import onnx
from onnx import helper

from ..errors import InvalidNetworkError, OnnxImportError, UnsupportedOperationError
from ..network import Layer
from .values import Affine, Value, expand


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
                value = helper.get_attribute_value(attribute)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def unsupported(self, why: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(f"node '{self.label}' ({self.proto.op_type}): {why}")

    def mismatch(self, why: str) -> OnnxImportError:
        return OnnxImportError(f"node '{self.label}' ({self.proto.op_type}): {why}")

    def data(self, index: int = 0) -> Affine:
        """Data input ``index``, which must depend on the network input."""
        value = self.inputs[index] if index < len(self.inputs) else None
        if not isinstance(value, Affine):
            raise self.unsupported(f"input {index} must be the data, not a constant")
        return value

    def data_and_const(self) -> tuple[Affine, np.ndarray, bool]:
        """The data input, the constant input and whether the data comes first (binary ops)."""
        a, b = self.inputs[0], self.inputs[1]
        if isinstance(a, Affine) and isinstance(b, Affine):
            raise self.unsupported(
                "multiplies two data-dependent tensors, which is not an affine map"
            )
        if isinstance(a, Affine):
            return a, self.const(1), True
        return b, self.const(0), False

    def const(self, index: int) -> np.ndarray:
        """Constant input ``index`` as finite float64."""
        value = self.inputs[index] if index < len(self.inputs) else None
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

    def optional(self, index: int) -> Value | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def ints(self, index: int, attr: str) -> list[int] | None:
        """An integer list given as attribute (older opsets) or as constant input (newer)."""
        if len(self.inputs) > index and self.inputs[index] is not None:
            if isinstance(self.inputs[index], Affine):
                raise self.unsupported(f"input {index} must be a constant")
            return [int(v) for v in np.asarray(self.inputs[index]).reshape(-1)]
        value = self.attr(attr)
        return None if value is None else [int(v) for v in value]


def sample_const(
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


def broadcast_operands(
    node: Node,
) -> tuple[tuple[int, ...], list[tuple[int, Affine]], list[tuple[int, np.ndarray]]]:
    """The common sample shape of a variadic node's data and constant inputs (numpy
    broadcasting), and ``(input index, value)`` of its data and of its constants, each
    broadcast to that shape.  Data tensors of different ranks are refused."""
    data = [(i, v) for i, v in enumerate(node.inputs) if isinstance(v, Affine)]
    if len({len(v.shape) for _, v in data}) > 1:
        raise node.unsupported(
            "combines data tensors of different ranks, which broadcasts across the batch dimension"
        )
    try:
        shape = np.broadcast_shapes(*(v.shape for _, v in data))
    except ValueError:
        raise node.mismatch(
            f"cannot broadcast data of shapes {[v.shape for _, v in data]}"
        ) from None
    consts = []
    for i, value in enumerate(node.inputs):
        if not isinstance(value, Affine):
            k, shape = sample_const(node, node.const(i), shape)
            consts.append((i, k))
    consts = [(i, np.broadcast_to(k, shape)) for i, k in consts]
    return shape, [(i, expand(v, shape)) for i, v in data], consts


@dataclass
class ReadState:
    """What reading a graph has built so far.

    ``values`` maps tensor names to values; ``live`` (kept by the reader) lists the data
    values that a later node or the graph output still needs, which a closed layer carries;
    ``producers`` names the op that made each tensor.  ``initializers`` are the trainable
    tensors: one used as a weight or a bias gets a block of global parameter numbers
    (:meth:`param_ids`), shared by every use of the tensor, whose values
    :meth:`read_values` gives.  ``origins`` holds, per closed layer, where its entries came
    from (:class:`~.origin.LayerOrigin`).
    """

    layers: list[Layer]
    fixed_batch: int | None
    values: dict[str, Value] = field(default_factory=dict)
    initializers: frozenset[str] = frozenset()
    live: dict[str, None] = field(default_factory=dict)
    producers: dict[str, str] = field(default_factory=dict)
    params: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    n_params: int = 0
    origins: list = field(default_factory=list)
    _read: list[np.ndarray] = field(default_factory=list)
    _theta: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def param_ids(self, node: Node, index: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """Global parameter numbers of constant input ``index`` (None: a computed constant)."""
        name = node.proto.input[index]
        if name not in self.initializers:
            return None
        if name not in self.params:
            self.params[name] = (self.n_params, tuple(shape))
            self.n_params += prod(shape)
            self._read.append(np.asarray(node.inputs[index], dtype=np.float64).reshape(-1))
        start = self.params[name][0]
        return start + np.arange(prod(shape), dtype=np.int64).reshape(shape)

    def read_values(self, ids: np.ndarray) -> np.ndarray:
        """The values read of global parameters ``ids``."""
        if self._theta.size < self.n_params:
            self._theta = np.concatenate(self._read)
        return self._theta[ids]
