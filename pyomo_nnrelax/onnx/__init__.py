"""ONNX in and out: the only part of the package that parses or writes ONNX.

:func:`read_onnx` folds a graph into a :class:`~pyomo_nnrelax.network.Network`;
:func:`write_onnx` writes one back (same names and shapes, bounds in metadata);
:func:`run_onnxruntime` is the reference every embedding is checked against.
"""

from .load import Source, load_model
from .read import read_onnx, read_stored_bounds
from .runtime import run_onnxruntime
from .write import build_onnx_model, write_onnx

__all__ = [
    "Source",
    "build_onnx_model",
    "load_model",
    "read_onnx",
    "read_stored_bounds",
    "run_onnxruntime",
    "write_onnx",
]
