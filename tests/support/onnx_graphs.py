"""Hand-built ONNX graphs and their checks against onnxruntime, shared by the reader's tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pyomo_nnrelax import Network, read_onnx, run_onnxruntime

RNG = np.random.default_rng(2024)
F32, F64 = TensorProto.FLOAT, TensorProto.DOUBLE


def assert_ties_consistent(network: Network) -> None:
    """Every layer's weight and bias follow their ties."""
    for layer in network.layers:
        for tie, entries in ((layer.tie, layer.entries), (layer.bias_tie, layer.bias)):
            if tie is not None:
                np.testing.assert_allclose(tie.weight(tie.parameters(entries)), entries)


def assert_matches(network: Network, model, X, float64: bool = False) -> None:
    expected = run_onnxruntime(model, X)
    got = network.forward(X)
    assert got.shape == expected.shape
    if float64:
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    else:
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
    assert_ties_consistent(network)


def assert_in_tie_family(first: Network, second: Network) -> None:
    """``second`` (other weights, same graph) is reached by ``first``'s ties, whose fixed
    entries it shares: the structure a trainer keeps is the graph's (in the same storage)."""
    assert first.widths == second.widths
    for a, b in zip(first.layers, second.layers):
        assert a.is_sparse == b.is_sparse
        if a.tie is None:
            assert b.tie is None
            continue
        np.testing.assert_array_equal(a.tie.index, b.tie.index)
        rebuilt = a.tie.weight(a.tie.parameters(b.entries))
        np.testing.assert_allclose(rebuilt, b.entries, rtol=1e-6, atol=1e-7)


def model(
    nodes,
    inits=None,
    input_shape=(3,),
    elem_type=F64,
    opset=17,
    out_rank=None,
    batch="batch",
    input_name: str = "x",
    output_name: str = "y",
    cast: bool = True,
) -> onnx.ModelProto:
    """A one-input one-output graph.  Float initializers take the graph's float type (with
    ``cast``; else they keep their numpy dtype).  The output has unknown dims and the input's
    rank unless ``out_rank`` is given."""
    dtype = np.float64 if elem_type == F64 else np.float32
    initializers = []
    for name, value in (inits or {}).items():
        value = np.asarray(value)
        if cast and np.issubdtype(value.dtype, np.floating):
            value = value.astype(dtype)
        initializers.append(numpy_helper.from_array(value, name))
    rank = out_rank or len(input_shape) + 1
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(input_name, elem_type, [batch, *input_shape])],
        [helper.make_tensor_value_info(output_name, elem_type, [None] * rank)],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def read_and_check(proto: onnx.ModelProto, input_shape, float64: bool, n: int = 9) -> Network:
    network = read_onnx(proto)
    assert_matches(network, proto, RNG.normal(size=(n, *input_shape)), float64)
    return network
