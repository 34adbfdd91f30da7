"""A network written as the graph it was read from: the same nodes, names, attributes, opset,
inputs and outputs, with the network's weights as new initializer values.

The values come from the network's :class:`~.origin.GraphOrigin`
(:func:`~.origin.parameter_values`) and keep each initializer's own element type (float32
stays float32).  The package's metadata of the graph read (input box, stored bounds, ties)
is replaced by the network's: its input box, and stored bounds only when the graph's types
hold the weights exactly (checked by reading the graph back, as the dense writer checks
the rounding of its float type); the graph itself gives the ties back.  Before it is
returned, the graph is run with onnxruntime on random inputs of the network's box and
compared with the network's forward pass, so that no file differs silently from the
network it was written from (onnxruntime has no float64 Conv: such a graph is compared as
the reader reads it back, or refused where only onnxruntime's word will do).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import matrices
from ..bounds import NetworkBounds
from ..network import Network
from .metadata import BOUNDS_KEY, INPUT_BOUNDS_KEY, metadata_entries
from .origin import GraphOrigin, OriginMismatchError, parameter_values
from .read import read_onnx
from .runtime import loads_in_onnxruntime, run_onnxruntime
from .tie_metadata import TIES_KEY

#: Relative tolerance of the onnxruntime check, by the least precise float type written.
RUNTIME_RTOL = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-9}

#: Random inputs the written graph is checked on (a graph of fixed batch: one batch).
CHECKED_INPUTS = 8

_PACKAGE_KEYS = (INPUT_BOUNDS_KEY, BOUNDS_KEY, TIES_KEY)


def _np_type(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def least_precise(origin: GraphOrigin) -> np.dtype:
    """The least precise float type of the graph's input and trainable initializers: how
    precisely the graph can hold a network and compute its outputs."""
    types = [origin.input_type, *(b.elem_type for b in origin.blocks)]
    return min((_np_type(t) for t in types), key=lambda t: t.itemsize)


def _new_initializers(model: onnx.ModelProto, network: Network, origin: GraphOrigin) -> None:
    """Replace the graph's trainable initializers by the values that give the network."""
    tensors = {t.name: t for t in model.graph.initializer}
    arrays = [numpy_helper.to_array(tensors[b.name]).reshape(-1) for b in origin.blocks]
    read = np.concatenate([np.zeros(0), *arrays]).astype(np.float64)
    theta = parameter_values(network, origin, read)
    for block in origin.blocks:
        old = tensors[block.name]
        values = theta[block.start : block.start + block.size].reshape(block.shape)
        new = numpy_helper.from_array(values.astype(_np_type(block.elem_type)), block.name)
        if old.HasField("doc_string"):
            new.doc_string = old.doc_string
        old.CopyFrom(new)


def _check_names(model: onnx.ModelProto, network: Network) -> None:
    initialized = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initialized]
    outputs = [o.name for o in model.graph.output]
    if inputs != [network.input_name] or outputs != [network.output_name]:
        raise OriginMismatchError(
            f"the network's input and output ({network.input_name!r}, {network.output_name!r}) "
            f"are not the graph's ({inputs[0]!r}, {outputs[0]!r})"
        )


def _check_exact(model: onnx.ModelProto, network: Network) -> None:
    """Raise unless the graph reads back as exactly the network's weights (stored bounds are
    valid only for those)."""
    back = read_onnx(model)
    for l, (mine, read) in enumerate(zip(network.layers, back.layers)):
        if not (matrices.equal(mine.weight, read.weight) and np.array_equal(mine.bias, read.bias)):
            raise OriginMismatchError(
                f"layer {l}: the graph's initializers round its weights, so stored bounds could "
                "be invalid for them; compute the bounds for as_written(network, dtype) (the "
                "network as the graph holds it), or write graph='dense' with dtype='float64'"
            )


def _with_metadata(model: onnx.ModelProto, network: Network, bounds) -> None:
    """The network's metadata in place of the package's entries of the graph read."""
    kept = {p.key: p.value for p in model.metadata_props if p.key not in _PACKAGE_KEYS}
    del model.metadata_props[:]
    if bounds is not None:
        _check_exact(model, network)
    helper.set_model_props(model, {**kept, **metadata_entries(network, bounds, np.float64)})


def _reference(model: onnx.ModelProto, network: Network, X, runtime_only: bool) -> np.ndarray:
    """onnxruntime's outputs of the graph; where onnxruntime cannot run the graph read either
    (it has no float64 Conv), the outputs of the graph read back, unless ``runtime_only``."""
    try:
        return run_onnxruntime(model, X)
    except Exception as exc:  # onnxruntime's own types: NotImplemented, Fail, InvalidGraph...
        if runtime_only or loads_in_onnxruntime(network.origin.model):
            where = "" if runtime_only else ", though it runs the graph read"
            raise OriginMismatchError(
                f"onnxruntime cannot run the graph to check it{where} "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
    return read_onnx(model).forward(X)


def _check_runtime(model: onnx.ModelProto, network: Network, runtime_only: bool) -> None:
    """Raise unless the graph gives the network's outputs on random inputs of its box."""
    initialized = {t.name for t in model.graph.initializer}
    info = next(i for i in model.graph.input if i.name not in initialized)
    batch = info.type.tensor_type.shape.dim[0].dim_value
    rng = np.random.default_rng(0)
    lower, upper = (-np.ones(network.n_inputs), np.ones(network.n_inputs))
    if network.input_bounds is not None:
        lower, upper = network.input_bounds
    X = rng.uniform(lower, upper, size=(batch or CHECKED_INPUTS, network.n_inputs))
    X = X.astype(_np_type(info.type.tensor_type.elem_type)).astype(np.float64)
    got, want = _reference(model, network, X, runtime_only), network.forward(X)
    rtol = RUNTIME_RTOL.get(least_precise(network.origin), 1e-5)
    scale = max(1.0, float(np.max(np.abs(want))))
    if got.shape != want.shape:
        raise OriginMismatchError(
            f"the graph gives {got.shape[1]} outputs, the network {want.shape[1]}"
        )
    if not np.allclose(got, want, rtol=rtol, atol=rtol * scale):
        raise OriginMismatchError(
            f"the graph with the new initializers gives outputs that differ from the network's "
            f"(by up to {np.max(np.abs(got - want)):.3g} on random inputs of its box, tolerance "
            f"{rtol:g} relative)"
        )


def original_model(
    network: Network, bounds: NetworkBounds | None = None, runtime_only: bool = False
) -> onnx.ModelProto:
    """``network`` as the graph it was read from (``network.origin``), with new initializers
    and metadata, checked by the ONNX checker and against onnxruntime (where onnxruntime
    cannot run it, against the graph read back, unless ``runtime_only``).

    Raises :class:`~.origin.OriginMismatchError` naming the layer and what does not map
    (or why the graph would not be the network).
    """
    origin = network.origin
    model = origin.proto()
    _check_names(model, network)
    _new_initializers(model, network, origin)
    _with_metadata(model, network, bounds)
    onnx.checker.check_model(model)
    _check_runtime(model, network, runtime_only)
    return model
