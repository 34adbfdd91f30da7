"""Read an ONNX graph into a :class:`~pyomo_nnrelax.network.Network` of folded affine layers.

The graph is walked in topological order over the nodes the output depends on; every op is
handled by the handler :mod:`.registry` names for it.  Supported on data-dependent
tensors:

* affine maps, folded into the pending layer: Gemm (data as input A, transA=0), MatMul with a
  constant (data @ W per row of N-D data; W @ data for data of rank >= 3), Add/Sub/Mul/Div
  with a broadcast constant on either side (no division by data), Neg, inference-mode
  BatchNormalization, Dropout (inference), Identity, Cast to a float type (treated as exact),
  Flatten(axis=1), Reshape/Squeeze/Unsqueeze/Transpose that keep the batch axis first, Conv
  and ConvTranspose with constant weights (any rank, strides, pads, auto_pad, dilations,
  groups, bias; output_padding and output_shape), AveragePool (count_include_pad, ceil_mode,
  dilations), GlobalAveragePool, ReduceSum/ReduceMean over non-batch axes;
* skip connections: Add/Sub/Sum/Mean of several data tensors, Concat of data (and constant)
  tensors along a non-batch axis; a data tensor may feed any number of nodes;
* piecewise linear ops, which close layers: Relu, LeakyRelu, PRelu (constant slope), Clip
  (constant bounds; ReLU6, Hardtanh), HardSigmoid (alpha, beta), Abs, and as trees of
  pairwise maxima MaxPool (no Indices output), GlobalMaxPool, ReduceMax/ReduceMin over
  non-batch axes (axes attribute or input, keepdims, noop_with_empty_axes) and elementwise
  Max/Min of data tensors and constants (numpy broadcasting);
* Shape, and constant subgraphs (evaluated with ONNX's reference implementation).

One float graph input of shape (batch, d1, ..., dk) with a dynamic or fixed batch, one
output.  When a layer is closed, every other data value that a later node (or the output)
still needs is carried through it as linear neurons.  Weight sharing (a convolution's
kernel and bias, fixed skip paths and slopes) is kept as each layer's
:class:`~pyomo_nnrelax.ties.WeightTie` of its weight and of its bias (:mod:`.tags`,
:mod:`.closing`), and where each entry came from as the network's ``origin``
(:class:`~.origin.GraphOrigin`), from which :func:`~.write.write_onnx` writes the same graph
with new initializers.  Everything else raises :class:`UnsupportedOperationError` naming
the node and its op.  Reading never builds a Pyomo component.

The maps are kept sparse while reading, and a closed layer is stored sparse where at most a
quarter of its entries are stored (convolutions, pools, carried skip paths) and dense
otherwise (:func:`~pyomo_nnrelax.matrices.choose_form`), so memory and time grow with the
stored entries; a step that would not fit in the available memory raises
:class:`OnnxImportError` naming the node, its op and the estimated size.
"""

from __future__ import annotations

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
from ..network import Network
from .closing import make_layer
from .load import FLOAT_TYPES, Source, load_model
from .memory import TooLargeError
from .metadata import INPUT_BOUNDS_KEY, has_stored_bounds, stored_input_box, stored_network_bounds
from .nodes import Node, ReadState
from .origin import graph_origin
from .registry import SHAPE_ONLY, read_node
from .tie_metadata import with_stored_ties
from .values import Affine, identity_value


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
        extra = {i.name for i in inputs[1:]}
        users = [n for n in graph.node if extra.intersection(n.input)]
        user = (
            f"; node '{users[0].name or users[0].output[0]}' ({users[0].op_type}) reads "
            f"{sorted(extra.intersection(users[0].input))} as data (its weights must be "
            "initializers or constants)"
            if users
            else ""
        )
        raise UnsupportedOperationError(
            f"the graph has {len(inputs)} data inputs {[i.name for i in inputs]}; "
            f"exactly one is supported{user}"
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


def _last_uses(
    live: list[onnx.NodeProto], output: str, skip: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Index of the last node that reads each tensor (reads by the ops in ``skip`` not
    counted: a Shape reads only a shape, not the data); the graph output is read after every
    node."""
    last = {}
    for i, proto in enumerate(live):
        if proto.op_type not in skip:
            last.update((name, i) for name in proto.input if name)
    last[output] = len(live)
    return last


def _walk(model: onnx.ModelProto) -> tuple[ReadState, Affine, onnx.ValueInfoProto, tuple[int, ...]]:
    """Fold the graph into layers; returns the state (its layers), the pending output value,
    input info and shape."""
    graph = model.graph
    if len(graph.output) != 1:
        raise UnsupportedOperationError(
            f"the graph has {len(graph.output)} outputs; exactly one is supported"
        )
    info, input_shape, fixed_batch = _graph_input(graph)
    state = ReadState([], fixed_batch, initializers=frozenset(t.name for t in graph.initializer))
    values = state.values
    values.update({t.name: _initializer_array(t) for t in graph.initializer})
    values[info.name] = identity_value(input_shape)
    output = graph.output[0].name
    live = _live_nodes(graph, output)
    last_use, last_read = _last_uses(live, output, SHAPE_ONLY), _last_uses(live, output)
    if last_use.get(info.name, -1) >= 0:
        state.live[info.name] = None
    opset = _default_opset(model)
    for i, proto in enumerate(live):
        node = Node(proto, [], opset)
        for name in proto.input:
            if name and name not in values:
                raise OnnxImportError(
                    f"node '{node.label}' ({proto.op_type}) uses tensor '{name}', which no earlier "
                    f"node produces (or which this reader does not compute, e.g. a Dropout mask)"
                )
            node.inputs.append(values.get(name) if name else None)
        for name in [n for n in state.live if last_use.get(n, -1) <= i]:
            del state.live[name]
        outputs = read_node(node, state)
        for name in proto.input:  # data no node reads again: free its map
            if last_read.get(name, -1) <= i and isinstance(values.get(name), Affine):
                del values[name]
        for name, value in zip(proto.output, outputs):
            values[name] = value
            state.producers[name] = proto.op_type
            if isinstance(value, Affine) and last_use.get(name, -1) > i:
                state.live[name] = None
    result = values.get(output)
    if not isinstance(result, Affine):
        raise UnsupportedOperationError(
            f"graph output '{output}' does not depend on input '{info.name}'"
        )
    return state, result, info, input_shape


def _is_identity(value: Affine) -> bool:
    """Whether the value is the whole layer input, in order (nothing left to compute)."""
    n = value.size
    return (
        value.fresh
        and n == value.n_in
        and np.array_equal(value.indptr, np.arange(n + 1))
        and np.array_equal(value.cols, np.arange(n))
        and np.all(value.vals == 1.0)
        and not value.offset.any()
        and value.offset_src is None
    )


def _close(state: ReadState, pending: Affine, output: str) -> None:
    """Append the pending affine map as a linear layer (with its ties) unless it is the
    identity after a closed layer."""
    if state.layers and _is_identity(pending):
        return
    try:
        make_layer(state, pending, "linear")
    except TooLargeError as exc:
        raise OnnxImportError(f"the last layer, of graph output '{output}': {exc}") from None


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
        state, pending, info, input_shape = _walk(model)
        _close(state, pending, model.graph.output[0].name)
    except (OnnxImportError, InvalidNetworkError) as exc:
        raise type(exc)(f"{label}: {exc}") from None
    stored = stored_input_box(model, label)
    try:
        box = None if stored is None else InputBox(*stored)
    except InputBoundsError as exc:
        raise OnnxImportError(f"{label}: metadata '{INPUT_BOUNDS_KEY}': {exc}") from None
    return Network(
        with_stored_ties(model, tuple(state.layers), label),
        input_shape=input_shape,
        output_shape=pending.shape,
        input_name=info.name,
        output_name=model.graph.output[0].name,
        input_bounds=box,
        origin=graph_origin(model, state.params, state.origins, info.type.tensor_type.elem_type),
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
