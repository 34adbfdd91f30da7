"""Closing a layer: the pending affine map becomes a :class:`~pyomo_nnrelax.network.Layer`
(with its :class:`~pyomo_nnrelax.ties.WeightTie`) when a nonlinear op is read.

A nonlinear op closes the pending layer (:func:`close_layer`): the layer's rows are the op's
rows followed by every other data value a later node still needs (carried as linear neurons),
and every value becomes a selection of the new layer's outputs.
"""

from __future__ import annotations

from math import prod

import numpy as np

from ..network import Layer
from ..ties import WeightTie
from .nodes import ReadState
from .values import FIXED, FREE, Affine, concatenate, selection


def layer_tie(src: np.ndarray, mult: np.ndarray, weight: np.ndarray) -> WeightTie | None:
    """A layer's tie from the tags of its ``weight`` (2-D ``src`` and ``mult``, see the module
    docstring): parameters renumbered 0, 1, ... in order of first appearance, each free entry
    a parameter of its own, fixed entries keeping their values; None if every entry is its
    own parameter (a dense layer)."""
    flat = src.reshape(-1)
    used = flat != FIXED
    keys = np.where(flat == FREE, -3 - np.arange(flat.size), flat)[used]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    index = np.full(flat.size, FIXED, dtype=np.int64)
    index[used] = rank[inverse.reshape(-1)]
    if used.all() and first.size == flat.size:
        return None
    mult = np.where(src == FREE, 1.0, mult).reshape(-1)
    return WeightTie(index.reshape(src.shape), np.where(used, mult, 0.0).reshape(src.shape), weight)


def make_layer(rows: Affine, activation) -> Layer:
    """The layer whose neurons are the entries of ``rows`` (flattened), with its tie."""
    weight, bias = rows.flat()
    if rows.src is None:
        tie = WeightTie(np.full(weight.shape, FIXED), np.zeros(weight.shape), weight)
    else:
        tie = layer_tie(rows.src.reshape(weight.shape), rows.mult.reshape(weight.shape), weight)
    return Layer(weight, bias, activation, tie)


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
        parts.append(value.take(np.arange(prod(value.shape))))
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
    state.layers.append(make_layer(concatenate(parts), np.concatenate(masks)))
    for name, offset in carried.items():
        state.values[name] = selection(offset, state.values[name].shape, n)
    return [selection(offset, value.shape, n) for offset, (value, _) in zip(offsets, blocks)]
