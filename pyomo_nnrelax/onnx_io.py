"""Deprecated alias of :mod:`pyomo_nnrelax.onnx` (the 0.1 module name), kept so that code
written for it keeps working; import from ``pyomo_nnrelax.onnx`` instead."""

from .onnx import build_onnx_model, read_onnx, read_stored_bounds, run_onnxruntime, write_onnx

__all__ = ["build_onnx_model", "read_onnx", "read_stored_bounds", "run_onnxruntime", "write_onnx"]
