"""The first-stage MILP of a two-stage stochastic program with a quantile network (QNN)
standing in for the second stage (docs/method.md, section 6; the paper's eq. 36):

    min_y  c_f' y + (1/K) sum_k q_k(y) + risk * mean_{k: tau_k >= alpha} q_k(y),   y binary

``q(y)`` are the network's K quantile outputs at levels ``tau``.  The network is embedded with
``NNBlock(network, inputs=m.y, outputs=m.q)``: the binary decisions are its inputs, with no
copy variables, and the box ``[0, 1]^n`` comes from their bounds.

>>> from pyomo_nnrelax import Network
>>> levels = quantile_levels(4)
>>> levels.round(4).tolist()
[0.01, 0.3367, 0.6633, 0.99]
>>> objective_weights(levels, risk=0.1, alpha=0.9).round(3).tolist()
[0.25, 0.25, 0.25, 0.35]
>>> net = Network.mlp([3, 5, 4], seed=0)
>>> m = first_stage_model([1.0, 2.0, 0.5], net, levels)
>>> sorted(v.name for v in m.y.values()), m.y[0].is_binary(), m.nn.inputs[0] is m.y[0]
(['y[0]', 'y[1]', 'y[2]'], True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo

from ..block import NNBlock
from ..bounds import interval_bounds
from ..network import Network
from ..solve import SolveStats, solve_model

RISK = 0.1
"""``lambda_2SP``: weight of the tail mean (the paper's value)."""
ALPHA = 0.9
"""Quantile levels at or above ``ALPHA`` form the tail."""


def quantile_levels(k: int = 50) -> np.ndarray:
    """``k`` levels equally spaced from 0.01 to 0.99 (the paper's K = 50)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    return np.linspace(0.01, 0.99, int(k))


def objective_weights(levels, risk: float = RISK, alpha: float = ALPHA) -> np.ndarray:
    """``w`` with ``w' q = mean(q) + risk * mean(q[tau >= alpha])``: the objective's weights
    on the quantile outputs (what an LP-gap regularizer for this MILP would use)."""
    levels = np.asarray(levels, dtype=np.float64)
    tail = levels >= alpha - 1e-12
    if levels.ndim != 1 or levels.size == 0 or not tail.any():
        raise ValueError(f"levels must be a vector with at least one level >= alpha={alpha}")
    if not math.isfinite(risk) or risk < 0:
        raise ValueError(f"risk must be a finite number >= 0, got {risk!r}")
    return np.full(levels.size, 1.0 / levels.size) + risk * tail / tail.sum()


def first_stage_model(
    fixed_costs,
    network: Network,
    levels,
    risk: float = RISK,
    alpha: float = ALPHA,
    relax: bool = False,
) -> pyo.ConcreteModel:
    """The 2SP MILP: ``m.y`` (binary, or [0, 1] with ``relax``), ``m.q`` the quantiles,
    ``m.nn`` the embedded network, ``m.obj`` the objective of the module docstring.

    With ``relax=True`` every binary (``y`` and the network's) is relaxed to [0, 1]: the LP
    relaxation of the same model, whose optimum the LP gap is measured against.
    """
    c = np.asarray(fixed_costs, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    if c.ndim != 1 or c.size != network.n_inputs:
        raise ValueError(
            f"fixed_costs must have one entry per network input ({network.n_inputs}), "
            f"got shape {c.shape}"
        )
    if levels.ndim != 1 or levels.size != network.n_outputs:
        raise ValueError(
            f"levels must have one quantile level per network output ({network.n_outputs}), "
            f"got shape {levels.shape}"
        )
    tail = [k for k in range(levels.size) if levels[k] >= alpha - 1e-12]
    objective_weights(levels, risk, alpha)  # checks risk and the tail
    m = pyo.ConcreteModel()
    m.y = pyo.Var(range(c.size), within=pyo.UnitInterval if relax else pyo.Binary)
    m.q = pyo.Var(range(levels.size))
    m.nn = NNBlock(network, inputs=m.y, outputs=m.q, relax=relax)
    K = levels.size
    m.obj = pyo.Objective(
        expr=sum(float(c[i]) * m.y[i] for i in m.y)
        + sum(m.q.values()) / K
        + risk * sum(m.q[k] for k in tail) / len(tail),
        sense=pyo.minimize,
    )
    return m


def predicted_objective(
    fixed_costs, network: Network, Y, levels, risk: float = RISK, alpha: float = ALPHA
) -> np.ndarray:
    """The 2SP objective by forward passes at the decisions ``Y`` (n, n_f): ``c_f' y + w' q(y)``."""
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    w = objective_weights(levels, risk, alpha)
    return Y @ np.asarray(fixed_costs, dtype=np.float64) + network.forward(Y) @ w


@dataclass(frozen=True)
class FirstStage:
    """The 2SP MILP solved over one network, with its LP relaxation.

    ``y`` is the decision (the incumbent at a time limit); ``predicted`` its objective by a
    forward pass; ``milp`` the solve's :class:`SolveStats`; ``lp_value`` the LP relaxation's
    optimum; ``lp_gap`` the MILP optimum (its proven bound at a limit: then a lower bound on
    the gap) minus ``lp_value``; ``unstable`` the network's unstable neurons over [0, 1]^n_f;
    ``check`` the largest |MILP outputs - onnxruntime| at ``y``.
    """

    y: np.ndarray
    predicted: float
    milp: SolveStats
    lp_value: float
    lp_gap: float
    unstable: int
    check: float


def solve_first_stage(
    fixed_costs,
    network: Network,
    levels,
    risk: float = RISK,
    alpha: float = ALPHA,
    time_limit: float | None = 60.0,
) -> FirstStage:
    """Solve the 2SP MILP and its LP relaxation on HiGHS; see :class:`FirstStage`."""
    m = first_stage_model(fixed_costs, network, levels, risk, alpha)
    stats = solve_model(m, time_limit, load=True, start=m.nn)
    y = np.round(np.array([pyo.value(m.y[i]) for i in m.y])) + 0.0  # no -0.0
    check = m.nn.check().max_abs_error
    lp = solve_model(first_stage_model(fixed_costs, network, levels, risk, alpha, relax=True))
    reference = stats.objective if stats.optimal else stats.bound
    box = [(0.0, 1.0)] * network.n_inputs
    unstable = interval_bounds(network, box).unstable_count(network)
    predicted = float(predicted_objective(fixed_costs, network, y, levels, risk, alpha)[0])
    return FirstStage(y, predicted, stats, lp.objective, reference - lp.objective, unstable, check)
