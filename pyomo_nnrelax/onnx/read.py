"""Read an ONNX graph into a :class:`~pyomo_nnrelax.network.Network` of folded affine layers.

The graph is walked in topological order over the nodes the output depends on; every op is
handled by :mod:`.ops`.  Supported on data-dependent tensors: Gemm (data as input A, transA=0),
MatMul with a constant (data @ W per row of N-D data; W @ data for data of rank >= 3),
Add/Sub/Mul/Div with a broadcast constant on either side (no division by data), Neg, Relu,
inference-mode BatchNormalization, Dropout (inference), Identity, Cast to a float type (treated
as exact), Flatten(axis=1), Reshape/Squeeze/Unsqueeze/Transpose that keep the batch axis first,
and Shape.  One float graph input of shape (batch, d1, ..., dk) with a dynamic or fixed batch,
one output.  Everything else, branching data paths (skip connections) included, raises
:class:`UnsupportedOperationError` naming the node.  Reading never builds a Pyomo component.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..bounds import NetworkBounds
from ..box import InputBox
from ..errors import (
    InputBoundsError,
    InvalidNetworkError,
    OnnxImportError,
    UnsupportedOperationError,
)
from ..network import Layer, Network
from .load import FLOAT_TYPES, Source, load_model
from .metadata import INPUT_BOUNDS_KEY, has_stored_bounds, stored_input_box, stored_network_bounds
from .ops import SHAPE_ONLY, Affine, Node, ReadState, Value, identity_value, read_node


def _live_nodes(graph: onnx.GraphProto, output: str) -> list[onnx.NodeProto]:
    """Nodes the graph output depends on, in graph order (dead branches are ignored)."""
    needed, live = {output}, []
    for proto in reversed(graph.node):
        if needed.intersection(proto.output):
            live.append(proto)
            needed.update(name for name in proto.input if name)
    return live[::-1]


def _type_name(elem_type: int) -> str:
    """The ONNX name of an element type, or its number when ONNX defines no such type."""
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"{elem_type} (not an ONNX type)"


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
    if not info.type.HasField("tensor_type") or tensor_type.elem_type not in FLOAT_TYPES:
        raise UnsupportedOperationError(
            f"graph input '{info.name}' has element type "
            f"{_type_name(tensor_type.elem_type)}; only float inputs are supported"
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


def _initializer_array(tensor: onnx.TensorProto) -> np.ndarray:
    """An initializer as a numpy array; unknown data types and sizes that do not match the
    shape raise :class:`OnnxImportError` naming the initializer."""
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:  # onnx raises KeyError, ValueError, TypeError, ... here
        raise OnnxImportError(
            f"initializer '{tensor.name}' (data type {tensor.data_type}, dims "
            f"{list(tensor.dims)}) cannot be read: {type(exc).__name__}: {exc}"
        ) from None


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _walk(
    model: onnx.ModelProto,
) -> tuple[list[Layer], Affine, onnx.ValueInfoProto, tuple[int, ...]]:
    """Fold the graph into layers; returns them, the pending output value, input info and shape."""
    graph = model.graph
    if len(graph.output) != 1:
        raise UnsupportedOperationError(
            f"the graph has {len(graph.output)} outputs; exactly one is supported"
        )
    info, input_shape, fixed_batch = _graph_input(graph)
    values: dict[str, Value] = {t.name: _initializer_array(t) for t in graph.initializer}
    values[info.name] = identity_value(input_shape)
    output = graph.output[0].name
    live = _live_nodes(graph, output)
    uses = Counter(
        name for proto in live if proto.op_type not in SHAPE_ONLY for name in proto.input
    )
    uses[output] += 1
    state, opset = ReadState([], fixed_batch), _default_opset(model)
    for proto in live:
        node = Node(proto, [], opset)
        for name in proto.input:
            if name and name not in values:
                raise OnnxImportError(
                    f"node '{node.label}' ({proto.op_type}) uses tensor '{name}', which no earlier "
                    f"node produces (or which this reader does not compute, e.g. a Dropout mask)"
                )
            value = values.get(name) if name else None
            if isinstance(value, Affine) and uses[name] > 1 and proto.op_type not in SHAPE_ONLY:
                raise node.unsupported(
                    f"its input '{name}' is used {uses[name]} times; branching data paths "
                    f"(skip connections) are not supported"
                )
            node.inputs.append(value)
        values.update(zip(proto.output, read_node(node, state)))
    result = values.get(output)
    if not isinstance(result, Affine):
        raise UnsupportedOperationError(
            f"graph output '{output}' does not depend on input '{info.name}'"
        )
    return state.layers, result, info, input_shape


def _close(layers: list[Layer], pending: Affine) -> tuple[Layer, ...]:
    """Append the pending affine map as a linear layer unless it is the identity after a ReLU."""
    if pending.fresh and layers:
        return tuple(layers)
    weight, bias = pending.flat()
    return (*layers, Layer(weight, bias, "linear"))


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
    model, label = load_model(source, name_for_errors)
    try:
        layers, pending, info, input_shape = _walk(model)
    except (OnnxImportError, InvalidNetworkError) as exc:
        raise type(exc)(f"{label}: {exc}") from None
    stored = stored_input_box(model, label)
    try:
        box = None if stored is None else InputBox(*stored)
    except InputBoundsError as exc:
        raise OnnxImportError(f"{label}: metadata '{INPUT_BOUNDS_KEY}': {exc}") from None
    return Network(
        _close(layers, pending),
        input_shape=input_shape,
        output_shape=pending.shape,
        input_name=info.name,
        output_name=model.graph.output[0].name,
        input_bounds=box,
    )


def read_stored_bounds(source: Source, network: Network | None = None) -> NetworkBounds | None:
    """Per-layer pre-activation bounds stored by :func:`write_onnx`, or None if there are none.

    The bounds are checked against the network in the same file: layer count and widths, and
    the fingerprint of the weights stored with them (a missing or different one raises
    :class:`~pyomo_nnrelax.errors.StaleBoundsError`).  Pass ``network`` when it has already
    been read from ``source``, to skip reading it again.
    """
    model, label = load_model(source)
    if not has_stored_bounds(model):
        return None
    if network is None:
        network = read_onnx(model, name_for_errors=label)
    return stored_network_bounds(model, label, network)
