"""Load and check an ONNX model from a path or a ``ModelProto``, with errors naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx.external_data_helper import uses_external_data

from ..errors import OnnxImportError

Source = str | os.PathLike | onnx.ModelProto
FLOAT_TYPES = {
    TensorProto.FLOAT: np.float32,
    TensorProto.DOUBLE: np.float64,
    TensorProto.FLOAT16: np.float16,
}


def load_model(source: Source, name_for_errors: str | None = None) -> tuple[onnx.ModelProto, str]:
    """Load and check a model; returns it with the name used in error messages."""
    if isinstance(source, onnx.ModelProto):
        label = name_for_errors or "<ModelProto>"
        tensors = list(source.graph.initializer) + [
            a.t
            for n in source.graph.node
            for a in n.attribute
            if a.type == onnx.AttributeProto.TENSOR
        ]
        if any(uses_external_data(t) for t in tensors):
            raise OnnxImportError(
                f"{label}: the model references external data files that are not loaded; "
                f"pass the .onnx file's path instead of a ModelProto"
            )
        model = source
    elif isinstance(source, (str, os.PathLike)):
        label = name_for_errors or os.fspath(source)
        if os.path.isfile(source) and os.path.getsize(source) == 0:
            raise OnnxImportError(f"{label}: the file is empty, not an ONNX model")
        try:
            model = onnx.load(os.fspath(source), load_external_data=True)
        except FileNotFoundError as exc:
            raise OnnxImportError(f"{label}: file not found ({exc})") from exc
        except Exception as exc:
            raise OnnxImportError(
                f"{label}: not a readable ONNX model ({type(exc).__name__}: {exc})"
            ) from exc
    else:
        raise TypeError(f"source must be a path or an onnx.ModelProto, got {type(source).__name__}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise OnnxImportError(f"{label}: the ONNX checker rejects the model: {exc}") from exc
    except UnicodeDecodeError as exc:  # protobuf keeps malformed strings; the checker decodes them
        raise OnnxImportError(
            f"{label}: the model holds a name or string that is not valid UTF-8 ({exc})"
        ) from exc
    return model, label


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The files holding the weights of the ONNX file ``path`` outside it (torch's exporter
    writes ``model.onnx.data`` beside ``model.onnx``); empty when it has none or cannot be read.
    """
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception:  # an unreadable file has no data files to protect; reading it will fail
        return []
    folder = Path(path).resolve().parent
    tensors = list(model.graph.initializer) + [
        a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
    ]
    locations = {
        entry.value
        for tensor in tensors
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(folder / location for location in locations)
