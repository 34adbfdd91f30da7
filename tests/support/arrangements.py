"""Exact extremes of a linear function of one ReLU layer of a two-input network, from the
definitions only (nothing here imports pyomo_nnrelax).

``C relu(W x + b) + d`` is linear on each cell of the arrangement of the lines
``W_j x + b_j = 0`` in the box, so its minimum and maximum over the box are attained at a
vertex of a cell: a corner of the box, a point where a line meets an edge of the box, or one
where two lines meet inside it.  Evaluating every such point gives the extremes exactly (to
rounding), with ``n (n - 1) / 2 + 4 n + 4`` evaluations for ``n`` neurons.
"""

from __future__ import annotations

import itertools

import numpy as np


def vertices(W: np.ndarray, b: np.ndarray, lower, upper) -> np.ndarray:
    """Every vertex of the arrangement of the lines ``W_j x + b_j = 0`` in the box (m, 2)."""
    W, b = np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    assert W.shape[1] == 2, "two inputs only"
    points = [[x, y] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]
    for w, c in zip(W, b):
        for k in (0, 1):
            if w[1 - k] != 0.0:
                for edge in (lo[k], hi[k]):
                    point = np.empty(2)
                    point[k], point[1 - k] = edge, -(c + w[k] * edge) / w[1 - k]
                    points.append(point)
    for i, j in itertools.combinations(range(b.size), 2):
        pair = W[[i, j]]
        if abs(np.linalg.det(pair)) > 1e-12 * max(1.0, np.abs(pair).max() ** 2):
            points.append(np.linalg.solve(pair, -b[[i, j]]))
    X = np.array(points, dtype=np.float64)
    inside = np.all((X >= lo - 1e-12) & (X <= hi + 1e-12), axis=1)
    return np.clip(X[inside], lo, hi)


def exact_extremes(W, b, C, d, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimum and maximum over the box of each row of ``C relu(W x + b) + d``."""
    X = vertices(W, b, lower, upper)
    values = np.maximum(X @ np.asarray(W, dtype=np.float64).T + b, 0.0) @ np.atleast_2d(C).T
    values = values + np.asarray(d, dtype=np.float64)
    return values.min(axis=0), values.max(axis=0)
