"""Values of LP relaxations at fixed inputs, with the pieces of their gradients."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class RelaxationBatch:
    """LP relaxation values at ``n`` fixed inputs and the pieces of their gradients.

    Attributes
    ----------
    value : ndarray (n,)
        LP optimum of ``w' outputs``; NaN where the LP did not solve to optimality.
    affine_duals : list of ndarray (n, n_out_l)
        ``dV/db^l``.
    activations : list of ndarray (n, n_in_l)
        The LP's input to layer ``l`` (``activations[0]`` is ``X``), so that
        ``dV/dW^l = affine_duals[l][i, :, None] * activations[l][i, None, :]``.
    lower_grad, upper_grad : list of ndarray (n, n_out_l)
        ``dV/dL^l`` and ``dV/dU^l`` with everything else held fixed (see
        :mod:`pyomo_nnrelax.relaxation`).
    ok : ndarray of bool (n,)
        Which LPs solved to optimality; the other entries have zero gradients.
    """

    value: np.ndarray
    affine_duals: list[np.ndarray]
    activations: list[np.ndarray]
    lower_grad: list[np.ndarray]
    upper_grad: list[np.ndarray]
    ok: np.ndarray

    @property
    def failures(self) -> int:
        return int(np.count_nonzero(~self.ok))

    def weight_grads(self) -> list[np.ndarray]:
        """``dV/dW^l`` per sample, each of shape (n, n_out_l, n_in_l)."""
        return [
            nu[:, :, None] * h[:, None, :] for nu, h in zip(self.affine_duals, self.activations)
        ]


def concat_batches(parts: list[RelaxationBatch]) -> RelaxationBatch:
    """The batches of consecutive chunks of samples, as one batch."""

    def join(values: list):
        if isinstance(values[0], list):
            return [np.concatenate(layer) for layer in zip(*values)]
        return np.concatenate(values)

    return RelaxationBatch(
        *(join([getattr(p, f.name) for p in parts]) for f in fields(RelaxationBatch))
    )
