"""Weight ties in an ONNX file's metadata, so that a CNN written as dense layers reads back as
a CNN.

A dense file of :func:`~pyomo_nnrelax.onnx.write_onnx` (a network not written as the graph
it was read from) stores Gemm layers, which the reader sees as free matrices.  Metadata key
``nnrelax.ties`` keeps each tied (or sparse) layer's
:class:`~pyomo_nnrelax.ties.WeightTie` in a form that does not depend on how the layer is
stored: the entries it ties to a parameter or fixes at a nonzero value, as ``rows``,
``cols``, ``index``, ``mult``, ``fixed`` and ``offset`` arrays (every other entry is a fixed
zero), with the layer's ``shape``; one compressed npz, base64-encoded.  On reading, such a
layer keeps its nonzeros and the tie's entries (a tied entry whose value is zero stays
trainable) in the storage :func:`~pyomo_nnrelax.matrices.choose_form` picks, with the tie
aligned to its entries.  Files written before (dense ``index``, ``mult`` and ``fixed``
matrices) are read the same way.  A stored tie replaces the reader's only where the file's
weights follow it; otherwise (weights edited after writing, or a float32 file that rounded
entries a tie relates by factors other than +-1) the ties are dropped with a warning, never
applied to weights they do not describe (``docs/design.md``, "Tied weights").
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
import zipfile

import numpy as np
import onnx

from .. import matrices
from ..errors import InvalidNetworkError
from ..network import Layer, Network
from ..ties import FIXED, WeightTie

TIES_KEY = "nnrelax.ties"


def _listed(layer: Layer) -> dict[str, np.ndarray]:
    """The entries of a layer's tie that are tied or fixed at a nonzero value, with their
    positions; a sparse layer without a tie has one parameter per stored entry."""
    if layer.is_sparse:
        rows, cols = matrices.entry_rows(layer.weight), layer.weight.indices
    else:
        rows, cols = (a.reshape(-1) for a in np.indices(layer.weight.shape))
    tie = layer.tie
    if tie is None:
        tie = WeightTie(np.arange(rows.size), np.ones(rows.size), np.zeros(rows.size))
    index, mult, fixed, offset = (
        a.reshape(-1) for a in (tie.index, tie.mult, tie.fixed, tie.offset)
    )
    keep = (index != FIXED) | (fixed != 0.0)
    return {
        "shape": np.array(layer.weight.shape, dtype=np.int64),
        "rows": rows[keep].astype(np.int32),
        "cols": cols[keep].astype(np.int32),
        "index": index[keep].astype(np.int32),
        "mult": mult[keep],
        "fixed": fixed[keep],
        "offset": offset[keep],
    }


def ties_entry(network: Network) -> dict[str, str]:
    """``{TIES_KEY: text}`` for a network with tied layers, else ``{}``."""
    arrays = {}
    for l, layer in enumerate(network.layers):
        if layer.tie is not None or layer.is_sparse:
            arrays.update({f"{name}{l}": a for name, a in _listed(layer).items()})
    if not arrays:
        return {}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return {TIES_KEY: base64.b64encode(buffer.getvalue()).decode("ascii")}


_FIELDS = ("shape", "rows", "cols", "index", "mult", "fixed", "offset")


def _stored(arrays: dict[str, np.ndarray], l: int) -> dict[str, np.ndarray]:
    """Layer ``l``'s stored entries (also from a file that stored dense matrices); ValueError
    if they are malformed."""
    if f"rows{l}" not in arrays:  # written before: dense index, mult and fixed matrices
        index, mult, fixed = (arrays[f"{name}{l}"] for name in _FIELDS[3:6])
        if index.ndim != 2 or mult.shape != index.shape or fixed.shape != index.shape:
            raise ValueError(f"the tie of layer {l} is not three matrices of one shape")
        at = np.nonzero((index != FIXED) | (fixed != 0.0))
        entries = (a[at] for a in (index, mult, fixed, np.zeros(index.shape)))
        return dict(zip(_FIELDS, (np.array(index.shape), *at, *entries)))
    stored = {name: arrays[f"{name}{l}"] for name in _FIELDS}
    shape, rows, cols = stored["shape"], stored["rows"], stored["cols"]
    keys = rows.astype(np.int64) * (shape[1] if shape.size == 2 else 0) + cols
    if (
        shape.shape != (2,)
        or any(stored[name].shape != rows.shape for name in _FIELDS[2:])
        or np.any((rows < 0) | (rows >= shape[0]) | (cols < 0) | (cols >= shape[1]))
        or np.any(np.diff(keys) <= 0)
    ):
        raise ValueError(f"the tie of layer {l} lists entries out of order or out of range")
    return stored


def _tied_layer(layer: Layer, stored: dict[str, np.ndarray]) -> Layer:
    """``layer`` with the stored tie: its pattern the weight's nonzeros and the tie's entries,
    in the storage ``choose_form`` picks; InvalidNetworkError if the weights do not follow."""
    if tuple(stored["shape"]) != layer.weight.shape:
        raise InvalidNetworkError(
            f"a tie of shape {tuple(stored['shape'])} for a weight of shape {layer.weight.shape}"
        )
    n_in = layer.n_in
    weight = matrices.to_sparse(layer.weight)
    nonzero = matrices.entry_rows(weight) * n_in + weight.indices
    listed = stored["rows"].astype(np.int64) * n_in + stored["cols"]
    keys = np.union1d(nonzero, listed)
    where = np.searchsorted(keys, listed)
    index = np.full(keys.size, FIXED, dtype=np.int64)
    mult, fixed, offset = np.zeros(keys.size), np.zeros(keys.size), np.zeros(keys.size)
    for full, name in ((index, "index"), (mult, "mult"), (fixed, "fixed"), (offset, "offset")):
        full[where] = stored[name]
    values = np.zeros(keys.size)
    values[np.searchsorted(keys, nonzero)] = weight.data
    pattern = matrices.from_entries(weight.shape, keys // n_in, keys % n_in, values)
    tie = WeightTie(index, mult, fixed, offset)
    if tie.n_params == keys.size:  # every entry its own parameter: a sparse layer's pattern
        return Layer(pattern, layer.bias, layer.activation)
    return Layer(pattern, layer.bias, layer.activation, tie).in_storage("auto")


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
            out[l] = _tied_layer(layers[l], _stored(arrays, l))
    except InvalidNetworkError as exc:  # before ValueError, its base class
        why = f"the weights do not follow the ties in metadata '{TIES_KEY}' ({exc})"
    except (binascii.Error, ValueError, OSError, zipfile.BadZipFile, KeyError) as exc:
        why = f"metadata '{TIES_KEY}' cannot be read ({type(exc).__name__}: {exc})"
    else:
        return tuple(out)
    warnings.warn(f"{label}: {why}; the layers are read without ties", stacklevel=3)
    return layers
