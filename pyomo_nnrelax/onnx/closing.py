"""Closing a layer: the pending affine map becomes a :class:`~pyomo_nnrelax.network.Layer`
(with the :class:`~pyomo_nnrelax.ties.WeightTie` of its weight and of its bias, and the
:class:`~.origin.LayerOrigin` of its entries) when a nonlinear op is read.

A nonlinear op closes the pending layer (:func:`close_layer`): the layer's rows are the op's
rows followed by every other data value a later node still needs (carried as linear neurons),
and every value becomes a selection of the new layer's outputs.
"""

from __future__ import annotations

from math import prod

import numpy as np

from .. import matrices
from ..network import Layer
from ..ties import WeightTie
from .memory import reserve
from .nodes import ReadState
from .origin import EntryOrigin, LayerOrigin
from .tags import FIXED, FREE
from .values import Affine, concatenate, selection

#: Bytes per entry of a dense layer's tie (index, mult, fixed, offset and what the tie
#: gathers once) and origin (parameter, factor, offset, column), while it is built.
DENSE_TIE_BYTES = 96


def _renumbered(src: np.ndarray, mult: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A tie's ``index`` and ``mult`` from the tags of stored coefficients (see
    :mod:`.tags`): parameters renumbered 0, 1, ... in order of first appearance, each free
    coefficient a parameter of its own, fixed ones -1."""
    used = np.flatnonzero(src != FIXED)
    keys = src[used]
    free = keys == FREE
    keys[free] = keys.max(initial=-1) + 1 + np.arange(int(free.sum()))  # each one its own
    order = np.arange(keys.size)
    first = np.full(keys.max(initial=-1) + 1, keys.size)
    np.minimum.at(first, keys, order)  # where each key first appears
    first_of = first[keys]  # per coefficient, where its key first appears
    rank = np.cumsum(first_of == order) - 1  # keys numbered as they first appear
    index = np.full(src.size, FIXED, dtype=np.int64)
    index[used] = rank[first_of]
    return index, np.where(index != FIXED, np.where(src == FREE, 1.0, mult), 0.0)


def _scattered(shape: tuple[int, int], at: tuple, values: np.ndarray, fill) -> np.ndarray:
    """A dense array of ``shape`` with ``values`` at positions ``at``, ``fill`` elsewhere."""
    out = np.full(shape, fill, dtype=values.dtype)
    out[at] = values
    return out


def _tie(origin: EntryOrigin, fixed: np.ndarray, shape=None, at=None) -> WeightTie | None:
    """The tie of entries of that origin (scattered to a dense ``shape`` at positions ``at``
    when given), or None when every entry is its own parameter."""
    index, mult = _renumbered(origin.ids, origin.mult)
    offset = np.where(origin.ids >= 0, origin.offset, 0.0)
    if shape is not None:
        filled = ((index, FIXED), (mult, 0.0), (offset, 0.0))
        index, mult, offset = (_scattered(shape, at, a, fill) for a, fill in filled)
    if index.size and (index != FIXED).all() and index.max() + 1 == index.size:
        return None
    return WeightTie(index, mult, fixed, offset)


def make_layer(state: ReadState, rows: Affine, activation) -> None:
    """Append to ``state.layers`` the layer whose neurons are the entries of ``rows``
    (flattened), with its ties (and where its entries came from to ``state.origins``).

    The weight holds the stored coefficients, sparse or dense as
    :func:`~pyomo_nnrelax.matrices.choose_form` decides (a convolution sparse, a dense layer
    dense); the tie is shaped like the layer's entries, or None when every entry is its own
    parameter, and the bias's likewise.
    """
    shape = (rows.size, rows.n_in)
    pattern = rows.matrix()
    weights = EntryOrigin.of(rows.vals, *rows.tags(), state.read_values)
    bias = EntryOrigin.of(rows.offset, *rows.offset_tags(), state.read_values)
    weight = matrices.choose_form(pattern)
    if matrices.is_sparse(weight):
        tie = _tie(weights, matrices.entries(weight))
    else:
        what = f"the tie of a dense layer of {shape[0]} x {shape[1]}"
        reserve(DENSE_TIE_BYTES * weight.size, what)
        at = (matrices.entry_rows(pattern), pattern.indices)
        tie = _tie(weights, weight, shape, at)
    layer = Layer(weight, rows.offset, activation, tie, _tie(bias, rows.offset))
    stored = layer.weight if layer.is_sparse else pattern  # the layer's own copy: shared
    origin = LayerOrigin(shape, stored.indptr, stored.indices, weights, bias, layer.relu_mask)
    state.layers.append(layer)
    state.origins.append(origin)


def close_layer(state: ReadState, blocks: list[tuple[Affine, bool | np.ndarray]]) -> list[Affine]:
    """Close the pending map as a layer and return each block as a selection of its outputs.

    The layer's neurons are the entries of each block (ReLU where its flag, a bool or a bool
    array of the block's shape, is True; linear otherwise) followed by every other live data
    value as linear neurons (each value object once; a linear block that is a live value is
    reused).  Every live value in
    ``state.values`` is replaced by its selection of the new layer's outputs.
    """
    parts: list[Affine] = []
    masks: list[np.ndarray] = []
    offsets: list[int] = []
    placed: dict[int, int] = {}
    n = 0

    def place(value: Affine, relu) -> int:
        nonlocal n
        parts.append(value.reshaped((prod(value.shape),)))
        masks.append(np.broadcast_to(relu, value.shape).reshape(-1))
        n += prod(value.shape)
        return n - prod(value.shape)

    for value, relu in blocks:
        offsets.append(place(value, relu))
        if not np.any(relu):
            placed[id(value)] = offsets[-1]
    carried: dict[str, int] = {}
    for name in state.live:
        value = state.values.get(name)
        if isinstance(value, Affine):
            if id(value) not in placed:
                placed[id(value)] = place(value, False)
            carried[name] = placed[id(value)]
    make_layer(state, concatenate(parts), np.concatenate(masks))
    for name, offset in carried.items():
        state.values[name] = selection(offset, state.values[name].shape, n)
    return [selection(offset, value.shape, n) for offset, (value, _) in zip(offsets, blocks)]
