"""Deprecated alias of :mod:`pyomo_nnrelax.onnx` (the 0.1 module name), kept so that code
written for it keeps working; import from ``pyomo_nnrelax.onnx`` instead."""

import warnings

from .onnx import build_onnx_model, read_onnx, read_stored_bounds, run_onnxruntime, write_onnx

__all__ = ["build_onnx_model", "read_onnx", "read_stored_bounds", "run_onnxruntime", "write_onnx"]

warnings.warn(
    "pyomo_nnrelax.onnx_io is a deprecated alias: import from pyomo_nnrelax.onnx",
    DeprecationWarning,
    stacklevel=2,
)
