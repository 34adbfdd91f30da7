"""Write a :class:`~pyomo_nnrelax.network.Network` as ONNX: as the graph it was read from
with new initializers (:mod:`.rewrite`), or as a graph of Gemm (+ Relu) nodes.

``graph="auto"`` writes the original graph for a network read from one whose structure a
dense graph would lose (some layer is tied: a convolution, a skip path, a pool) when its
initializers can give the network's weights, in their own float types (``dtype`` is the
type of a dense graph); otherwise dense layers, with a warning when the original graph was
meant but cannot be written.  A dense MLP is written dense, as it always was.

In the dense graph, a layer with ReLU and linear neurons (what skip connections, LeakyReLU,
clips and max pools are read into) is written as Gemm + PRelu with slope 0 at its ReLUs and
1 at its linear neurons, so a network always reads back as the same layers.  Convolutions
are written as the dense Gemm they were folded into, with their ties in metadata
(:mod:`.tie_metadata`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import matrices
from ..bounds import NetworkBounds
from ..errors import InvalidNetworkError
from ..files import atomic_write
from ..network import Network
from .load import FLOAT_TYPES, Source
from .metadata import metadata_entries
from .origin import DENSE_GRAPH_NAME, PRODUCER, GraphOrigin, OriginMismatchError
from .read import read_onnx
from .rewrite import original_model
from .tie_metadata import ties_entry

_WRITE_DTYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}
WRITE_DTYPES = tuple(_WRITE_DTYPES)
"""The float types :func:`write_onnx` writes (``dtype=``; the commands' ``--dtype``)."""

GRAPHS = ("auto", "original", "dense")
"""What :func:`write_onnx` writes (``graph=``): see :func:`write_onnx`."""


def _layer_nodes(
    network: Network, elem_type: int, first: str, final: str
) -> tuple[list, list, str]:
    """Gemm (transB=1) and Relu (or PRelu for mixed layers) nodes for every layer; returns
    nodes, initializers, last tensor.

    The last node writes the tensor ``final``, so a flat output needs no Identity node.
    Gemm's default attributes (alpha, beta, transA) are written out because some readers
    (OMLT 1.2) require them.
    """
    nodes, inits, current = [], [], first
    np_dtype = FLOAT_TYPES[elem_type]
    for i, layer in enumerate(network.layers):
        w, b = f"nnrelax/layer{i}/weight", f"nnrelax/layer{i}/bias"
        inits += [
            numpy_helper.from_array(matrices.to_dense(layer.weight).astype(np_dtype), w),
            numpy_helper.from_array(layer.bias.astype(np_dtype), b),
        ]
        last_layer = i == len(network.layers) - 1
        relu = layer.has_relu
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
            if layer.kind == "relu":
                nodes.append(helper.make_node("Relu", [z], [current], name=f"layer{i}_relu"))
            else:
                slope = f"nnrelax/layer{i}/slope"
                inits.append(numpy_helper.from_array((~layer.relu_mask).astype(np_dtype), slope))
                nodes.append(
                    helper.make_node("PRelu", [z, slope], [current], name=f"layer{i}_prelu")
                )
    return nodes, inits, current


def _is_tied(network: Network) -> bool:
    """Whether some layer's weight shares or fixes entries (a structure a dense graph would
    lose; fixed or shared biases alone, as of a Gemm without C, do not count)."""
    return any(layer.tie is not None for layer in network.layers)


def _original_or_none(network: Network, graph: str, bounds) -> onnx.ModelProto | None:
    """The original graph with new initializers where ``graph`` asks for it and it can be
    written (module docstring), else None; ``graph="original"`` raises instead."""
    origin = network.origin
    if graph == "dense":
        return None
    if not isinstance(origin, GraphOrigin):
        if graph == "original":
            raise InvalidNetworkError(
                "graph='original': the network was not read from an ONNX graph (or was read "
                "from a file of dense layers this package wrote), so there is none to write"
            )
        return None
    if graph == "auto" and not _is_tied(network):
        return None
    try:
        return original_model(network, bounds, runtime_only=graph == "auto")
    except OriginMismatchError as exc:
        if graph == "original":
            raise OriginMismatchError(f"graph='original': {exc}") from None
        warnings.warn(
            f"the network is written as dense Gemm layers, not as the graph it was read from: "
            f"{exc}",
            stacklevel=4,
        )
        return None


def build_onnx_model(
    network: Network,
    *,
    opset: int = 17,
    bounds: NetworkBounds | None = None,
    dtype: str = "float32",
    graph: str = "auto",
) -> onnx.ModelProto:
    """The ONNX model of ``network`` (see :func:`write_onnx`), checked but not saved."""
    if dtype not in _WRITE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_WRITE_DTYPES)}, got {dtype!r}")
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {list(GRAPHS)}, got {graph!r}")
    original = _original_or_none(network, graph, bounds)
    if original is not None:
        return original
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
        DENSE_GRAPH_NAME,
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
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=PRODUCER
    )
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    metadata = {**metadata_entries(network, bounds, FLOAT_TYPES[elem_type]), **ties_entry(network)}
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
    graph: str = "auto",
) -> onnx.ModelProto:
    """Write ``network`` as ONNX and return the model: as the graph it was read from with
    new initializers, or as a graph of Gemm (+ Relu) nodes.

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
        Element type of a dense graph.  float32 (default) is what most tools expect but
        rounds the float64 weights; float64 round-trips them exactly.  The original graph
        keeps its own types (float32 stays float32, and rounds the weights): pass
        ``graph="dense"`` for a file that holds them exactly.
    graph : {"auto", "original", "dense"}
        ``"original"``: the graph the network was read from (``network.origin``), the same
        nodes, names, attributes, opset, input and output, with new initializer values;
        raises :class:`~pyomo_nnrelax.errors.InvalidNetworkError` naming the layer and what
        does not map when its initializers cannot give the network's weights (entries of one
        parameter trained apart, a fixed or free entry moved).  ``"dense"``: Gemm (+ Relu)
        layers.  ``"auto"`` (default): the original graph for a tied network (a CNN, a skip
        path), else dense; dense with a warning when the original graph cannot give the
        weights or onnxruntime cannot run it.  The original graph is checked against the
        network with onnxruntime on random inputs of its box before anything is written (a
        graph onnxruntime cannot run, e.g. a float64 Conv, is checked as it reads back).

    Input and output names and shapes are kept (a dense graph's batch dimension is
    ``"batch"``; ``opset`` is a dense graph's); the network's input bounds go to metadata
    key ``nnrelax.input_bounds``.
    """
    if path is not None and Path(path).exists() and not overwrite:
        raise FileExistsError(
            f"{os.fspath(path)} already exists; pass overwrite=True to replace it"
        )
    model = build_onnx_model(network, opset=opset, bounds=bounds, dtype=dtype, graph=graph)
    if path is not None:
        atomic_write(path, lambda tmp: onnx.save(model, os.fspath(tmp)))
    return model


def source_dtype(source: Source) -> str:
    """The float type of :data:`WRITE_DTYPES` that keeps a model's own: ``"float64"`` for a
    graph whose data input is float64, else ``"float32"`` (float16 widens to it).

    What a command writes a model it read as by default, so that a float32 pipeline stays
    float32 and a float64 model keeps its exact weights.
    """
    model = source
    if not isinstance(source, onnx.ModelProto):  # the types only: no external data
        model = onnx.load(os.fspath(source), load_external_data=False)
    initialized = {t.name for t in model.graph.initializer}
    types = {i.type.tensor_type.elem_type for i in model.graph.input if i.name not in initialized}
    return "float64" if types == {TensorProto.DOUBLE} else "float32"


def as_written(network: Network, dtype: str) -> Network:
    """``network`` as :func:`write_onnx` with ``dtype`` writes it: its weights rounded to
    what the file holds (read back from the graph :func:`build_onnx_model` makes; a dense
    float64 file keeps them).

    Bounds computed for the result may be stored beside it in a file of ``dtype``, which the
    unrounded weights of a folded batch normalisation or input scaling do not allow.
    """
    original = _original_or_none(network, "auto", None)
    if original is None and dtype == "float64":
        return network
    return read_onnx(original or build_onnx_model(network, dtype=dtype, graph="dense"))
