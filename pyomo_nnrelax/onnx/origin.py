"""Where a network's weights came from in the graph it was read from, and back.

The reader numbers the entries of the graph's trainable initializers (the weights and biases
of Gemm, MatMul, Conv and ConvTranspose, :meth:`~.nodes.ReadState.param_ids`) as one vector
``theta``, and every stored weight entry and bias entry of a layer is ``offset + mult *
theta[id]`` (``id >= 0``), fixed (``id == -1``: padding, a skip path, a folded normalisation
without parameters) or free (``id == -2``: made of several parameters, e.g. a pool of a
kernel or two weights multiplied).  :class:`GraphOrigin` keeps that map with the graph
itself, so a trained network can be written back as the same graph with new initializers
(:mod:`.rewrite`); :func:`parameter_values` inverts it, and says which layer does not map
when the network's entries cannot come from one ``theta``: entries of one parameter that
disagree (a parameter shared by two layers, trained apart), or a fixed or free entry that
moved.  Memory grows with the stored entries: per entry its parameter, factor and offset
(20 bytes), and a dense layer's pattern (8 more; a sparse layer shares its weight's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from .. import matrices
from ..errors import InvalidNetworkError
from ..network import Layer, Network
from .tags import FIXED, FREE

#: The name :func:`~.write.build_onnx_model` gives a graph of dense layers, which has no
#: origin of its own (a network read from it takes one from a template, ``with_structure_of``).
DENSE_GRAPH_NAME = "nnrelax_network"

#: The producer name of the files this package writes as dense layers.
PRODUCER = "pyomo_nnrelax"

#: Entries of one parameter agree, and fixed or free entries kept their read values, within
#: this share of their size (plus a thousandth of it of the layer's largest entry): float32
#: rounding passes, training does not.
AGREEMENT = 1e-6

#: A parameter whose entries its read value explains within this share keeps that value
#: bit for bit (the reader's folding rounds at about 1e-16).
UNMOVED = 1e-13


class OriginMismatchError(InvalidNetworkError):
    """A network's weights cannot be written as the initializers of the graph it was read
    from (the message names the layer and what does not map)."""


@dataclass(frozen=True, eq=False)
class EntryOrigin:
    """Per entry (of a weight's stored pattern, or of a bias): the global parameter ``ids``
    (:data:`FIXED`, :data:`FREE` or ``k >= 0``), and ``mult``, ``offset`` with ``entry ==
    offset + mult * theta[k]``; a fixed or free entry has its read value as ``offset``."""

    ids: np.ndarray
    mult: np.ndarray
    offset: np.ndarray

    @classmethod
    def of(cls, values, src, mult, read_values: Callable[[np.ndarray], np.ndarray]):
        """From entries ``values`` read with tags ``(src, mult)`` (:mod:`.tags`): the offset
        of a tied entry is what its parameter's read value leaves (below :data:`UNMOVED` of
        the entry, rounding: zero)."""
        tied = src >= 0
        part = np.zeros(np.shape(values))
        part[tied] = mult[tied] * read_values(src[tied])
        offset = values - part
        tiny = np.abs(offset) <= UNMOVED * np.maximum(np.abs(values), np.abs(part))
        offset = np.where(tied & tiny, 0.0, offset)
        ids = np.asarray(src, dtype=np.int32 if src.max(initial=0) < 2**31 else np.int64)
        return cls(ids, np.where(tied, mult, 0.0), offset)


@dataclass(frozen=True, eq=False)
class LayerOrigin:
    """Where one layer's entries came from: its ``shape``, the CSR pattern (``indptr``,
    ``indices``) of the entries the reader stored (every other entry is a fixed zero), their
    origin and the bias's, and which neurons are ReLUs."""

    shape: tuple[int, int]
    indptr: np.ndarray
    indices: np.ndarray
    weight: EntryOrigin
    bias: EntryOrigin
    relu_mask: np.ndarray


@dataclass(frozen=True)
class ParamBlock:
    """A trainable initializer: its ``name``, its first global parameter ``start``, its
    ``shape`` and its ONNX element type."""

    name: str
    start: int
    shape: tuple[int, ...]
    elem_type: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class GraphOrigin:
    """The graph a network was read from (``model``: the serialized ``ModelProto``, which
    holds the weights once), its trainable initializers in global order, each layer's
    :class:`LayerOrigin` and the element type of the graph's input."""

    model: bytes
    blocks: tuple[ParamBlock, ...]
    layers: tuple[LayerOrigin, ...]
    input_type: int

    def proto(self) -> onnx.ModelProto:
        """A fresh copy of the graph as read."""
        return onnx.load_from_string(self.model)

    def where(self, k: int) -> str:
        """Parameter ``k`` as ``'name'[i, j, ...]``."""
        block = self.blocks[np.searchsorted([b.start for b in self.blocks], k, "right") - 1]
        at = np.unravel_index(k - block.start, block.shape)
        return f"'{block.name}'[{', '.join(str(int(i)) for i in at)}]"


def graph_origin(
    model: onnx.ModelProto, params: dict, layers: list, input_type: int
) -> GraphOrigin | None:
    """The origin of a network read from ``model`` with the reader's trainable initializers
    ``params`` (name -> (start, shape)), layer origins and the input's element type; None
    for a graph of dense layers this package wrote, or one too large to keep as one message
    (2 GB)."""
    if model.graph.name == DENSE_GRAPH_NAME and model.producer_name == PRODUCER:
        return None
    try:
        data = model.SerializeToString()
    except ValueError:
        return None
    types = {t.name: t.data_type for t in model.graph.initializer}
    blocks = [ParamBlock(name, *params[name], types[name]) for name in params]
    blocks = tuple(sorted(blocks, key=lambda b: b.start))
    return GraphOrigin(data, blocks, tuple(layers), input_type)


def _pattern_values(l: int, layer: Layer, origin: LayerOrigin) -> np.ndarray:
    """The layer's weight at the read pattern; an entry outside it must be zero."""
    weight, n_in = layer.weight, origin.shape[1]
    rows = np.repeat(np.arange(origin.shape[0]), np.diff(origin.indptr))
    if not layer.is_sparse:
        values = weight[rows, origin.indices]
        outside = np.count_nonzero(weight) - np.count_nonzero(values)
    elif np.array_equal(weight.indptr, origin.indptr) and np.array_equal(
        weight.indices, origin.indices
    ):
        return weight.data
    else:  # another pattern (e.g. the layer moved to dense storage and back)
        keys = matrices.entry_rows(weight) * n_in + weight.indices
        wanted = rows * n_in + origin.indices
        at = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
        found = (keys.size > 0) & (keys[at] == wanted)
        values = np.where(found, weight.data[at] if keys.size else 0.0, 0.0)
        outside = np.count_nonzero(weight.data[~np.isin(keys, wanted)])
    if outside:
        raise OriginMismatchError(
            f"layer {l}: {outside} weight entries are nonzero where the graph it was read from "
            "has none"
        )
    return values


def _check_shapes(network: Network, origin: GraphOrigin) -> None:
    if len(network.layers) != len(origin.layers):
        raise OriginMismatchError(
            f"the network has {len(network.layers)} layers, the graph it was read from "
            f"{len(origin.layers)}"
        )
    for l, (layer, read) in enumerate(zip(network.layers, origin.layers)):
        if layer.weight.shape != read.shape:
            raise OriginMismatchError(
                f"layer {l}: weight of shape {layer.weight.shape}, the graph gives {read.shape}"
            )
        if not np.array_equal(layer.relu_mask, read.relu_mask):
            raise OriginMismatchError(f"layer {l}: its ReLU neurons differ from the graph's")


def _tolerance(values: np.ndarray, scale: float) -> np.ndarray:
    return AGREEMENT * (np.abs(values) + 1e-3 * scale)


def _check_unmoved(l: int, what: str, values, entries: EntryOrigin, tolerance) -> None:
    """Raise unless the layer's fixed and free entries kept their read values."""
    for kind, why in ((FIXED, "fixes"), (FREE, "computes from several parameters")):
        at = entries.ids == kind
        moved = np.abs(values[at] - entries.offset[at]) > tolerance[at]
        if moved.any():
            diff = float(np.max(np.abs(values[at] - entries.offset[at])))
            raise OriginMismatchError(
                f"layer {l}: {int(moved.sum())} {what} entries that the graph {why} moved from "
                f"their read values (by up to {diff:.3g}), which no initializer can hold"
            )


def _tied_terms(network: Network, origin: GraphOrigin) -> list[tuple]:
    """Per layer and part (weight, bias): ``(l, what, values, entries, tolerance)``, the fixed
    and free entries checked."""
    terms = []
    for l, (layer, read) in enumerate(zip(network.layers, origin.layers)):
        weight = _pattern_values(l, layer, read)
        scale = max(float(np.max(np.abs(weight), initial=0.0)), float(np.max(np.abs(layer.bias))))
        parts = (("weight", weight, read.weight), ("bias", layer.bias, read.bias))
        for what, values, entries in parts:
            tolerance = _tolerance(values, scale)
            _check_unmoved(l, what, values, entries, tolerance)
            terms.append((l, what, values, entries, tolerance))
    return terms


def _tied(terms: list[tuple]) -> list[np.ndarray]:
    """``ids, mult, offset, values`` of the entries of ``terms`` that hold a parameter."""
    parts = [(e, values, e.ids >= 0) for _, _, values, e, _ in terms]
    return [
        np.concatenate([e.ids[at] for e, _, at in parts]),
        np.concatenate([e.mult[at] for e, _, at in parts]),
        np.concatenate([e.offset[at] for e, _, at in parts]),
        np.concatenate([values[at] for _, values, at in parts]),
    ]


def parameter_values(network: Network, origin: GraphOrigin, read: np.ndarray) -> np.ndarray:
    """The graph's parameters ``theta`` that give ``network``'s entries, from the values
    ``read`` in the graph: a parameter on which no entry depends, or whose entries its read
    value explains (within :data:`UNMOVED`), keeps it; another gets the least-squares value
    of its entries, which must agree (within :data:`AGREEMENT`).

    Raises :class:`OriginMismatchError` naming the layer and what does not map.
    """
    _check_shapes(network, origin)
    terms = _tied_terms(network, origin)
    ids, mult, offset, values = _tied(terms)
    n = read.size
    weights = np.bincount(ids, mult * mult, minlength=n)
    fitted = np.bincount(ids, mult * (values - offset), minlength=n) / np.where(weights, weights, 1)
    residual = np.abs(offset + mult * read[ids] - values)
    explained = residual <= UNMOVED * (np.abs(values) + np.abs(offset))
    kept = np.bincount(ids, ~explained, minlength=n) == 0
    theta = np.where(kept | (weights == 0), read, fitted)
    for l, what, values, entries, tolerance in terms:
        at = entries.ids >= 0
        k = entries.ids[at]
        rebuilt = entries.offset[at] + entries.mult[at] * theta[k]
        wrong = np.abs(rebuilt - values[at]) > tolerance[at]
        if wrong.any():
            raise OriginMismatchError(
                f"layer {l}: {int(wrong.sum())} {what} entries disagree with others of the same "
                f"parameter (e.g. {origin.where(int(k[np.argmax(wrong)]))}): entries of one "
                "initializer were trained apart (in two layers, or without the layer's tie)"
            )
    return theta
