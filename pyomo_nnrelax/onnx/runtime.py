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


def run_onnxruntime(source: Source, X) -> np.ndarray:
    """Run a model with onnxruntime on a batch; returns float64 outputs of shape (n, n_outputs).

    ``X`` may be flat (n, n_features) or shaped (n, *input_shape); it is cast to the model's
    input type.  Models with a fixed batch size are run in chunks of that size.
    """
    import onnxruntime

    if isinstance(source, onnx.ModelProto):
        session = onnxruntime.InferenceSession(
            source.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    else:
        session = onnxruntime.InferenceSession(
            os.fspath(source), providers=["CPUExecutionProvider"]
        )
    meta = session.get_inputs()[0]
    batch, *sample = meta.shape
    X = np.asarray(X)
    X = X.reshape(X.shape[0], *sample).astype(_ORT_DTYPES.get(meta.type, np.float32))
    step = batch if isinstance(batch, int) and batch > 0 else max(len(X), 1)
    outputs = [session.run(None, {meta.name: X[i : i + step]})[0] for i in range(0, len(X), step)]
    return np.concatenate(outputs).reshape(len(X), -1).astype(np.float64)
