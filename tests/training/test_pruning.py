"""Pruning of tiny weights (Xiao et al. 2019): entries below the threshold become zero and the
others stay as they are, a sparse layer keeps its pattern, a tied layer prunes whole
parameters so its tie stays consistent, and a pruned CNN written back to its own ONNX graph
runs in onnxruntime as the package computes it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from pyomo_nnrelax import Layer, Network, WeightTie, read_onnx, run_onnxruntime, write_onnx
from pyomo_nnrelax.matrices import from_entries, to_dense
from pyomo_nnrelax.training import prune
from tests.support.onnx_graphs import F32, assert_ties_consistent, model

THRESHOLD = 0.05


def cnn_file(tmp_path):
    """A float32 Conv(1->4, 3x3, stride 2, pad 1) - Relu - Flatten - Gemm(36->3) file whose
    weights straddle THRESHOLD, read back as a network (sparse, tied convolution)."""
    rng = np.random.default_rng(5)
    kernel = rng.normal(0, 0.1, (4, 1, 3, 3))
    kernel[0, 0, 0, :] = [0.01, -0.02, 0.049]  # some certainly below the threshold
    nodes = [
        helper.make_node("Conv", ["x", "k", "c"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
    ]
    inits = {"k": kernel, "c": rng.normal(0, 0.1, 4), "w": rng.normal(0, 0.1, (3, 36)),
             "b": rng.normal(0, 0.1, 3)}  # fmt: skip
    path = tmp_path / "cnn.onnx"
    path.write_bytes(model(nodes, inits, (1, 6, 6), F32, out_rank=2).SerializeToString())
    return path, read_onnx(path)


def _inputs(n: int = 20) -> np.ndarray:
    return np.random.default_rng(1).uniform(0.0, 1.0, (n, 1, 6, 6))


def test_entries_below_the_threshold_are_zero_and_the_others_unchanged(tmp_path):
    _, net = cnn_file(tmp_path)
    pruned = prune(net, THRESHOLD)
    assert net.layers[0].tie is not None and net.layers[0].is_sparse
    for before, after in zip(net.layers, pruned.layers):
        small = np.abs(before.entries) < THRESHOLD
        assert small.any() and not small.all()
        np.testing.assert_array_equal(after.entries[small], 0.0)
        np.testing.assert_array_equal(after.entries[~small], before.entries[~small])
        np.testing.assert_array_equal(after.bias, before.bias)  # biases are not pruned


def test_a_pruned_layer_keeps_its_storage_and_its_ties(tmp_path):
    _, net = cnn_file(tmp_path)
    pruned = prune(net, THRESHOLD)
    conv, before = pruned.layers[0], net.layers[0]
    assert conv.is_sparse and conv.weight.nnz == before.weight.nnz  # pattern kept
    np.testing.assert_array_equal(conv.weight.indices, before.weight.indices)
    assert conv.tie is before.tie and conv.bias_tie is before.bias_tie
    assert_ties_consistent(pruned)
    theta = conv.tie.parameters(conv.entries)
    kernel = before.tie.parameters(before.entries)
    np.testing.assert_array_equal(theta, np.where(np.abs(kernel) < THRESHOLD, 0.0, kernel))
    assert pruned.origin is net.origin and pruned.input_shape == net.input_shape


def test_a_pruned_cnn_reproduces_onnxruntime_after_a_round_trip(tmp_path):
    _, net = cnn_file(tmp_path)
    pruned = prune(net, THRESHOLD)
    out = tmp_path / "pruned.onnx"
    write_onnx(pruned, out)
    X = _inputs()
    np.testing.assert_allclose(run_onnxruntime(out, X), pruned.forward(X), atol=1e-6)
    back = read_onnx(out)
    np.testing.assert_allclose(back.forward(X), pruned.forward(X), atol=1e-6)
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Conv", "Relu", "Flatten", "Gemm"]
    for a, b in zip(back.layers, pruned.layers):
        np.testing.assert_array_equal(a.entries == 0.0, b.entries == 0.0)


def test_a_tied_parameter_is_pruned_only_when_all_its_entries_are_small():
    # theta = [1e-3, 0.5]; parameter 0 appears with factors 1 and 10 (entries 1e-3 and 1e-2)
    tie = WeightTie(np.array([[0, 0], [1, -1]]), np.array([[1.0, 10.0], [1.0, 0.0]]),
                    np.array([[0.0, 0.0], [0.0, 1.0]]))  # fmt: skip
    layer = Layer(tie.weight(np.array([1e-3, 0.5])), np.zeros(2), "relu", tie=tie)
    net = Network((layer, Layer(np.ones((1, 2)), np.zeros(1), "linear")))
    kept = prune(net, 5e-3).layers[0]  # 1e-2 is above: the parameter stays
    np.testing.assert_array_equal(kept.weight, layer.weight)
    gone = prune(net, 0.02).layers[0]
    np.testing.assert_array_equal(gone.weight, [[0.0, 0.0], [0.5, 1.0]])  # fixed 1 kept
    gone.tie.check(gone.entries, "pruned")


def test_a_sparse_untied_layer_keeps_its_pattern():
    weight = from_entries((2, 3), [0, 0, 1], [0, 2, 1], [0.3, -1e-3, 2e-3])
    net = Network((Layer(weight, np.zeros(2), "linear"),))
    pruned = prune(net, 0.01).layers[0]
    assert pruned.is_sparse and pruned.weight.nnz == 3
    np.testing.assert_array_equal(to_dense(pruned.weight), [[0.3, 0, 0], [0, 0, 0]])


def test_threshold_zero_prunes_nothing(tmp_path):
    _, net = cnn_file(tmp_path)
    assert prune(net, 0.0) == net


@pytest.mark.parametrize("threshold", [-0.1, float("nan"), float("inf"), "0.1", True, None])
def test_a_bad_threshold_raises(tmp_path, threshold):
    _, net = cnn_file(tmp_path)
    with pytest.raises(ValueError, match="threshold"):
        prune(net, threshold)
