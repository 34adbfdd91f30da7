"""Partition-based formulation of ReLU neurons (Tsay, Kronqvist, Thebelt, Misener, NeurIPS 2021).

The nonzero-weight inputs of an unstable neuron ``z = w @ h + b`` are split into ``N``
disjoint sets ``S_1..S_N``; ``v_k = sum_{i in S_k} w_i h_i`` has interval bounds
``[l_k, u_k]`` over the box of ``h``.  With the binary ``a = 1`` meaning *active* (the same
sense as big-M's; the paper writes ``sigma = 1 - a``):

.. math::

    xh &= \\sum_k p_k + a b \\\\
    \\sum_k (v_k - p_k) - a b &\\le -b \\\\
    \\sum_k p_k + a b &\\ge 0 \\\\
    (1 - a) l_k \\le v_k - p_k &\\le (1 - a) u_k \\\\
    a l_k \\le p_k &\\le a u_k, \\qquad a \\in \\{0, 1\\}

``N = 1`` is as tight as big-M over interval bounds; ``N`` = number of inputs gives the
convex hull of one neuron over the box (``docs/method.md``, section 2).  ``v_k`` is an
expression of the ``h`` columns, not a variable.  Stable neurons are written as in big-M
(``xh = z`` or ``xh = 0``).

Groups added for layer ``l``: variables ``xh``, ``is_active`` (``a``, indexed by the unstable
neurons) and ``partition_p`` (``p_k``); rows ``relu_copy`` (stable-active), ``partition_out``,
``partition_inactive``, ``partition_active`` (one per unstable neuron),
``partition_v_lower``, ``partition_v_upper``, ``partition_p_lower``, ``partition_p_upper``
(one per ``p_k``).  A ``p_k`` label is ``neuron * n_partitions + k``, so
``(neuron, k) = divmod(label, n_partitions)``; after clamping, a neuron with fewer groups
simply has no labels for the missing ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import sparse

from .. import matrices
from ..bounds import affine_interval, unstable_relus
from ..network import Layer
from ..options import SPLIT_STRATEGIES, check_option
from . import Formulation, ReluSite, relu_output_vars
from .matrix_model import MatrixModelBuilder


@dataclass(frozen=True)
class _Partition:
    """The groups of one layer's unstable neurons, flattened to one row per ``p_k``.

    ``unstable`` are the neuron indices; ``owner[r]`` is the position (in ``unstable``) of
    the neuron of ``p``-row ``r`` and ``slot[r]`` its group number ``k``; ``weights[r]`` is
    the neuron's weight row restricted to ``S_k`` (a sparse matrix: ``v = weights @ h``).
    """

    unstable: np.ndarray
    owner: np.ndarray
    slot: np.ndarray
    weights: sparse.csr_array


def split_inputs(
    weights: np.ndarray, n_partitions: int, strategy: str, seed: int | tuple[int, ...] = 0
) -> np.ndarray:
    """Group id (0..m-1, with m <= n_partitions) of every input of one neuron; -1 for zero weights.

    ``n_partitions`` is clamped to the number of nonzero weights.  "equal_size" sorts the
    inputs by weight and cuts them into equal-size runs, "equal_range" cuts the weight range
    into equal intervals (empty intervals are dropped), "random" shuffles with ``seed``.
    """
    nonzero = np.flatnonzero(weights)
    groups = np.full(weights.size, -1, dtype=np.int64)
    n = min(n_partitions, nonzero.size)
    if n == 0:
        return groups
    if strategy == "equal_range":
        w = weights[nonzero]
        edges = np.linspace(w.min(), w.max(), n + 1)
        bins = np.clip(np.searchsorted(edges, w, side="right") - 1, 0, n - 1)
        groups[nonzero] = np.unique(bins, return_inverse=True)[1]
        return groups
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(nonzero)
    else:
        order = nonzero[np.argsort(weights[nonzero], kind="stable")]
    for k, members in enumerate(np.array_split(order, n)):
        groups[members] = k
    return groups


def _partition(
    layer: Layer,
    z_bounds: tuple[np.ndarray, np.ndarray],
    n_partitions: int,
    strategy: str,
    seed: int,
) -> _Partition:
    """Split the inputs of every unstable neuron of ``layer`` (see :func:`split_inputs`).

    The random strategy seeds each neuron with ``(seed, neuron)`` so that the rows and the
    start values of a layer agree.
    """
    unstable = np.flatnonzero(unstable_relus(layer, *z_bounds))
    counts, triplets = np.zeros(unstable.size, dtype=np.int64), []
    for i, j in enumerate(unstable):
        row = matrices.dense_row(layer.weight, j)
        groups = split_inputs(row, n_partitions, strategy, (seed, j))
        inputs = np.flatnonzero(groups >= 0)
        counts[i] = groups.max(initial=-1) + 1
        triplets.append((groups[inputs], inputs, row[inputs]))
    owner = np.repeat(np.arange(unstable.size), counts)
    slot = np.concatenate([np.arange(c) for c in counts] or [np.zeros(0, np.int64)])
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    p_rows = np.concatenate([first[i] + g for i, (g, _, _) in enumerate(triplets)] or [[]])
    cols = np.concatenate([c for _, c, _ in triplets] or [[]])
    values = np.concatenate([v for _, _, v in triplets] or [[]])
    order = np.lexsort((cols, p_rows))
    shape = (owner.size, layer.n_in)
    weights = matrices.from_entries(shape, p_rows[order], cols[order], values[order])
    return _Partition(unstable, owner, slot, weights)


def _sum_terms(cols: np.ndarray, owner: np.ndarray, slot: np.ndarray, n_rows: int, coef: float):
    """Row terms adding ``coef * x[cols[r]]`` to row ``owner[r]``: one term per group number."""
    terms = []
    for k in range(int(slot.max(initial=-1)) + 1):
        pick = slot == k
        term_cols, term_coefs = np.zeros(n_rows, np.int64), np.zeros(n_rows)
        term_cols[owner[pick]] = cols[pick]
        term_coefs[owner[pick]] = coef
        terms.append((term_cols, term_coefs))
    return terms


def partition_relu(
    builder: MatrixModelBuilder, site: ReluSite, *, n_partitions: int, strategy: str, seed: int
) -> np.ndarray:
    """Write the partition rows of one ReLU layer; see the module docstring."""
    layer, layer_index, h_cols = site.layer, site.index, site.h_cols
    xh_cols = relu_output_vars(builder, site)
    part = _partition(layer, site.z_bounds, n_partitions, strategy, seed)
    u, owner, n_u = part.unstable, part.owner, part.unstable.size
    v_lo, v_hi = affine_interval(part.weights, *site.h_bounds)
    labels = u[owner] * n_partitions + part.slot
    p = builder.add_vars(
        "partition_p", np.minimum(v_lo, 0.0), np.maximum(v_hi, 0.0), layer_index, labels
    )
    active = builder.add_vars(
        "is_active", np.zeros(n_u), 1.0, layer_index, u, integer=not site.relax
    )
    b = layer.bias[u]
    minus_p = _sum_terms(p, owner, part.slot, n_u, -1.0)
    builder.add_rows(
        "partition_out",
        [(xh_cols[u], np.ones(n_u)), (active, -b), *minus_p],
        0.0,
        0.0,
        layer_index,
        u,
    )
    builder.add_rows(
        "partition_inactive",
        [(active, -b), (h_cols, matrices.select_rows(layer.weight, u)), *minus_p],
        -np.inf,
        -b,
        layer_index,
        u,
    )
    builder.add_rows(
        "partition_active",
        [(active, b), *_sum_terms(p, owner, part.slot, n_u, 1.0)],
        0.0,
        np.inf,
        layer_index,
        u,
    )
    ones, v_term = np.ones(p.size), (h_cols, part.weights)
    builder.add_rows(
        "partition_v_lower",
        [(p, -ones), (active[owner], v_lo), v_term],
        v_lo,
        np.inf,
        layer_index,
        labels,
    )
    builder.add_rows(
        "partition_v_upper",
        [(p, -ones), (active[owner], v_hi), v_term],
        -np.inf,
        v_hi,
        layer_index,
        labels,
    )
    builder.add_rows(
        "partition_p_lower", [(p, ones), (active[owner], -v_lo)], 0.0, np.inf, layer_index, labels
    )
    builder.add_rows(
        "partition_p_upper", [(p, ones), (active[owner], -v_hi)], -np.inf, 0.0, layer_index, labels
    )
    return xh_cols


def partition_start_values(
    layer: Layer,
    h: np.ndarray,
    z: np.ndarray,
    h_bounds: tuple[np.ndarray, np.ndarray],
    z_bounds: tuple[np.ndarray, np.ndarray],
    *,
    n_partitions: int,
    strategy: str,
    seed: int,
) -> dict[str, np.ndarray]:
    """``a`` (1 where ``z > 0``) and ``p_k`` (``v_k`` if active, else 0) at a point."""
    part = _partition(layer, z_bounds, n_partitions, strategy, seed)
    active = (z[part.unstable] > 0.0).astype(np.float64)
    return {"is_active": active, "partition_p": (part.weights @ h) * active[part.owner]}


def partition_formulation(
    n_partitions: int = 2, strategy: str = "equal_size", seed: int = 0
) -> Formulation:
    """The partition formulation with ``n_partitions`` groups per unstable neuron.

    Parameters
    ----------
    n_partitions : int
        Groups per neuron (>= 1), clamped to the neuron's number of nonzero weights.
    strategy : {"equal_size", "equal_range", "random"}
        How inputs are split; see :func:`split_inputs`.
    seed : int
        Seed of the "random" strategy.
    """
    is_int = isinstance(n_partitions, (int, np.integer)) and not isinstance(n_partitions, bool)
    if not is_int or n_partitions < 1:
        raise ValueError(f"n_partitions must be an integer >= 1, got {n_partitions!r}")
    check_option("strategy", strategy, SPLIT_STRATEGIES)
    options = {"n_partitions": int(n_partitions), "strategy": strategy, "seed": int(seed)}
    return Formulation(
        f"partition(N={n_partitions}, {strategy})",
        partial(partition_relu, **options),
        partial(partition_start_values, **options),
    )
