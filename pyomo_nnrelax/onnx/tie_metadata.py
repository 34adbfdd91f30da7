"""Weight ties in an ONNX file's metadata, so that a written CNN reads back as a CNN.

:func:`~pyomo_nnrelax.onnx.write_onnx` stores dense layers (Gemm), which the reader sees as
free matrices.  Metadata key ``nnrelax.ties`` keeps each tied layer's
:class:`~pyomo_nnrelax.ties.WeightTie` (``index``, ``mult``, ``fixed``) as one compressed npz,
base64-encoded.  On reading, a stored tie replaces the reader's only where the file's weights
follow it; otherwise (weights edited after writing, or a float32 file that rounded entries a
tie relates by factors other than +-1) the ties are dropped with a warning, never applied to
weights they do not describe (``docs/design.md``, "Tied weights").
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
import zipfile

import numpy as np
import onnx

from ..errors import InvalidNetworkError
from ..network import Layer, Network
from ..ties import WeightTie

TIES_KEY = "nnrelax.ties"


def ties_entry(network: Network) -> dict[str, str]:
    """``{TIES_KEY: text}`` for a network with tied layers, else ``{}``."""
    arrays = {}
    for l, layer in enumerate(network.layers):
        if layer.tie is not None:
            arrays[f"index{l}"] = layer.tie.index.astype(np.int32)
            arrays[f"mult{l}"] = layer.tie.mult
            arrays[f"fixed{l}"] = layer.tie.fixed
    if not arrays:
        return {}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return {TIES_KEY: base64.b64encode(buffer.getvalue()).decode("ascii")}


def with_stored_ties(model: onnx.ModelProto, layers: tuple[Layer, ...], label: str):
    """``layers`` with the ties stored in ``model``'s metadata, where the weights follow them
    (all or none: a warning says why none were applied)."""
    text = next((p.value for p in model.metadata_props if p.key == TIES_KEY), None)
    if text is None:
        return layers
    try:
        with np.load(io.BytesIO(base64.b64decode(text, validate=True))) as stored:
            arrays = {name: stored[name] for name in stored.files}
        tied = sorted(int(name[len("index") :]) for name in arrays if name.startswith("index"))
        if tied and tied[-1] >= len(layers):
            raise InvalidNetworkError(f"ties for layer {tied[-1]}, the file has {len(layers)}")
        out = list(layers)
        for l in tied:
            tie = WeightTie(arrays[f"index{l}"], arrays[f"mult{l}"], arrays[f"fixed{l}"])
            out[l] = Layer(layers[l].weight, layers[l].bias, layers[l].activation, tie)
    except InvalidNetworkError as exc:  # before ValueError, its base class
        why = f"the weights do not follow the ties in metadata '{TIES_KEY}' ({exc})"
    except (binascii.Error, ValueError, OSError, zipfile.BadZipFile, KeyError) as exc:
        why = f"metadata '{TIES_KEY}' cannot be read ({type(exc).__name__}: {exc})"
    else:
        return tuple(out)
    warnings.warn(f"{label}: {why}; the layers are read without ties", stacklevel=3)
    return layers
