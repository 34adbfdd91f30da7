"""An independent reference for ReLU networks, written for the tests from the definitions only.

Nothing here imports pyomo_nnrelax: a network is a list of ``(weight, bias)`` pairs of numpy
arrays, every layer but the last followed by a ReLU, the last one linear.  The reference gives

* :func:`forward` and :func:`pre_activations`: a plain numpy forward pass;
* :func:`interval_bounds`: interval propagation written out from its definition;
* :func:`grid`: a dense grid of the box that holds every vertex, and :func:`grid_tolerance`,
  how far the grid's optimum can lie from the true one (from a Lipschitz bound);
* :func:`breakpoints_1d`: for one-input networks, every breakpoint of the piecewise linear
  output, so that its exact minimum and maximum over an interval are attained on them;
* :func:`exact_one_layer_bounds`: exact minimum and maximum of a linear function of one ReLU
  layer over a box, by enumerating activation patterns and solving one LP per pattern with
  scipy's ``linprog``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

Weights = Sequence[tuple[np.ndarray, np.ndarray]]


def pre_activations(layers: Weights, X: np.ndarray) -> list[np.ndarray]:
    """The pre-activation ``z^l = W^l h^(l-1) + b^l`` of every layer, rows of ``X`` as inputs."""
    h = np.asarray(X, dtype=np.float64)
    out = []
    for l, (w, b) in enumerate(layers):
        z = h @ np.asarray(w, dtype=np.float64).T + b
        out.append(z)
        h = np.maximum(z, 0.0) if l < len(layers) - 1 else z
    return out


def forward(layers: Weights, X: np.ndarray) -> np.ndarray:
    """The network's output at the rows of ``X``, shape (n, n_out)."""
    return pre_activations(layers, X)[-1]


def interval_bounds(
    layers: Weights, lower: np.ndarray, upper: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, ``(L, U)`` of interval propagation: each weight times the end of its input's
    interval that makes the product smallest (largest), summed, plus the bias."""
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    out = []
    for l, (w, b) in enumerate(layers):
        L = np.array(
            [
                b[j] + sum(min(w[j, i] * lo[i], w[j, i] * hi[i]) for i in range(lo.size))
                for j in range(len(b))
            ]
        )
        U = np.array(
            [
                b[j] + sum(max(w[j, i] * lo[i], w[j, i] * hi[i]) for i in range(lo.size))
                for j in range(len(b))
            ]
        )
        out.append((L, U))
        if l < len(layers) - 1:
            lo, hi = np.maximum(L, 0.0), np.maximum(U, 0.0)
    return out


def vertices(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Every vertex of the box (duplicates where ``lower == upper``), shape (2^n, n)."""
    return np.array(list(itertools.product(*zip(lower, upper))), dtype=np.float64)


def grid(lower: np.ndarray, upper: np.ndarray, points_per_axis: int) -> np.ndarray:
    """A regular grid of the box with ``points_per_axis`` points on each axis (one on a
    degenerate axis); it holds every vertex of the box."""
    axes = [
        np.linspace(lo, hi, points_per_axis) if hi > lo else np.array([lo])
        for lo, hi in zip(lower, upper)
    ]
    return np.array(np.meshgrid(*axes, indexing="ij")).reshape(len(axes), -1).T


def grid_tolerance(layers: Weights, lower: np.ndarray, upper: np.ndarray, points_per_axis: int):
    """How far the minimum (maximum) of a network output over the box can lie below (above)
    its minimum (maximum) over :func:`grid`.

    Every point of the box is within half a grid step ``s_i / 2`` of a grid point on each axis,
    and a ReLU has slope in [0, 1], so ``|f(x) - f(y)| <= sum_i c_i |x_i - y_i|`` with
    ``c = |W^K| ... |W^1|`` (absolute values elementwise).  Returns one tolerance per output.
    """
    c = np.abs(np.asarray(layers[0][0], dtype=np.float64))
    for w, _ in layers[1:]:
        c = np.abs(np.asarray(w, dtype=np.float64)) @ c
    step = (np.asarray(upper) - np.asarray(lower)) / (points_per_axis - 1)
    return c @ (step / 2.0)


def breakpoints_1d(layers: Weights, lo: float, hi: float) -> np.ndarray:
    """Every breakpoint of a one-input network's output on ``[lo, hi]``, with both ends.

    Layer by layer: between consecutive breakpoints found so far, every pre-activation of the
    next layer is linear in ``x``, so its zero crossings there (new breakpoints) are found by
    linear interpolation.  The output is linear between consecutive returned points, so its
    minimum and maximum over ``[lo, hi]`` are attained on them.
    """
    points = np.array(sorted({float(lo), float(hi)}))
    for l in range(len(layers) - 1):
        z = pre_activations(layers[: l + 1], points[:, None])[-1]
        new = []
        for k in range(points.size - 1):
            a, b = points[k], points[k + 1]
            za, zb = z[k], z[k + 1]
            crossing = (za < 0) & (zb > 0) | (za > 0) & (zb < 0)
            for j in np.flatnonzero(crossing):
                new.append(a + (b - a) * za[j] / (za[j] - zb[j]))
        points = np.unique(np.concatenate([points, np.clip(new, lo, hi)]))
    return points


def exact_one_layer_bounds(
    w1: np.ndarray, b1: np.ndarray, C: np.ndarray, d: np.ndarray, lower, upper
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``min`` and ``max`` of each row of ``C relu(w1 x + b1) + d`` over the box.

    For a fixed activation pattern ``a`` (1 = active) row ``k`` is linear,
    ``sum_j C_kj a_j (w1_j x + b1_j) + d_k``, on the polyhedron of the box where
    ``w1_j x + b1_j >= 0`` for active and ``<= 0`` for inactive neurons; the box is the union
    of these polyhedra, so the extremes over the box are the extremes of one LP per pattern
    and row (patterns whose polyhedron is empty are skipped after one feasibility LP).  Solved
    with ``scipy.optimize.linprog``; returns the arrays of minima and maxima.
    """
    from scipy.optimize import linprog

    w1, b1, C, d = (np.asarray(v, dtype=np.float64) for v in (w1, b1, C, d))
    C = np.atleast_2d(C)
    box = list(zip(np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)))
    best_min, best_max = np.full(C.shape[0], np.inf), np.full(C.shape[0], -np.inf)
    for pattern in itertools.product((0.0, 1.0), repeat=b1.size):
        a = np.array(pattern)
        sign = np.where(a == 1.0, -1.0, 1.0)  # active: -(w x + b) <= 0; inactive: w x + b <= 0
        A_ub, b_ub = sign[:, None] * w1, -sign * b1
        feasible = linprog(np.zeros(w1.shape[1]), A_ub=A_ub, b_ub=b_ub, bounds=box)
        if feasible.status == 2:  # no point of the box has this pattern
            continue
        assert feasible.status == 0, feasible.message
        for k in range(C.shape[0]):
            slope = (C[k] * a) @ w1
            offset = float((C[k] * a) @ b1 + d[k])
            for direction in (1.0, -1.0):
                res = linprog(direction * slope, A_ub=A_ub, b_ub=b_ub, bounds=box)
                assert res.status == 0, res.message
                value = float(slope @ res.x) + offset
                if direction > 0:
                    best_min[k] = min(best_min[k], value)
                else:
                    best_max[k] = max(best_max[k], value)
    return best_min, best_max
