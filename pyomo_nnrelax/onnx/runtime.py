"""Run an ONNX model with onnxruntime: the reference every embedding is checked against."""

from __future__ import annotations

import os

import numpy as np
import onnx

from .load import Source

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}


def _session(source: Source | bytes):
    """An onnxruntime session (CPU) of a model, its path or its serialized bytes."""
    import onnxruntime

    if isinstance(source, onnx.ModelProto):
        source = source.SerializeToString()
    model = source if isinstance(source, bytes) else os.fspath(source)
    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def loads_in_onnxruntime(source: Source | bytes) -> bool:
    """Whether onnxruntime has kernels for every node of the model (it has no float64 Conv)."""
    try:
        _session(source)
    except Exception:  # onnxruntime's own types: NotImplemented, Fail, InvalidGraph, ...
        return False
    return True


def run_onnxruntime(source: Source, X) -> np.ndarray:
    """Run a model with onnxruntime on a batch; returns float64 outputs of shape (n, n_outputs).

    ``X`` may be flat (n, n_features) or shaped (n, *input_shape); it is cast to the model's
    input type.  Models with a fixed batch size are run in chunks of that size.
    """
    session = _session(source)
    meta = session.get_inputs()[0]
    batch, *sample = meta.shape
    X = np.asarray(X)
    X = X.reshape(X.shape[0], *sample).astype(_ORT_DTYPES.get(meta.type, np.float32))
    step = batch if isinstance(batch, int) and batch > 0 else max(len(X), 1)
    outputs = [session.run(None, {meta.name: X[i : i + step]})[0] for i in range(0, len(X), step)]
    return np.concatenate(outputs).reshape(len(X), -1).astype(np.float64)
