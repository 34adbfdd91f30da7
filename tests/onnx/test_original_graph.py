"""A trained network written back as the graph it was read from (``graph="original"`` and
``"auto"``): the same nodes with new initializers, that onnxruntime runs to the network's
outputs and that reads back into the trained layers with the same ties.

The graphs are float32, as torch exports them; "within float32 rounding" is rtol 1e-5 with
an absolute floor of 1e-6 of the largest entry.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from pyomo_nnrelax import InvalidNetworkError, Layer, Network, Trainer, interval_bounds
from pyomo_nnrelax.matrices import to_sparse
from pyomo_nnrelax.onnx import read_onnx, read_stored_bounds, run_onnxruntime, write_onnx
from pyomo_nnrelax.onnx.load import external_data_files
from pyomo_nnrelax.onnx.write import as_written
from pyomo_nnrelax.refinement import refine
from pyomo_nnrelax.training import BoundWidth
from tests.support.onnx_graphs import F32, RNG, assert_ties_consistent, model
from tests.support.torch_export import export, requires_torch


# ====================================================================== helpers
def trained(network: Network, epochs: int = 3, seed: int = 0) -> Network:
    """``network`` after a few epochs of the package's Trainer on random targets in its box
    (``[-1, 1]`` without one); every layer's weights and biases must have moved."""
    rng = np.random.default_rng(seed)
    lower, upper = network.input_bounds or (-np.ones(network.n_inputs), np.ones(network.n_inputs))
    X = rng.uniform(lower, upper, size=(96, network.n_inputs))
    y = rng.normal(size=(96, network.n_outputs))
    result = Trainer(network, X, y, epochs=epochs, batch_size=16, lr=1e-2, seed=seed).fit()
    return result.network


def assert_same_graph(original, written) -> None:
    """The same nodes (op types in order, names, attributes, inputs, outputs), opset, graph
    input and output, and initializer names, shapes and types; and the file's size, less its
    metadata, within a few percent of the original's (with its external data file, which
    torch's dynamo exporter writes)."""
    first, second = (onnx.load(os.fspath(p)) for p in (original, written))
    for a, b in zip(first.graph.node, second.graph.node, strict=True):
        assert (a.op_type, a.name, list(a.input), list(a.output)) == (
            b.op_type,
            b.name,
            list(b.input),
            list(b.output),
        )
        assert a.attribute == b.attribute
    assert list(first.opset_import) == list(second.opset_import)
    assert list(first.graph.input) == list(second.graph.input)
    assert list(first.graph.output) == list(second.graph.output)
    shapes = [
        [(t.name, list(t.dims), t.data_type) for t in m.graph.initializer] for m in (first, second)
    ]
    assert shapes[0] == shapes[1]
    size = os.path.getsize(original) + sum(map(os.path.getsize, external_data_files(original)))
    metadata = sum(len(p.SerializeToString()) + 2 for p in second.metadata_props)
    assert abs(os.path.getsize(written) - metadata - size) < 0.05 * size


def assert_reads_back_as(network: Network, path) -> Network:
    """The file reads back into ``network``'s layers (within float32 rounding) with the same
    ties of weights and biases, and onnxruntime runs it to the network's outputs."""
    back = read_onnx(path)
    assert back.widths == network.widths and back.origin is not None
    for mine, read in zip(network.layers, back.layers):
        scale = max(1.0, float(np.max(np.abs(mine.entries))))
        np.testing.assert_allclose(read.entries, mine.entries, rtol=1e-5, atol=1e-6 * scale)
        np.testing.assert_allclose(read.bias, mine.bias, rtol=1e-5, atol=1e-6 * scale)
        for tie, other in ((mine.tie, read.tie), (mine.bias_tie, read.bias_tie)):
            assert (tie is None) == (other is None)
            if tie is not None:
                np.testing.assert_array_equal(other.index, tie.index)
                np.testing.assert_allclose(other.mult, tie.mult, rtol=1e-12)
                np.testing.assert_allclose(other.offset, tie.offset, rtol=1e-9, atol=1e-12)
    assert_ties_consistent(back)
    X = RNG.uniform(-1, 1, size=(16, network.n_inputs)).astype(np.float32)
    expected = network.forward(X)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(run_onnxruntime(path, X), expected, rtol=1e-5, atol=1e-5 * scale)
    return back


def assert_moved(start: Network, network: Network) -> None:
    """Training changed every weight entry and bias entry that is not fixed (the max
    trees' layers are all fixed)."""
    for before, after in zip(start.layers, network.layers):
        for tie, old, new in (
            (before.tie, before.entries, after.entries),
            (before.bias_tie, before.bias, after.bias),
        ):
            free = np.ones(old.shape, bool) if tie is None else tie.tied
            assert not free.any() or not np.allclose(old[free], new[free])


# ====================================================================== graphs
def batchnorm_residual_graph() -> onnx.ModelProto:
    """Conv (with bias) + BatchNormalization + Relu, then a Conv without bias whose output is
    added to the Relu's (a residual), Relu, MatMul + Add (a bias) on a 2x5x5 float32 input."""
    channels = 2
    inits = {
        "k1": RNG.normal(size=(channels, 2, 3, 3)) * 0.4,
        "b1": RNG.normal(size=channels) * 0.1,
        "gamma": RNG.uniform(0.5, 1.5, channels),
        "beta": RNG.normal(size=channels) * 0.1,
        "mean": RNG.normal(size=channels) * 0.1,
        "var": RNG.uniform(0.5, 1.5, channels),
        "k2": RNG.normal(size=(channels, channels, 3, 3)) * 0.3,
        "w": RNG.normal(size=(channels * 25, 3)) * 0.2,
        "b": RNG.normal(size=3) * 0.1,
        "flat": np.array([-1, channels * 25], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "k1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["n1"], name="bn"
        ),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "k2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("Reshape", ["r2", "flat"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w"], ["m"], name="dense"),
        helper.make_node("Add", ["m", "b"], ["y"], name="bias"),
    ]
    return model(nodes, inits, (2, 5, 5), F32, out_rank=2)


def torch_cnn():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 3),
    )


# ====================================================================== reading
def test_biases_are_read_as_their_initializers_parameters():
    network = read_onnx(batchnorm_residual_graph())

    first, second, last = network.layers
    # the conv's bias, scaled and shifted by the batch normalisation: one parameter per
    # channel at its 25 positions, with the normalisation's factor and shift
    assert first.bias_tie.n_params == 2 and first.bias_tie.tied.all()
    channel = np.repeat([0, 1], 25)
    np.testing.assert_array_equal(first.bias_tie.index, channel)
    assert len(np.unique(first.bias_tie.offset)) == 2 and np.any(first.bias_tie.mult != 1.0)
    # the second conv has no bias: its biases are fixed (the residual adds the first
    # layer's outputs, not a constant)
    assert second.bias_tie.n_params == 0 and not second.bias_tie.tied.any()
    # the residual's identity adds 1 to the kernel's centre on the diagonal: still that
    # kernel entry's parameter, offset by 1, not a free entry
    tied_at_one = second.tie.tied & (second.tie.offset == 1.0)
    assert np.count_nonzero(tied_at_one) == 2 * 25
    # the bias added after the MatMul is its own parameter per output: no tie needed
    assert last.bias_tie is None
    assert_ties_consistent(network)


@pytest.mark.parametrize(
    "op, inputs", [("Add", ["b", "m"]), ("Sub", ["m", "b"]), ("Sub", ["b", "m"])]
)
def test_an_initializer_added_to_a_matmul_is_its_trainable_bias(tmp_path, op, inputs):
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node(op, inputs, ["z"]),
        helper.make_node("Relu", ["z"], ["r"]),
        helper.make_node("Conv", ["r", "k"], ["y"]),  # a tied layer, so "auto" keeps the graph
    ]
    inits = {"w": RNG.normal(size=(3, 4)), "b": RNG.normal(size=4), "k": RNG.normal(size=(1, 2, 2))}
    network = read_onnx(model(nodes, inits, (2, 3), F32))
    sign = -1.0 if inputs == ["m", "b"] else 1.0
    np.testing.assert_array_equal(network.origin.layers[0].bias.mult, np.tile([sign], 8))
    refined = trained(network)
    assert_moved(network, refined)

    write_onnx(refined, tmp_path / "m.onnx")

    assert_reads_back_as(refined, tmp_path / "m.onnx")


# ====================================================================== writing the graph
def test_a_trained_cnn_with_batchnorm_and_a_residual_keeps_its_graph(tmp_path):
    source = tmp_path / "cnn.onnx"
    onnx.save(batchnorm_residual_graph(), source)
    network = read_onnx(source)
    refined = trained(network)
    assert_moved(network, refined)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_onnx(refined, tmp_path / "refined.onnx", graph="original")

    assert_same_graph(source, tmp_path / "refined.onnx")
    assert_reads_back_as(refined, tmp_path / "refined.onnx")
    written = onnx.load(tmp_path / "refined.onnx").graph.initializer
    bn = {t.name: numpy_helper.to_array(t) for t in written if t.name in ("gamma", "mean", "var")}
    for t in onnx.load(source).graph.initializer:  # the normalisation is not retrained
        if t.name in bn:
            np.testing.assert_array_equal(bn[t.name], numpy_helper.to_array(t))


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_a_trained_torch_cnn_keeps_its_graph(tmp_path, dynamo):
    source = tmp_path / "cnn.onnx"
    export(torch_cnn(), source, dynamo, input_shape=(1, 8, 8))
    network = read_onnx(source)
    refined = trained(network)
    assert_moved(network, refined)

    write_onnx(refined, tmp_path / "refined.onnx")  # "auto": a CNN keeps its graph

    assert_same_graph(source, tmp_path / "refined.onnx")
    assert_reads_back_as(refined, tmp_path / "refined.onnx")


@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_the_storage_of_the_layers_does_not_matter(tmp_path, storage):
    network = trained(read_onnx(batchnorm_residual_graph()), epochs=1)
    stored = network.in_storage(storage)
    assert [layer.is_sparse for layer in stored.layers] == [storage == "sparse"] * 3

    write_onnx(stored, tmp_path / "s.onnx", graph="original")

    assert_reads_back_as(network, tmp_path / "s.onnx")


def test_a_sparse_layer_without_the_zeros_the_graph_stored_maps_them_to_zero():
    network = trained(read_onnx(batchnorm_residual_graph()), epochs=1)
    last = network.layers[-1]
    weight = last.weight.copy()
    weight[0, :5] = 0.0  # entries of 'w' the sparse pattern below leaves out
    pruned = Layer(to_sparse(weight), last.bias, last.activation, bias_tie=last.bias_tie)
    assert pruned.is_sparse and pruned.weight.nnz == weight.size - 5

    written = write_onnx(network.with_layers([*network.layers[:-1], pruned]), graph="original")

    w = numpy_helper.to_array(next(t for t in written.graph.initializer if t.name == "w"))
    np.testing.assert_array_equal(w.T[0, :5], 0.0)
    np.testing.assert_allclose(w.T[1:], weight[1:], rtol=1e-6)


def test_an_untrained_network_is_written_bit_for_bit(tmp_path):
    source = batchnorm_residual_graph()

    written = write_onnx(read_onnx(source), graph="original")

    for a, b in zip(source.graph.initializer, written.graph.initializer, strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


def test_auto_writes_a_dense_mlp_as_before(tmp_path):
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ]
    inits = {"w1": RNG.normal(size=(5, 3)), "b1": RNG.normal(size=5)}
    inits |= {"w2": RNG.normal(size=(2, 5)), "b2": RNG.normal(size=2)}
    network = trained(read_onnx(model(nodes, inits, (3,), F32, out_rank=2)))
    assert network.origin is not None  # it was read from a graph, but has no structure

    auto, dense = write_onnx(network), write_onnx(network, graph="dense")

    assert auto.SerializeToString() == dense.SerializeToString()
    assert [n.op_type for n in auto.graph.node] == ["Gemm", "Relu", "Gemm"]
    assert read_onnx(dense).origin is None  # the package's dense file is no one's origin


def test_bounds_are_stored_beside_the_graph_only_for_the_weights_it_holds(tmp_path):
    network = trained(read_onnx(batchnorm_residual_graph()), epochs=1)
    box = [(-1.0, 1.0)] * network.n_inputs

    with pytest.raises(InvalidNetworkError, match=r"layer 0: the graph's initializers round"):
        write_onnx(network, graph="original", bounds=interval_bounds(network, box))
    held = as_written(network, "float32")  # the network as the graph holds it
    bounds = interval_bounds(held, box)
    write_onnx(held, tmp_path / "b.onnx", graph="original", bounds=bounds)

    assert onnx.load(tmp_path / "b.onnx").graph.node[0].op_type == "Conv"
    np.testing.assert_array_equal(
        read_stored_bounds(tmp_path / "b.onnx").upper[-1], bounds.upper[-1]
    )


def test_a_float64_cnn_onnxruntime_cannot_run_is_kept_only_when_asked_for():
    nodes = [
        helper.make_node("Conv", ["x", "k1"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "k2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    kernels = {k: RNG.normal(size=(1, 1, 2, 2)) for k in ("k1", "k2")}
    network = trained(read_onnx(model(nodes, kernels, (1, 3, 3))))

    with pytest.warns(UserWarning, match="onnxruntime cannot run the graph to check it"):
        assert write_onnx(network, dtype="float64").graph.name == "nnrelax_network"
    original = write_onnx(network, graph="original")  # checked as it reads back

    assert original.graph.node[0].op_type == "Conv"
    back = read_onnx(original)
    np.testing.assert_allclose(back.layers[0].entries, network.layers[0].entries, rtol=1e-12)


# ====================================================================== what does not map
def free_entries_graph() -> onnx.ModelProto:
    """Two Gemms without an activation between them (their product's entries are free)
    beside a copy of the input (fixed entries), then Relu and a Gemm."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1),
        helper.make_node("Gemm", ["h", "w2"], ["g"], transB=1),
        helper.make_node("Concat", ["g", "x"], ["c"], axis=1),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Gemm", ["r", "w3"], ["y"], transB=1),
    ]
    inits = {"w1": RNG.normal(size=(4, 3)), "w2": RNG.normal(size=(2, 4))}
    inits["w3"] = RNG.normal(size=(1, 5))
    return model(nodes, inits, (3,), F32, out_rank=2)


def shared_weight_graph() -> onnx.ModelProto:
    """One initializer used by the Gemms of two layers."""
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["s"]),
        helper.make_node("Gemm", ["s", "v"], ["y"], transB=1),
    ]
    inits = {"w": RNG.normal(size=(3, 3)), "v": RNG.normal(size=(1, 3))}
    return model(nodes, inits, (3,), F32, out_rank=2)


def test_moved_free_entries_are_refused_naming_the_layer(tmp_path):
    network = read_onnx(free_entries_graph())
    first = network.layers[0]  # its tie: the free entries, each its own parameter
    theta = first.tie.parameters(first.entries) + 0.1
    moved = network.with_layers(
        [first.with_tied_parameters(theta, first.bias), *network.layers[1:]]
    )

    with pytest.raises(InvalidNetworkError, match=r"layer 0: 6 weight entries that the graph "
                       r"computes from several parameters moved"):  # fmt: skip
        write_onnx(moved, tmp_path / "m.onnx", graph="original")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.warns(UserWarning, match="written as dense Gemm layers.*layer 0: 6 weight"):
        dense = write_onnx(moved, tmp_path / "m.onnx", dtype="float64")  # "auto" falls back
    assert dense.graph.name == "nnrelax_network" and read_onnx(tmp_path / "m.onnx") == moved


def test_a_parameter_trained_apart_in_two_layers_is_refused_naming_it():
    network = trained(read_onnx(shared_weight_graph()), epochs=1)

    with pytest.raises(InvalidNetworkError, match=r"layer 0: 9 weight entries disagree .*'w'\["):
        write_onnx(network, graph="original")
    assert write_onnx(network).graph.name == "nnrelax_network"  # no structure: dense, quietly


def test_a_bias_made_of_two_initializers_is_free_and_refused_once_moved():
    nodes = [
        helper.make_node("Conv", ["x", "k", "b"], ["c"]),
        helper.make_node("Add", ["c", "shift"], ["y"]),  # a second bias on the conv's
    ]
    inits = {"k": RNG.normal(size=(2, 1, 2, 2)), "b": RNG.normal(size=2)}
    inits["shift"] = RNG.normal(size=(2, 1, 1))
    network = read_onnx(model(nodes, inits, (1, 3, 3), F32))
    (layer,) = network.layers
    assert layer.bias_tie is None  # every entry free: its own parameter
    moved = network.with_layers([layer.with_weights(layer.weight, layer.bias + 0.1)])

    write_onnx(network, graph="original")  # unmoved: fine
    with pytest.raises(InvalidNetworkError, match=r"layer 0: 8 bias entries that the graph "
                       r"computes from several parameters moved"):  # fmt: skip
        write_onnx(moved, graph="original")


def test_original_needs_a_network_read_from_a_graph():
    with pytest.raises(InvalidNetworkError, match="not read from an ONNX graph"):
        write_onnx(Network.mlp([2, 3, 1]), graph="original")
    with pytest.raises(ValueError, match="graph must be one of"):
        write_onnx(Network.mlp([2, 3, 1]), graph="onnx")


# ====================================================================== the refinement loop
def test_a_refinement_checkpoint_of_a_cnn_keeps_its_graph(tmp_path):
    nodes = [
        helper.make_node("Conv", ["x", "k", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["y"], transB=1),
    ]
    inits = {"k": RNG.normal(size=(2, 1, 3, 3)), "b": RNG.normal(size=2) * 0.1}
    inits["w"] = RNG.normal(size=(1, 18)) * 0.3
    source = tmp_path / "cnn.onnx"
    onnx.save(model(nodes, inits, (1, 3, 3), F32, out_rank=2), source)
    X = RNG.uniform(-1, 1, size=(64, 9))

    options = dict(rounds=1, epochs_per_round=2, milp_time_limit=20, progress=False)
    options |= dict(regularizer=BoundWidth(), lam=1e-2)
    result = refine(source, X, X.sum(axis=1), input_bounds=[(-1, 1)] * 9, batch_size=16, **options)

    checkpoint = result.checkpoints[-1]
    assert_same_graph(source, checkpoint)
    assert_reads_back_as(result.network, checkpoint)
