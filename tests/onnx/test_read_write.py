"""Reading ONNX graphs into a Network, writing them back, and the error paths.

Tolerances: hand-built float64 models must match onnxruntime to ~1e-9 (rtol); float32 models
(torch, skl2onnx) are compared with rtol 1e-5 and an absolute slack of 1e-5 times the output
scale, the accuracy of float32 arithmetic over a few small layers.
"""

from __future__ import annotations

import base64
import io
import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pyomo_nnrelax import (
    InvalidNetworkError,
    Layer,
    Network,
    NetworkBounds,
    OnnxImportError,
    UnsupportedOperationError,
    interval_bounds,
)
from pyomo_nnrelax.matrices import from_entries
from pyomo_nnrelax.onnx import read_onnx, read_stored_bounds, run_onnxruntime, write_onnx
from tests.support.torch_export import export, requires_torch

RNG = np.random.default_rng(1234)


def assert_matches_float64(network: Network, model, X) -> None:
    np.testing.assert_allclose(network.forward(X), run_onnxruntime(model, X), rtol=1e-9, atol=1e-10)


def assert_matches_float32(network: Network, model, X) -> None:
    expected = run_onnxruntime(model, X)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(network.forward(X), expected, rtol=1e-5, atol=1e-5 * scale)


# ====================================================================== torch exports
try:
    import torch
except ImportError:  # only the torch tests are skipped (see tests.support.torch_export)
    torch = None


def torch_mlp(input_shape: tuple[int, ...], widths: list[int], seed: int, view: bool = False):
    """Flatten -> (x - mean) / std -> [Linear, BatchNorm1d, ReLU, Dropout]* -> Linear, in eval mode.

    ``view=True`` flattens with ``x.view(x.size(0), -1)``, which the TorchScript exporter
    writes as a Shape/Gather/Unsqueeze/Concat chain feeding a Reshape.
    """
    torch.manual_seed(seed)
    n_features = n_in = int(np.prod(input_shape))
    blocks: list = []
    for width in widths[:-1]:
        bn = torch.nn.BatchNorm1d(width)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
        blocks += [torch.nn.Linear(n_in, width), bn, torch.nn.ReLU(), torch.nn.Dropout(0.3)]
        n_in = width
    blocks.append(torch.nn.Linear(n_in, widths[-1]))

    class NormalisedMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.randn(n_features))
            self.register_buffer("std", torch.rand(n_features) + 0.5)
            self.body = torch.nn.Sequential(*blocks)

        def forward(self, x):
            x = x.view(x.size(0), -1) if view else torch.flatten(x, 1)
            return self.body((x - self.mean) / self.std)

    return NormalisedMLP().eval()


def torch_skip_block():
    """``relu(linear(x)) + x``: a residual connection."""
    torch.manual_seed(5)

    class SkipBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 3)

        def forward(self, x):
            return torch.relu(self.linear(x)) + x

    return SkipBlock().eval()


@requires_torch
@pytest.mark.parametrize(
    "dynamo, seed, view",
    [(False, 0, False), (False, 1, True), (False, 2, False), (True, 3, False), (True, 4, True)],
)
def test_network_forward_matches_onnxruntime_for_torch_exports(tmp_path, dynamo, seed, view):
    rng = np.random.default_rng(seed)
    input_shape = (2, 3)
    widths = [int(w) for w in rng.integers(2, 9, size=rng.integers(1, 4))] + [
        int(rng.integers(1, 4))
    ]
    module = torch_mlp(input_shape, widths, seed, view=view)
    path = tmp_path / "model.onnx"
    export(module, path, dynamo, example=torch.randn(4, *input_shape))

    network = read_onnx(path)

    X = rng.normal(size=(11, *input_shape))
    assert network.input_shape == input_shape
    assert network.output_shape == (widths[-1],)
    assert network.input_name == "x" and network.output_name == "y"
    assert [layer.activation for layer in network.layers] == ["relu"] * (len(widths) - 1) + [
        "linear"
    ]
    assert_matches_float32(network, path, X)
    with torch.no_grad():
        expected = module(torch.tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(network.forward(X), expected, rtol=1e-4, atol=1e-4)


@requires_torch
def test_torch_export_with_fixed_batch_size_reads_and_runs_row_by_row(tmp_path):
    path = tmp_path / "static.onnx"
    export(
        torch_mlp((2, 3), [5, 2], seed=7),
        path,
        False,
        example=torch.randn(1, 2, 3),
        dynamic_batch=False,
    )

    network = read_onnx(path)

    assert_matches_float32(network, path, RNG.normal(size=(5, 6)))


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_linear_on_a_matrix_input_is_read_as_a_per_row_map(tmp_path, dynamo):
    torch.manual_seed(11)
    module = torch.nn.Sequential(
        torch.nn.Linear(3, 4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
        torch.nn.ReLU(),
    ).eval()
    path = tmp_path / "per_row.onnx"
    export(module, path, dynamo, example=torch.randn(4, 2, 3))

    network = read_onnx(path)

    assert network.widths == (6, 8, 2)
    assert [layer.activation for layer in network.layers] == ["relu", "relu"]
    assert_matches_float32(network, path, RNG.normal(size=(9, 2, 3)))


@requires_torch
def test_torch_exports_without_an_exact_milp_form_are_unsupported(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Sigmoid()).eval()
    path = tmp_path / "bad.onnx"
    export(module, path, False, example=torch.randn(4, 3))

    with pytest.raises(UnsupportedOperationError, match=r"Sigmoid.*\(Sigmoid\)"):
        read_onnx(path)


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_residual_block_is_read_with_its_input_carried_by_linear_neurons(tmp_path, dynamo):
    path = tmp_path / "skip.onnx"
    export(torch_skip_block(), path, dynamo, example=torch.randn(4, 3))

    network = read_onnx(path)

    # relu(linear(x)) and x side by side, then their sum
    assert network.widths == (3, 6, 3)
    np.testing.assert_array_equal(network.layers[0].relu_mask, [True] * 3 + [False] * 3)
    assert_matches_float32(network, path, RNG.normal(size=(9, 3)))


# ====================================================================== skl2onnx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_network_forward_matches_onnxruntime_for_skl2onnx_mlp_regressor(dtype):
    import skl2onnx
    from sklearn.neural_network import MLPRegressor

    X = RNG.normal(size=(40, 4))
    y = X @ RNG.normal(size=4) + np.maximum(X[:, 0], 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regressor = MLPRegressor(
            hidden_layer_sizes=(8, 5), activation="relu", max_iter=30, random_state=0
        ).fit(X, y)
    model = skl2onnx.to_onnx(regressor, X[:1].astype(dtype))

    network = read_onnx(model)

    assert network.widths == (4, 8, 5, 1)
    check = assert_matches_float32 if dtype == np.float32 else assert_matches_float64
    check(network, model, X)
    np.testing.assert_allclose(network.forward(X)[:, 0], regressor.predict(X), rtol=1e-5, atol=1e-5)


# ====================================================================== hand-built graphs
def mlp_initializers(sizes, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        **{f"W{i}": rng.normal(size=(a, b)) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))},
        **{f"b{i}": rng.normal(size=b) for i, b in enumerate(sizes[1:])},
    }


@pytest.mark.parametrize(
    "gemm_kwargs, bias_shape",
    [
        ({}, (4,)),
        ({"transB": 1}, (4,)),
        ({"alpha": 0.5, "beta": 2.0}, (1, 4)),
        ({"alpha": -1.5, "transB": 1, "transA": 0}, ()),
        ({"beta": 0.25}, None),
    ],
)
def test_gemm_attributes_match_onnxruntime(make_onnx_model, gemm_kwargs, bias_shape):
    W = RNG.normal(size=(3, 4))
    inits = {"B": W.T if gemm_kwargs.get("transB") else W}
    inputs = ["x", "B"]
    if bias_shape is not None:
        inits["C"] = RNG.normal(size=bias_shape)
        inputs.append("C")
    model = make_onnx_model(
        [helper.make_node("Gemm", inputs, ["y"], name="g", **gemm_kwargs)], inits
    )

    network = read_onnx(model)

    assert_matches_float64(network, model, RNG.normal(size=(6, 3)))


@pytest.mark.parametrize("opset", [13, 17, 19, 21])
def test_matmul_add_relu_chain_matches_onnxruntime_across_opsets(make_onnx_model, opset):
    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["h0"], name="mm0"),
        helper.make_node("Add", ["h0", "b0"], ["z0"], name="add0"),
        helper.make_node("Relu", ["z0"], ["a0"], name="relu0"),
        helper.make_node("MatMul", ["a0", "W1"], ["h1"], name="mm1"),
        helper.make_node("Add", ["b1", "h1"], ["y"], name="add1"),
    ]
    model = make_onnx_model(nodes, mlp_initializers([3, 5, 2]), opset=opset)

    network = read_onnx(model)

    assert network.widths == (3, 5, 2)
    assert_matches_float64(network, model, RNG.normal(size=(8, 3)))


def test_consecutive_affine_operations_fold_into_one_layer(make_onnx_model):
    inits = mlp_initializers([3, 6, 4, 2])
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "b0"], ["h0"], name="g0"),
        helper.make_node("Gemm", ["h0", "W1", "b1"], ["h1"], name="g1"),
        helper.make_node("Neg", ["h1"], ["n1"], name="neg"),
        helper.make_node("Relu", ["n1"], ["a1"], name="relu"),
        helper.make_node("MatMul", ["a1", "W2"], ["h2"], name="mm"),
        helper.make_node("Add", ["h2", "b2"], ["y"], name="add"),
    ]
    model = make_onnx_model(nodes, inits)

    network = read_onnx(model)

    assert network.widths == (3, 4, 2)
    np.testing.assert_allclose(network.layers[0].weight, -(inits["W1"].T @ inits["W0"].T))
    assert_matches_float64(network, model, RNG.normal(size=(8, 3)))


def test_relu_on_the_graph_output_makes_the_last_layer_relu(make_onnx_model):
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "b0"], ["z"], name="g0"),
        helper.make_node("Relu", ["z"], ["y"], name="relu"),
    ]
    model = make_onnx_model(nodes, mlp_initializers([3, 4]))

    network = read_onnx(model)

    assert [layer.activation for layer in network.layers] == ["relu"]
    assert_matches_float64(network, model, RNG.normal(size=(8, 3)))


def test_normalisation_with_constant_nodes_on_either_side_matches_onnxruntime(make_onnx_model):
    mean, std = RNG.normal(size=3), RNG.uniform(0.5, 2.0, size=3)
    nodes = [
        helper.make_node(
            "Constant", [], ["mean"], name="c_mean", value=numpy_helper.from_array(mean)
        ),
        helper.make_node("Constant", [], ["two"], name="c_two", value_float=2.0),
        helper.make_node("Constant", [], ["shift"], name="c_shift", value_floats=[0.5, -1.0, 2.0]),
        helper.make_node("Constant", [], ["target"], name="c_target", value_ints=[-1, 3]),
        helper.make_node("Sub", ["x", "mean"], ["centred"], name="sub"),
        helper.make_node("Div", ["centred", "std"], ["scaled"], name="div"),
        helper.make_node("Cast", ["two"], ["two64"], name="cast_two", to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["two64", "scaled"], ["doubled"], name="mul"),
        helper.make_node("Cast", ["shift"], ["shift64"], name="cast_shift", to=TensorProto.DOUBLE),
        helper.make_node("Sub", ["shift64", "doubled"], ["flipped"], name="rsub"),
        helper.make_node("Reshape", ["flipped", "target"], ["flat"], name="reshape"),
        helper.make_node("Identity", ["flat"], ["same"], name="identity"),
        helper.make_node("Cast", ["same"], ["cast"], name="cast", to=TensorProto.DOUBLE),
        helper.make_node("Gemm", ["cast", "W0", "b0"], ["y"], name="gemm", transB=1),
    ]
    inits = {"std": std, "W0": RNG.normal(size=(2, 3)), "b0": RNG.normal(size=2)}
    model = make_onnx_model(nodes, inits)

    network = read_onnx(model)

    assert network.widths == (3, 2)
    assert_matches_float64(network, model, RNG.normal(size=(8, 3)))


def test_matmul_on_three_dimensional_input_acts_per_row(make_onnx_model):
    nodes = [
        helper.make_node("MatMul", ["x", "R"], ["right"], name="per_row"),
        helper.make_node("MatMul", ["L", "right"], ["left"], name="per_column"),
        helper.make_node("Add", ["left", "bias"], ["shifted"], name="add"),
        helper.make_node("Relu", ["shifted"], ["act"], name="relu"),
        helper.make_node("Transpose", ["act"], ["t"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("Flatten", ["t"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "W", "b"], ["y"], name="gemm"),
    ]
    inits = {
        "R": RNG.normal(size=(3, 4)),
        "L": RNG.normal(size=(5, 2)),
        "bias": RNG.normal(size=(1, 4)),
        "W": RNG.normal(size=(20, 2)),
        "b": RNG.normal(size=2),
    }
    model = make_onnx_model(nodes, inits, input_shape=(2, 3))

    network = read_onnx(model)

    assert network.input_shape == (2, 3) and network.widths == (6, 20, 2)
    assert_matches_float64(network, model, RNG.normal(size=(7, 2, 3)))


def test_batchnorm_dropout_squeeze_unsqueeze_and_shape_chain_match_onnxruntime(make_onnx_model):
    channels = 4
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["z"], name="gemm"),
        helper.make_node(
            "BatchNormalization",
            ["z", "scale", "beta", "mean", "var"],
            ["bn"],
            name="bn",
            epsilon=1e-3,
        ),
        helper.make_node("Dropout", ["bn"], ["drop"], name="dropout"),
        helper.make_node("Unsqueeze", ["drop", "axes"], ["u"], name="unsqueeze"),
        helper.make_node("Squeeze", ["u", "axes"], ["s"], name="squeeze"),
        helper.make_node("Shape", ["s"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_axes"], ["batch1"], name="unsqueeze_batch"),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["s", "target"], ["y"], name="reshape"),
    ]
    inits = {
        "W": RNG.normal(size=(3, channels)),
        "b": RNG.normal(size=channels),
        "scale": RNG.uniform(0.5, 1.5, size=channels),
        "beta": RNG.normal(size=channels),
        "mean": RNG.normal(size=channels),
        "var": RNG.uniform(0.5, 2.0, size=channels),
        "axes": np.array([2], dtype=np.int64),
        "zero": np.array(0, dtype=np.int64),
        "zero_axes": np.array([0], dtype=np.int64),
        "minus_one": np.array([-1], dtype=np.int64),
    }
    model = make_onnx_model(nodes, inits)

    network = read_onnx(model)

    assert network.widths == (3, channels)
    assert_matches_float64(network, model, RNG.normal(size=(8, 3)))


def test_external_data_is_loaded_from_the_files_directory(tmp_path, make_onnx_model):
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "b0"], ["z"], name="g0"),
        helper.make_node("Relu", ["z"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "W1", "b1"], ["y"], name="g1"),
    ]
    model = make_onnx_model(nodes, mlp_initializers([3, 40, 2]))
    path = tmp_path / "external.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    assert (tmp_path / "weights.bin").exists()

    network = read_onnx(path)

    assert_matches_float64(network, path, RNG.normal(size=(5, 3)))
    unloaded = onnx.load(str(path), load_external_data=False)
    with pytest.raises(OnnxImportError, match="external data.*path"):
        read_onnx(unloaded)


def test_missing_external_data_file_raises_onnx_import_error(tmp_path, make_onnx_model):
    model = make_onnx_model(
        [helper.make_node("Gemm", ["x", "W0", "b0"], ["y"], name="g")], mlp_initializers([3, 2])
    )
    path = tmp_path / "external.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    (tmp_path / "weights.bin").unlink()

    with pytest.raises(OnnxImportError, match="external.onnx"):
        read_onnx(path)


def test_input_bounds_metadata_is_read_into_the_network(make_onnx_model):
    model = make_onnx_model(
        [helper.make_node("Gemm", ["x", "W0", "b0"], ["y"], name="g")], mlp_initializers([3, 2])
    )
    helper.set_model_props(
        model, {"nnrelax.input_bounds": '{"lower": [-1, -2, -3], "upper": [1, 2, 3]}'}
    )

    network = read_onnx(model)

    np.testing.assert_array_equal(network.input_bounds[0], [-1, -2, -3])
    np.testing.assert_array_equal(network.input_bounds[1], [1, 2, 3])


# ====================================================================== writing and round trips
def shaped_network() -> Network:
    base = Network.mlp([6, 5, 4, 4], seed=3)
    return Network(
        base.layers,
        input_shape=(2, 3),
        output_shape=(2, 2),
        input_name="features",
        output_name="scores",
        input_bounds=(-np.ones(6), np.arange(1.0, 7.0)),
    )


def test_round_trip_in_float64_keeps_weights_names_shapes_and_bounds_exactly(tmp_path):
    network = shaped_network()
    bounds = interval_bounds(network)
    path = tmp_path / "net.onnx"

    write_onnx(network, path, dtype="float64", bounds=bounds)
    again = read_onnx(path)

    assert again == network
    assert (again.input_name, again.output_name) == ("features", "scores")
    assert (again.input_shape, again.output_shape) == ((2, 3), (2, 2))
    np.testing.assert_array_equal(again.input_bounds[0], network.input_bounds[0])
    np.testing.assert_array_equal(again.input_bounds[1], network.input_bounds[1])
    stored = read_stored_bounds(path)
    assert stored.method == bounds.method
    for got, want in zip(stored.lower + stored.upper, bounds.lower + bounds.upper):
        np.testing.assert_array_equal(got, want)
    X = RNG.normal(size=(9, 2, 3))
    assert_matches_float64(network, path, X)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_round_trip_in_float32_matches_onnxruntime(opset):
    network = Network.mlp([4, 8, 8, 3], seed=5)

    model = write_onnx(network, opset=opset)
    again = read_onnx(model)

    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    for a, b in zip(again.layers, network.layers):
        np.testing.assert_array_equal(a.weight, b.weight.astype(np.float32))
    assert_matches_float32(again, model, RNG.normal(size=(10, 4)))
    assert read_stored_bounds(model) is None


def conv_network() -> Network:
    """Conv(1->2, 3x3, pad 1) - Relu - Flatten - Gemm on a 1x6x6 input, read from ONNX; the
    kernel's centre of channel 0 is zero (a tied entry whose value is 0)."""
    kernel = RNG.normal(size=(2, 1, 3, 3))
    kernel[0, 0, 1, 1] = 0.0
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 3])],
        [
            numpy_helper.from_array(kernel, "k"),
            numpy_helper.from_array(RNG.normal(size=(3, 72)), "w"),
        ],
    )
    return read_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_written_cnn_reads_back_with_its_sparse_layers_and_ties(tmp_path):
    network = conv_network()
    first = network.layers[0]
    assert first.is_sparse and first.tie.n_params == 18

    write_onnx(network, tmp_path / "cnn.onnx", dtype="float64", graph="dense")
    again = read_onnx(tmp_path / "cnn.onnx")  # dense Gemm layers, the ties from metadata

    assert again == network and [layer.is_sparse for layer in again.layers] == [True, False]
    back = again.layers[0]
    np.testing.assert_array_equal(back.weight.indptr, first.weight.indptr)
    np.testing.assert_array_equal(back.weight.indices, first.weight.indices)
    np.testing.assert_array_equal(back.tie.index, first.tie.index)
    np.testing.assert_array_equal(back.tie.mult, first.tie.mult)
    # the zero kernel entry is still a parameter at its 36 positions, though the file's
    # dense Gemm holds zeros there
    assert np.count_nonzero((back.entries == 0.0) & back.tie.tied) == 36
    assert again.layers[1].tie is None


def test_ties_stored_as_dense_matrices_by_earlier_versions_are_read():
    network = conv_network()
    model = write_onnx(network, dtype="float64", graph="dense")
    dense = network.layers[0].in_storage("dense").tie
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, index0=dense.index.astype(np.int32), mult0=dense.mult, fixed0=dense.fixed
    )
    entry = next(p for p in model.metadata_props if p.key == "nnrelax.ties")
    entry.value = base64.b64encode(buffer.getvalue()).decode("ascii")

    again = read_onnx(model)

    assert again == network and again.layers[0].is_sparse
    np.testing.assert_array_equal(again.layers[0].tie.index, network.layers[0].tie.index)


def test_a_sparse_layer_without_a_tie_keeps_its_pattern_through_a_file():
    rows, cols = np.nonzero(RNG.random((20, 20)) < 0.1)
    values = RNG.normal(size=rows.size)
    values[0] = 0.0  # an entry training may make nonzero
    first = Layer(from_entries((20, 20), rows, cols, values), np.zeros(20))
    network = Network((first, Layer(RNG.normal(size=(1, 20)), np.zeros(1), "linear")))

    again = read_onnx(write_onnx(network, dtype="float64"))

    back = again.layers[0]
    assert again == network and back.is_sparse and back.tie is None
    np.testing.assert_array_equal(back.weight.indices, first.weight.indices)
    np.testing.assert_array_equal(back.weight.indptr, first.weight.indptr)


def test_stored_bounds_that_do_not_fit_the_network_are_refused():
    model = write_onnx(Network.mlp([2, 3, 1]))
    bad = {
        "method": "lp",
        "lower": [[0, 0]],
        "upper": [[1, 1]],
        "input_lower": [0, 0],
        "input_upper": [1, 1],
    }
    helper.set_model_props(model, {"nnrelax.bounds": json.dumps(bad)})

    with pytest.raises(OnnxImportError, match="layer widths"):
        read_stored_bounds(model)


def test_written_file_declares_a_dynamic_batch_dimension():
    model = write_onnx(Network.mlp([2, 3, 1]))

    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"


def test_writing_to_an_existing_path_raises_and_keeps_the_file(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"precious")

    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_onnx(Network.mlp([2, 3, 1]), path)

    assert path.read_bytes() == b"precious"
    write_onnx(Network.mlp([2, 3, 1]), path, overwrite=True)
    assert read_onnx(path).widths == (2, 3, 1)


def test_writing_bounds_of_the_wrong_width_is_refused():
    network = Network.mlp([2, 3, 1])
    wrong = NetworkBounds(
        np.zeros(2), np.ones(2), (np.zeros(4), np.zeros(1)), (np.ones(4), np.ones(1))
    )

    with pytest.raises(InvalidNetworkError, match="layer widths"):
        write_onnx(network, bounds=wrong)


# ====================================================================== error paths
def unary_model(make_onnx_model, op: str, **attrs) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "b0"], ["z"], name="gemm"),
        helper.make_node(op, ["z"], ["y"], name="bad_node", **attrs),
    ]
    return make_onnx_model(nodes, mlp_initializers([3, 4]))


@pytest.mark.parametrize(
    "op, attrs, why",
    [
        ("Sigmoid", {}, "only ReLU"),
        ("Tanh", {}, "only ReLU"),
        ("Softmax", {"axis": 1}, "only ReLU"),
        ("Elu", {}, "only ReLU"),
    ],
)
def test_non_relu_activations_are_unsupported_naming_node_and_op(make_onnx_model, op, attrs, why):
    model = unary_model(make_onnx_model, op, **attrs)

    with pytest.raises(UnsupportedOperationError, match=f"'bad_node' \\({op}\\).*{why}"):
        read_onnx(model)


def test_lp_pooling_and_a_data_dependent_kernel_are_unsupported(make_onnx_model):
    pool = make_onnx_model(
        [helper.make_node("LpPool", ["x"], ["y"], name="pool1", kernel_shape=[2, 2])],
        input_shape=(1, 4, 4),
    )
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=0, name="flat"),
        helper.make_node("Reshape", ["f", "shape"], ["k"], name="as_kernel"),
        helper.make_node("Conv", ["x", "k"], ["y"], name="conv1"),
    ]
    conv = make_onnx_model(
        nodes, {"shape": np.array([1, 1, 5, 5], dtype=np.int64)}, input_shape=(1, 5, 5)
    )

    with pytest.raises(UnsupportedOperationError, match=r"'pool1' \(LpPool\)"):
        read_onnx(pool)
    with pytest.raises(UnsupportedOperationError, match=r"\(Flatten\)|'conv1' \(Conv\)"):
        read_onnx(conv)


def test_skip_connection_is_read_and_matches_onnxruntime(make_onnx_model):
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "b0"], ["z"], name="gemm"),
        helper.make_node("Relu", ["z"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "W1", "b1"], ["h"], name="gemm2"),
        helper.make_node("Add", ["h", "a"], ["y"], name="skip_add"),
    ]
    inits = {**mlp_initializers([3, 4]), "W1": RNG.normal(size=(4, 4)), "b1": RNG.normal(size=4)}
    model = make_onnx_model(nodes, inits)

    assert_matches_float64(read_onnx(model), model, RNG.normal(size=(7, 3)))


def test_sum_of_one_tensor_with_itself_is_twice_it(make_onnx_model):
    model = make_onnx_model([helper.make_node("Add", ["x", "x"], ["y"], name="twice")])
    X = RNG.normal(size=(5, 3))

    np.testing.assert_allclose(read_onnx(model).forward(X), 2 * X, rtol=1e-12)


@pytest.mark.parametrize(
    "node, inits, pattern",
    [
        (
            helper.make_node("Gemm", ["x", "W0", "b0"], ["y"], name="ta", transA=1),
            {"W0": np.ones((3, 3)), "b0": np.ones(3)},
            r"'ta' \(Gemm\): transA",
        ),
        (
            helper.make_node("Gemm", ["W0", "x", "b0"], ["y"], name="gb"),
            {"W0": np.ones((3, 3)), "b0": np.ones(3)},
            r"'gb' \(Gemm\)",
        ),
        (
            helper.make_node("Reshape", ["x", "shape"], ["y"], name="rs"),
            {"shape": np.array([-1], dtype=np.int64)},
            r"'rs' \(Reshape\)",
        ),
        (
            helper.make_node("Flatten", ["x"], ["y"], name="fl", axis=0),
            {},
            r"'fl' \(Flatten\): .*batch",
        ),
        (
            helper.make_node("Div", ["one", "x"], ["y"], name="dv"),
            {"one": np.ones(3)},
            r"'dv' \(Div\): .*not affine",
        ),
        (
            helper.make_node(
                "BatchNormalization", ["x", "s", "s", "s", "s"], ["y"], name="bnt", training_mode=1
            ),
            {"s": np.ones(3)},
            r"'bnt' \(BatchNormalization\): .*training",
        ),
        (
            helper.make_node("Dropout", ["x", "", "training"], ["y"], name="dt"),
            {"training": np.array(True)},
            r"'dt' \(Dropout\): .*training",
        ),
        (
            helper.make_node("Cast", ["x"], ["y"], name="ci", to=TensorProto.INT64),
            {},
            r"'ci' \(Cast\)",
        ),
    ],
)
def test_operations_without_an_affine_form_are_unsupported(make_onnx_model, node, inits, pattern):
    with pytest.raises(UnsupportedOperationError, match=pattern):
        read_onnx(make_onnx_model([node], inits))


def test_several_inputs_outputs_or_integer_inputs_are_unsupported(make_onnx_model):
    two_inputs = make_onnx_model([helper.make_node("Add", ["x", "x2"], ["y"], name="add")])
    two_inputs.graph.input.append(
        helper.make_tensor_value_info("x2", TensorProto.DOUBLE, ["batch", 3])
    )
    two_outputs = make_onnx_model([helper.make_node("Relu", ["x"], ["y"], name="r")])
    two_outputs.graph.output.append(
        helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, None])
    )
    integer = make_onnx_model(
        [helper.make_node("Cast", ["x"], ["y"], name="c", to=TensorProto.DOUBLE)],
        elem_type=TensorProto.INT64,
    )

    with pytest.raises(UnsupportedOperationError, match="2 data inputs"):
        read_onnx(two_inputs)
    with pytest.raises(UnsupportedOperationError, match="2 outputs"):
        read_onnx(two_outputs)
    with pytest.raises(UnsupportedOperationError, match="only float inputs"):
        read_onnx(integer)


def test_nan_weight_raises_invalid_network_error_naming_the_node(make_onnx_model):
    inits = mlp_initializers([3, 4])
    inits["W0"][1, 2] = np.nan
    model = make_onnx_model(
        [helper.make_node("Gemm", ["x", "W0", "b0"], ["y"], name="nan_gemm")], inits
    )

    with pytest.raises(InvalidNetworkError, match="nan_gemm"):
        read_onnx(model)


def test_division_by_a_zero_constant_raises_invalid_network_error(make_onnx_model):
    model = make_onnx_model(
        [helper.make_node("Div", ["x", "d"], ["y"], name="by_zero")],
        {"d": np.array([1.0, 0.0, 2.0])},
    )

    with pytest.raises(InvalidNetworkError, match="by_zero"):
        read_onnx(model)


def test_shape_mismatch_raises_onnx_import_error_naming_the_node(make_onnx_model):
    model = make_onnx_model(
        [helper.make_node("Gemm", ["x", "W0", "b0"], ["y"], name="wide")], mlp_initializers([5, 2])
    )

    with pytest.raises(OnnxImportError, match=r"'wide' \(Gemm\)"):
        read_onnx(model)


@pytest.mark.parametrize(
    "content",
    [b"this is not a protobuf \xff\xfe", None],
    ids=["garbage", "truncated"],
)
def test_malformed_files_raise_onnx_import_error_naming_the_path(tmp_path, content):
    path = tmp_path / "broken.onnx"
    if content is None:
        full = write_onnx(Network.mlp([3, 4, 2])).SerializeToString()
        content = full[: len(full) // 2]
    path.write_bytes(content)

    with pytest.raises(OnnxImportError, match="broken.onnx"):
        read_onnx(path)


def test_missing_file_raises_onnx_import_error_naming_the_path(tmp_path):
    with pytest.raises(OnnxImportError, match="nowhere.onnx.*not found"):
        read_onnx(tmp_path / "nowhere.onnx")


def test_checker_failure_raises_onnx_import_error(make_onnx_model):
    model = make_onnx_model([helper.make_node("Relu", ["x"], ["y"], name="r")])
    model.graph.node.append(helper.make_node("Relu", ["undefined"], ["other"], name="dangling"))

    with pytest.raises(OnnxImportError, match="checker"):
        read_onnx(model, name_for_errors="my-model")


def test_bounds_are_not_stored_beside_weights_that_float32_would_round(tmp_path):
    net = Network.mlp([2, 5, 1], seed=0)
    bounds = interval_bounds(net, [(-1, 1), (-1, 1)])
    with pytest.raises(InvalidNetworkError, match="not exactly representable as float32"):
        write_onnx(net, tmp_path / "m.onnx", bounds=bounds)
    assert not (tmp_path / "m.onnx").exists()
    write_onnx(net, tmp_path / "m64.onnx", bounds=bounds, dtype="float64")
    assert read_stored_bounds(tmp_path / "m64.onnx").method == "interval"
    rounded = read_onnx(write_onnx(net, dtype="float32"))
    write_onnx(rounded, tmp_path / "m32.onnx", bounds=interval_bounds(rounded, [(-1, 1)] * 2))
    assert read_stored_bounds(tmp_path / "m32.onnx") is not None  # float32-exact: stored


# ====================================================================== regressions from fuzzing
def _with_bytes(model: onnx.ModelProto, marker: bytes, replacement: bytes) -> onnx.ModelProto:
    """``model`` with ``marker`` replaced by as many other bytes (e.g. invalid UTF-8)."""
    assert len(marker) == len(replacement)
    broken = onnx.ModelProto()
    broken.ParseFromString(model.SerializeToString().replace(marker, replacement))
    return broken


def test_an_op_type_that_is_not_utf8_raises_onnx_import_error(make_onnx_model):
    # the ONNX checker raised a raw UnicodeDecodeError
    model = make_onnx_model([helper.make_node("Relu", ["x"], ["y"], name="r")])
    model.graph.node[0].op_type = "RELUMARKER"
    broken = _with_bytes(model, b"RELUMARKER", b"Re\xfflu\xfe\xfe\xfe\xfe\xfe")

    with pytest.raises(OnnxImportError, match="not valid UTF-8"):
        read_onnx(broken, name_for_errors="m")


def test_metadata_that_is_not_utf8_raises_onnx_import_error_naming_the_entry():
    # json.loads got bytes and raised a raw UnicodeDecodeError
    model = write_onnx(Network.mlp([2, 3, 1]))
    helper.set_model_props(model, {"nnrelax.input_bounds": "MARKERVALUE"})
    broken = _with_bytes(model, b"MARKERVALUE", b"MARKER\xff\xfeLUE")

    with pytest.raises(OnnxImportError, match="'nnrelax.input_bounds' is not valid JSON"):
        read_onnx(broken)


def test_an_initializer_of_unknown_data_type_raises_naming_it(make_onnx_model):
    # numpy_helper.to_array raised a raw KeyError: 63
    model = make_onnx_model(
        [helper.make_node("Gemm", ["x", "W0", "b0"], ["y"], name="g")], mlp_initializers([3, 2])
    )
    model.graph.initializer[0].data_type = 63

    with pytest.raises(OnnxImportError, match="initializer 'W0' .*cannot be read"):
        read_onnx(model)


@pytest.mark.parametrize(
    "tensor",
    [
        numpy_helper.from_array(np.ones((3, 2), dtype=np.int64), "W0"),
        helper.make_tensor("W0", TensorProto.STRING, (3, 2), [b"w"] * 6),
    ],
    ids=["int64", "string"],
)
def test_a_non_float_weight_raises_naming_node_and_initializer(make_onnx_model, tensor):
    # int64 weights were read as if float (onnxruntime refuses the model); strings raised a raw
    # ValueError from numpy
    model = make_onnx_model(
        [helper.make_node("Gemm", ["x", "W0", "b0"], ["y"], name="g")], mlp_initializers([3, 2])
    )
    model.graph.initializer[0].CopyFrom(tensor)

    with pytest.raises(OnnxImportError, match=r"'g' \(Gemm\): constant input 'W0' has element"):
        read_onnx(model)


def _stored(model: onnx.ModelProto, change) -> onnx.ModelProto:
    entry = next(p for p in model.metadata_props if p.key == "nnrelax.bounds")
    data = json.loads(entry.value)
    change(data)
    entry.value = json.dumps(data)
    return model


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda d: d["lower"][0].__setitem__(1, float("nan")), "NaN or infinite"),
        (lambda d: d.update(lower=d["upper"], upper=d["lower"]), "lower bounds above upper"),
        (lambda d: d["upper"][0].pop(), "differ in shape"),
    ],
    ids=["nan", "inverted", "ragged"],
)
def test_broken_stored_bounds_are_refused_naming_the_metadata(change, pattern):
    # NaN and inverted stored bounds were used as they were; ragged ones raised an error
    # that named neither the file nor the metadata entry
    net = Network.mlp([2, 3, 1], seed=0).with_input_bounds([-1, -1], [1, 1])
    model = _stored(write_onnx(net, dtype="float64", bounds=interval_bounds(net)), change)

    with pytest.raises(
        OnnxImportError, match=rf"<ModelProto>: metadata .nnrelax.bounds.*{pattern}"
    ):
        read_stored_bounds(model)


def test_a_graph_input_of_an_undefined_element_type_is_unsupported(make_onnx_model):
    # building the error message raised a raw ValueError from protobuf's enum lookup
    model = make_onnx_model([helper.make_node("Relu", ["x"], ["y"], name="r")])
    model.graph.input[0].type.tensor_type.elem_type = 33

    with pytest.raises(UnsupportedOperationError, match="33 .not an ONNX type.*only float"):
        read_onnx(model)
