"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
if os.environ.get("NNRELAX_REQUIRE_TORCH") == "1" and not TORCH_INSTALLED:
    raise RuntimeError("NNRELAX_REQUIRE_TORCH=1 but torch is not installed: its tests would skip")
requires_torch = pytest.mark.skipif(
    not TORCH_INSTALLED, reason="torch is not installed (pip install -e '.[torch]')"
)
"""Tests of torch's exporters: torch is an optional extra; CI sets NNRELAX_REQUIRE_TORCH=1 so
that a failed torch install fails the run instead of skipping them."""


@pytest.fixture
def make_onnx_model() -> Callable[..., onnx.ModelProto]:
    """Factory building a small ONNX model by hand from nodes and initializers.

    ``make(nodes, initializers={name: array}, input_shape=(3,), opset=17, elem_type=DOUBLE,
    input_name="x", output_name="y", output_rank=2)`` gives a model with one input of
    shape ``("batch", *input_shape)`` and one output of the given rank with unknown dims.
    Initializers keep their numpy dtype (float64 for exact comparisons, int64 for shapes).
    """

    def make(
        nodes: Sequence[onnx.NodeProto],
        initializers: Mapping[str, np.ndarray] | None = None,
        input_shape: Sequence[int] = (3,),
        opset: int = 17,
        elem_type: int = TensorProto.DOUBLE,
        input_name: str = "x",
        output_name: str = "y",
        output_rank: int = 2,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            list(nodes),
            "test_graph",
            [helper.make_tensor_value_info(input_name, elem_type, ["batch", *input_shape])],
            [helper.make_tensor_value_info(output_name, elem_type, [None] * output_rank)],
            initializer=[
                numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()
            ],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    return make


@pytest.fixture
def npz_data(tmp_path):
    """A small regression data set (X, y) saved as ``data.npz``; returns its path."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (60, 2))
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=np.sin(X[:, 0]) * X[:, 1])
    return path
