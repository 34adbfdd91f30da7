"""Shared pytest fixtures, and the rule of the ``slow`` marker."""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from tests.support.onnx_graphs import model
from tests.support.torch_export import TORCH_INSTALLED  # noqa: F401  (checks NNRELAX_REQUIRE_TORCH)


@pytest.fixture(autouse=True)
def slow_means_subprocesses_pools_and_signals(request, monkeypatch):
    """The ``slow`` marker means what the README says: the test starts a subprocess, a process
    pool or a dask cluster, or sends a signal.  A test without the marker that does any of
    these fails, naming the marker; ``-m "not slow"`` so leaves exactly the in-process tests."""
    if request.node.get_closest_marker("slow") is not None:
        return

    def refuse(*args, **kwargs):
        raise AssertionError(
            "this test starts a subprocess or process pool, or sends a signal: mark it "
            "@pytest.mark.slow (see the README's Testing section)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    monkeypatch.setattr(os, "kill", refuse)


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
        return model(
            nodes,
            initializers,
            input_shape,
            elem_type,
            opset,
            output_rank,
            input_name=input_name,
            output_name=output_name,
            cast=False,
        )

    return make


@pytest.fixture
def npz_data(tmp_path):
    """A small regression data set (X, y) saved as ``data.npz``; returns its path."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (60, 2))
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=np.sin(X[:, 0]) * X[:, 1])
    return path
