"""Piecewise linear activations, folded exactly into ReLU and linear neurons of closed layers.

* ``Relu``: the pending map closes as ReLU neurons.
* ``LeakyRelu(alpha)`` and ``PRelu`` (a constant slope ``a``, broadcast as ONNX does, e.g. one
  per channel): the layer gets the rows of ``z`` twice, as ReLU neurons ``r`` and as linear
  neurons ``l``, and the op's value is ``(1 - a) * r + a * l``, exact for any slope (a slope of
  0 needs no linear row, a slope of 1 no ReLU row).
* ``Clip`` with constant bounds (inputs from opset 11, attributes before; a missing or
  infinite bound is no bound; ReLU6 and Hardtanh export as Clip):
  ``clip(v) = v - relu(v - max) + relu(min - v)``, i.e. rows ``[v - max; min - v]`` as ReLUs
  and ``v`` linear; ``relu(v) - relu(v - max)`` when ``min == 0``; one ReLU row when one
  bound is given.  ``min >= max`` gives the constant ``max``, as the ONNX spec says.
* ``HardSigmoid(alpha, beta)``: ``clip(alpha * z + beta, 0, 1)``, as Clip.  (HardSwish,
  ``z * hardsigmoid(z)``, is not piecewise linear and stays unsupported.)
* ``Abs``: ``relu(z) + relu(-z)``, rows ``[z; -z]`` as ReLUs.

The maxima (MaxPool, GlobalMaxPool, Max, Min, ReduceMax, ReduceMin) are trees of ReLUs built
by :mod:`.maxima`.  Every other data value still needed later is carried through each closed
layer as linear neurons (:func:`~.closing.close_layer`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidNetworkError
from .closing import close_layer
from .nodes import Node, ReadState, sample_const
from .values import Affine, Value, linear_sum, scale_shift


# ---------------------------------------------------------------------- activations
def read_relu(node: Node, state: ReadState) -> list[Value]:
    """Close the pending affine map as ReLU neurons; the output is a selection of them."""
    return close_layer(state, [(node.data(0), True)])


def _sloped(node: Node, state: ReadState, z: Affine, slope: np.ndarray) -> list[Value]:
    """``(1 - a) * relu(z) + a * z`` for a slope ``a`` of z's sample shape."""
    flat = slope.reshape(-1)
    if np.all(flat == 1.0):
        return [z]
    if np.all((flat == 0.0) | (flat == 1.0)):  # ReLU or identity per neuron: a mask layer
        return close_layer(state, [(z, (flat == 0.0).reshape(z.shape))])
    relu_at, lin_at = np.flatnonzero(flat != 1.0), np.flatnonzero(flat != 0.0)
    relu = z if relu_at.size == flat.size else z.take(relu_at)
    lin = z if lin_at.size == flat.size else z.take(lin_at)
    r, l = close_layer(state, [(relu, True), (lin, False)])
    terms = [(1.0 - flat, _placed(r, relu_at, flat.size)), (flat, _placed(l, lin_at, flat.size))]
    return [linear_sum(terms).reshaped(z.shape)]


def _placed(value: Affine, at: np.ndarray, n: int) -> Affine:
    """A 1-D value of ``n`` entries holding ``value``'s entries at positions ``at``, zeros
    elsewhere."""
    where = np.full(n, -1, dtype=np.int64)
    where[at] = np.arange(at.size)
    return value.take(where)


def read_leaky_relu(node: Node, state: ReadState) -> list[Value]:
    z = node.data(0)
    return _sloped(node, state, z, np.full(z.shape, float(node.attr("alpha", 0.01))))


def read_prelu(node: Node, state: ReadState) -> list[Value]:
    z = node.data(0)
    slope, shape = sample_const(node, node.const(1), z.shape)
    if shape != z.shape:
        raise node.mismatch(
            f"slope of shape {node.const(1).shape} does not broadcast to data of shape {z.shape}"
        )
    return _sloped(node, state, z, slope)


_FLOAT_MAX = 3.4e38  # the attribute defaults of opset < 11 are +-FLT_MAX: no bound


def _clip_bound(node: Node, index: int, attr: str) -> float | None:
    if node.opset < 11:
        value = node.attr(attr)
        if value is None or abs(value) >= _FLOAT_MAX:
            return None
    else:
        value = node.optional(index)
        if value is None:
            return None
        if isinstance(value, Affine):
            raise node.unsupported(f"the {attr} bound depends on the network input")
        value = np.asarray(value, dtype=np.float64)
        if value.size != 1:
            raise node.mismatch(f"the {attr} bound must be a scalar, got shape {value.shape}")
        value = value.reshape(-1)[0]
    value = float(value)
    if np.isnan(value):
        raise InvalidNetworkError(f"node '{node.label}' (Clip): the {attr} bound is NaN")
    if np.isinf(value):
        if (value > 0) == (attr == "max"):
            return None
        raise node.unsupported(f"an infinite {attr} bound of {value} makes the output infinite")
    return value


def clip(state: ReadState, v: Affine, lo: float | None, hi: float | None) -> Affine:
    """``clip(v, lo, hi)`` (None: no bound) as ReLU rows and ``v`` linear (module docstring)."""
    if lo is None and hi is None:
        return v
    if lo is not None and hi is not None and lo >= hi:
        return scale_shift(v, 0.0, hi)  # min >= max: max everywhere (ONNX)
    if lo is None:
        r, l = close_layer(state, [(scale_shift(v, 1.0, -hi), True), (v, False)])
        return linear_sum([(1.0, l), (-1.0, r)])
    if hi is None:
        r, l = close_layer(state, [(scale_shift(v, -1.0, lo), True), (v, False)])
        return linear_sum([(1.0, l), (1.0, r)])
    if lo == 0.0:
        r, r_hi = close_layer(state, [(v, True), (scale_shift(v, 1.0, -hi), True)])
        return linear_sum([(1.0, r), (-1.0, r_hi)])
    r_hi, r_lo, l = close_layer(
        state, [(scale_shift(v, 1.0, -hi), True), (scale_shift(v, -1.0, lo), True), (v, False)]
    )
    return linear_sum([(1.0, l), (-1.0, r_hi), (1.0, r_lo)])


def read_clip(node: Node, state: ReadState) -> list[Value]:
    lo, hi = _clip_bound(node, 1, "min"), _clip_bound(node, 2, "max")
    return [clip(state, node.data(0), lo, hi)]


def read_hard_sigmoid(node: Node, state: ReadState) -> list[Value]:
    """``clip(alpha * z + beta, 0, 1)``."""
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return [clip(state, scale_shift(node.data(0), alpha, beta), 0.0, 1.0)]


def read_abs(node: Node, state: ReadState) -> list[Value]:
    """``|z| = relu(z) + relu(-z)``: one layer of two ReLU rows per entry."""
    z = node.data(0)
    r, r_neg = close_layer(state, [(z, True), (scale_shift(z, -1.0, 0.0), True)])
    return [linear_sum([(1.0, r), (1.0, r_neg)])]
