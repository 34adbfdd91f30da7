"""What the package stores in an ONNX file's metadata: the input box and per-layer bounds.

Two JSON entries of ``metadata_props``: ``nnrelax.input_bounds`` (``{"lower", "upper"}``) and
``nnrelax.bounds`` (a :class:`~pyomo_nnrelax.bounds.NetworkBounds`: method, per-layer lower and
upper pre-activation bounds, the input box they were computed over and ``weights_sha256``,
a fingerprint of the weights they were computed from).  Bounds are only valid for the weights
they were computed from, so they are refused beside weights that the file's float type would
round, and on reading they are refused (:class:`~pyomo_nnrelax.errors.StaleBoundsError`) when
the fingerprint is missing or differs from the file's weights (edited or retrained weights
under copied metadata).  Weight ties are a third entry, kept by :mod:`.tie_metadata`.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx

from .. import matrices
from ..bounds import NetworkBounds
from ..errors import InvalidNetworkError, OnnxImportError, StaleBoundsError
from ..network import Network

INPUT_BOUNDS_KEY = "nnrelax.input_bounds"
BOUNDS_KEY = "nnrelax.bounds"
FINGERPRINT_FIELD = "weights_sha256"


def weights_fingerprint(network: Network, np_dtype=np.float64) -> str:
    """SHA-256 of the network's layers as a file of float type ``np_dtype`` stores them.

    Hashes, in layer order, each layer's activation, weight shape, the positions and float64
    (little-endian) values of its nonzero weights and its biases after rounding to
    ``np_dtype`` (``-0.0`` counted as ``0.0``), so the network read back from the file gives
    the same digest whether its layers are stored dense or sparse.

    >>> net = Network.mlp([2, 3, 1], seed=0)
    >>> weights_fingerprint(net) == weights_fingerprint(Network.mlp([2, 3, 1], seed=0))
    True
    >>> weights_fingerprint(net) == weights_fingerprint(Network.mlp([2, 3, 1], seed=1))
    False
    """
    digest = hashlib.sha256()
    digest.update(f"{len(network.layers)} layers".encode())
    for layer in network.layers:
        digest.update(f"{layer.kind} {layer.weight.shape}".encode())
        if layer.kind == "mixed":
            digest.update(np.packbits(layer.relu_mask).tobytes())
        rows, cols, values = _nonzeros(layer.weight, np_dtype)
        for array in (rows, cols, values, _rounded(layer.bias, np_dtype)):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _rounded(array: np.ndarray, np_dtype) -> np.ndarray:
    """``array`` as a file of ``np_dtype`` stores it, back in little-endian float64."""
    return array.astype(np_dtype).astype("<f8") + 0.0


def _nonzeros(weight, np_dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-major positions (int64) and rounded values of a weight's nonzero entries."""
    if matrices.is_sparse(weight):
        rows, cols = matrices.entry_rows(weight), weight.indices.astype(np.int64)
        values = _rounded(weight.data, np_dtype)
    else:
        values = _rounded(weight, np_dtype)
        rows, cols = (a.astype(np.int64) for a in np.nonzero(values))
        values = values[rows, cols]
    keep = values != 0.0
    return rows[keep].astype("<i8"), cols[keep].astype("<i8"), values[keep]


def _entry(model: onnx.ModelProto, key: str, label: str) -> dict | None:
    """The JSON object stored under ``key``, or None when there is none."""
    entry = next((p.value for p in model.metadata_props if p.key == key), None)
    if entry is None:
        return None
    try:
        data = json.loads(entry)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # bytes if not valid UTF-8
        raise OnnxImportError(f"{label}: metadata '{key}' is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise OnnxImportError(f"{label}: metadata '{key}' must be a JSON object")
    return data


def _arrays(data: dict, names: tuple[str, ...], key: str, label: str) -> list:
    missing = [n for n in names if n not in data]
    if missing:
        raise OnnxImportError(f"{label}: metadata '{key}' lacks {missing}")
    return [data[n] for n in names]


def _floats(value, key: str, label: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise OnnxImportError(f"{label}: metadata '{key}' holds non-numbers ({exc})") from None


def stored_input_box(model: onnx.ModelProto, label: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``(lower, upper)`` input box stored in ``model``, or None."""
    data = _entry(model, INPUT_BOUNDS_KEY, label)
    if data is None:
        return None
    lower, upper = _arrays(data, ("lower", "upper"), INPUT_BOUNDS_KEY, label)
    return _floats(lower, INPUT_BOUNDS_KEY, label), _floats(upper, INPUT_BOUNDS_KEY, label)


def has_stored_bounds(model: onnx.ModelProto) -> bool:
    """Whether ``model`` has per-layer bounds in its metadata."""
    return any(p.key == BOUNDS_KEY for p in model.metadata_props)


def stored_network_bounds(
    model: onnx.ModelProto, label: str, network: Network
) -> NetworkBounds | None:
    """Per-layer bounds stored in ``model``, checked against ``network`` (read from the same
    model); None when there are none."""
    data = _entry(model, BOUNDS_KEY, label)
    if data is None:
        return None
    lower, upper, in_lo, in_hi = _arrays(
        data, ("lower", "upper", "input_lower", "input_upper"), BOUNDS_KEY, label
    )
    if not isinstance(lower, list) or not isinstance(upper, list):
        raise OnnxImportError(f"{label}: metadata '{BOUNDS_KEY}' lower/upper must be lists")
    what = f"{label}: metadata '{BOUNDS_KEY}'"
    arrays = [_floats(v, BOUNDS_KEY, label) for v in (in_lo, in_hi, *lower, *upper)]
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise OnnxImportError(f"{what} holds NaN or infinite bounds")
    try:
        stored = NetworkBounds(
            arrays[0],
            arrays[1],
            tuple(arrays[2 : 2 + len(lower)]),
            tuple(arrays[2 + len(lower) :]),
            str(data.get("method", "unknown")),
        )
    except InvalidNetworkError as exc:
        raise OnnxImportError(f"{what}: {exc}") from None
    check_bounds_fit(stored, network, OnnxImportError, what)
    pairs = [(stored.input_lower, stored.input_upper), *zip(stored.lower, stored.upper)]
    inverted = [i - 1 for i, (lo, hi) in enumerate(pairs) if np.any(lo > hi)]
    if inverted:
        where = ", ".join("the input box" if i < 0 else f"layer {i}" for i in inverted)
        raise OnnxImportError(f"{what} has lower bounds above upper bounds in {where}")
    fingerprint = data.get(FINGERPRINT_FIELD)
    if fingerprint is None:
        raise StaleBoundsError(
            f"{label}: the bounds in metadata '{BOUNDS_KEY}' carry no fingerprint of the weights "
            "they were computed from (written before pyomo-nnrelax stored one), so they cannot "
            "be verified; recompute them (e.g. nnrelax tighten) to store them again"
        )
    if fingerprint != weights_fingerprint(network):
        raise StaleBoundsError(
            f"{label}: the bounds in metadata '{BOUNDS_KEY}' were computed for other weights "
            "(the file's weights changed after they were stored), so they may exclude "
            "reachable values; recompute them (e.g. nnrelax tighten)"
        )
    return stored


def check_bounds_fit(
    bounds: NetworkBounds, network: Network, error: type[Exception], what: str
) -> None:
    """Raise ``error`` unless ``bounds`` has one array per layer of the network's widths."""
    widths = [layer.n_out for layer in network.layers]
    sizes = [np.size(v) for v in bounds.lower]
    if sizes != widths or [np.size(v) for v in bounds.upper] != widths:
        raise error(f"{what} has layer widths {sizes}, the network has {widths}")
    if (
        np.size(bounds.input_lower) != network.n_inputs
        or np.size(bounds.input_upper) != network.n_inputs
    ):
        raise error(
            f"{what} has {np.size(bounds.input_lower)} input bounds, "
            f"the network has {network.n_inputs} inputs"
        )


def _check_bounds_survive_rounding(network: Network, np_dtype) -> None:
    """Refuse to store bounds beside weights that the file's float type would round.

    Bounds are valid for the weights they were computed from; stored next to rounded weights
    they could exclude reachable pre-activations by a rounding error.
    """
    for i, layer in enumerate(network.layers):
        for name, array in (("weight", layer.entries), ("bias", layer.bias)):
            if not np.array_equal(array.astype(np_dtype).astype(np.float64), array):
                raise InvalidNetworkError(
                    f"layer {i} {name} is not exactly representable as {np.dtype(np_dtype).name}, "
                    "so stored bounds could be invalid for the rounded weights; write with "
                    "dtype='float64' (or compute the bounds from the rounded network)"
                )


def metadata_entries(network: Network, bounds: NetworkBounds | None, np_dtype) -> dict[str, str]:
    """The metadata to write beside ``network``'s weights stored as ``np_dtype``."""
    entries = {}
    if network.input_bounds is not None:
        lower, upper = network.input_bounds
        entries[INPUT_BOUNDS_KEY] = json.dumps({"lower": lower.tolist(), "upper": upper.tolist()})
    if bounds is not None:
        check_bounds_fit(bounds, network, InvalidNetworkError, "bounds")
        _check_bounds_survive_rounding(network, np_dtype)
        entries[BOUNDS_KEY] = json.dumps(
            {
                "method": bounds.method,
                "lower": [np.asarray(v, dtype=np.float64).tolist() for v in bounds.lower],
                "upper": [np.asarray(v, dtype=np.float64).tolist() for v in bounds.upper],
                "input_lower": np.asarray(bounds.input_lower, dtype=np.float64).tolist(),
                "input_upper": np.asarray(bounds.input_upper, dtype=np.float64).tolist(),
                FINGERPRINT_FIELD: weights_fingerprint(network, np_dtype),
            }
        )
    return entries
