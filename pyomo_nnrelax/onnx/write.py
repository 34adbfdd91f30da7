"""Write a :class:`~pyomo_nnrelax.network.Network` as an ONNX graph of Gemm (+ Relu) nodes.

A layer with ReLU and linear neurons (what skip connections, LeakyReLU, clips and max pools
are read into) is written as Gemm + PRelu with slope 0 at its ReLUs and 1 at its linear
neurons, so a network always reads back as the same layers.  Convolutions are written as
the dense Gemm they were folded into, with their ties in metadata (:mod:`.tie_metadata`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..bounds import NetworkBounds
from ..errors import InvalidNetworkError
from ..files import atomic_write
from ..network import Network
from .load import FLOAT_TYPES
from .metadata import metadata_entries
from .tie_metadata import ties_entry

_WRITE_DTYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}


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
            numpy_helper.from_array(layer.weight.astype(np_dtype), w),
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
        atomic_write(path, lambda tmp: onnx.save(model, os.fspath(tmp)))
    return model
