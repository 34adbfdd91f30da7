"""Exporting torch modules to ONNX with either of torch's exporters (torch is an optional
extra: tests that need it carry :data:`requires_torch`)."""

from __future__ import annotations

import importlib.util
import os
import warnings

import pytest

TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
if os.environ.get("NNRELAX_REQUIRE_TORCH") == "1" and not TORCH_INSTALLED:
    raise RuntimeError("NNRELAX_REQUIRE_TORCH=1 but torch is not installed: its tests would skip")
requires_torch = pytest.mark.skipif(
    not TORCH_INSTALLED, reason="torch is not installed (pip install -e '.[torch]')"
)
"""Tests of torch's exporters: CI sets NNRELAX_REQUIRE_TORCH=1 so that a failed torch install
fails the run instead of skipping them."""


def export(
    module,
    path,
    dynamo: bool,
    *,
    input_shape=None,
    example=None,
    dynamic_batch: bool = True,
    opset: int | None = None,
) -> None:
    """Export ``module`` (in eval mode) to ``path`` with input "x" and output "y".

    The example input is ``example``, else two random samples of ``input_shape`` in the
    module's dtype; the batch axis is dynamic unless ``dynamic_batch=False``; ``opset``
    defaults to the exporter's own.
    """
    import torch

    kwargs: dict = {"input_names": ["x"], "output_names": ["y"], "dynamo": dynamo}
    if dynamo:
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        kwargs["verbose"] = False
    elif dynamic_batch:
        kwargs["dynamic_axes"] = {"x": {0: "batch"}, "y": {0: "batch"}}
    if opset is not None:
        kwargs["opset_version"] = opset
    if example is None:
        dtype = next((p.dtype for p in module.parameters()), torch.float32)  # the module's
        example = torch.randn(2, *input_shape, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), **kwargs)


def export_layers(module, input_shape, path, dynamo: bool) -> None:
    """:func:`export` as the layer tests use it: opset 18 with the dynamo exporter, 17 with
    the TorchScript one."""
    export(module, path, dynamo, input_shape=input_shape, opset=18 if dynamo else 17)
