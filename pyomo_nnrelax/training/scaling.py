"""Min-max target scaling, folded into the last layer on export.

Training happens on targets scaled to [0, 1] (as in the paper, so ``lam`` and the
bound-based regularizers have comparable scale across problems); the user only ever sees
networks in the original target units.  Because the scaling is affine per output it folds
exactly into a linear last layer: ``y = scale * z + offset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import matrices
from ..network import Layer


@dataclass(frozen=True)
class TargetScaling:
    """Per-output affine map between user units and training units: ``y = scale * s + offset``.

    Attributes
    ----------
    offset, scale : ndarray (n_outputs,)
    """

    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def min_max(cls, y: np.ndarray, n_outputs: int) -> TargetScaling:
        """Scaling of the columns of ``y`` (n, n_outputs or 1) to [0, 1].

        A single column is shared by all outputs; a constant column gets scale 1.
        """
        lo, hi = y.min(axis=0), y.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        return cls(np.broadcast_to(lo, n_outputs).copy(), np.broadcast_to(span, n_outputs).copy())

    @classmethod
    def identity(cls, n_outputs: int) -> TargetScaling:
        """No scaling."""
        return cls(np.zeros(n_outputs), np.ones(n_outputs))

    def to_training(self, y: np.ndarray) -> np.ndarray:
        """Targets in training units; ``y`` has one column or one per output."""
        cols = y.shape[1]
        return (y - self.offset[:cols]) / self.scale[:cols]

    def to_user(self, s: np.ndarray) -> np.ndarray:
        """Network outputs (n, n_outputs) in user units."""
        return s * self.scale + self.offset

    def fold(self, layers: Sequence[Layer]) -> tuple[Layer, ...]:
        """Layers whose outputs are in user units, from layers in training units."""
        *hidden, last = layers
        return (*hidden, _scaled(last, self.scale, self.offset))

    def unfold(self, layers: Sequence[Layer]) -> tuple[Layer, ...]:
        """Layers in training units, from layers in user units (inverse of :meth:`fold`)."""
        *hidden, last = layers
        return (*hidden, _scaled(last, 1.0 / self.scale, -self.offset / self.scale))


def _scaled(layer: Layer, row_factor: np.ndarray, shift: np.ndarray) -> Layer:
    """``layer`` with its outputs mapped by ``row_factor * z + shift``: the weight's rows
    multiplied, the bias scaled and shifted (ties keep their parameters, rescaled)."""
    tie, bias_tie = layer.tie, layer.bias_tie
    if tie is not None:
        tie = tie.scaled(matrices.per_entry(layer.weight, row_factor))
    if bias_tie is not None:
        bias_tie = bias_tie.scaled(row_factor, shift)
    weight = matrices.scale_rows(layer.weight, row_factor)
    return Layer(weight, layer.bias * row_factor + shift, layer.activation, tie, bias_tie)
