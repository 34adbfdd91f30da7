"""LP relaxations at fixed inputs: raw solutions of a batch, and the values and gradient
pieces assembled from them."""

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


@dataclass(frozen=True)
class Solutions:
    """Raw LP solutions of a batch, in the LP's column and row order.

    ``row_dual``/``col_dual`` are ``dV/d(rhs)`` and ``dV/d(active bound)`` for the sense solved;
    rows of failed samples are NaN (``value``) or zero (everything else).
    """

    value: np.ndarray
    x: np.ndarray
    row_dual: np.ndarray
    col_dual: np.ndarray
    ok: np.ndarray


def empty_solutions(n: int, n_cols: int, n_rows: int) -> Solutions:
    """Arrays for ``n`` samples of an LP of this size, all marked failed until filled."""
    return Solutions(
        np.full(n, np.nan),
        np.zeros((n, n_cols)),
        np.zeros((n, n_rows)),
        np.zeros((n, n_cols)),
        np.zeros(n, dtype=bool),
    )


def split_by_nearer_bound(value, lower, upper, dual) -> tuple[np.ndarray, np.ndarray]:
    """A bound's (or ranged row's) dual split into its lower-side and upper-side parts.

    A nonzero dual belongs to the bound the primal value sits at, the nearer one.
    """
    at_lower = (value - lower) <= (upper - value)
    return np.where(at_lower, dual, 0.0), np.where(at_lower, 0.0, dual)


def concat_batches(parts: list[RelaxationBatch]) -> RelaxationBatch:
    """The batches of consecutive chunks of samples, as one batch."""

    def join(values: list):
        if isinstance(values[0], list):
            return [np.concatenate(layer) for layer in zip(*values)]
        return np.concatenate(values)

    return RelaxationBatch(
        *(join([getattr(p, f.name) for p in parts]) for f in fields(RelaxationBatch))
    )
