"""How hard a network is to optimise over: unstable neurons, big-M sizes, LP gap, MILP time.

Every measurement builds the package's own :class:`~pyomo_nnrelax.block.NNBlock` and solves
it through Pyomo's HiGHS interface (:mod:`.solve`), so the figures are those a user of the
block would see.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pyomo.environ as pyo

from .block import NNBlock
from .bounds import big_m_summary, interval_bounds, layer_statistics
from .network import Network
from .options import SENSES, Sense, check_option
from .solve import SolveStats, solve_model

__all__ = [
    "Difficulty",
    "block_model",
    "difficulty",
    "milp_argmin",
    "objective_expression",
    "solve_block",
]


@dataclass(frozen=True)
class Difficulty:
    """How hard the MILP over a network is, with the LP relaxation gap.

    ``lp_gap`` is ``|MILP optimum - LP optimum|``; when the MILP was stopped by its time limit
    the MILP's proven bound stands in for its optimum, so ``lp_gap`` is then a lower bound on
    the true gap (``milp.optimal`` says which).
    """

    unstable: int
    mean_big_m: float
    lp_value: float
    milp: SolveStats | None
    lp_gap: float | None

    def as_dict(self) -> dict[str, float | int | str | None]:
        """A flat dict (for histories, CSV and JSON)."""
        flat = {k: v for k, v in asdict(self).items() if k != "milp"}
        milp = self.milp or SolveStats(math.nan, math.nan, math.nan, 0, False, "not run", "none")
        flat.update({f"milp_{k}": v for k, v in asdict(milp).items()})
        return flat


def objective_expression(block: NNBlock, weights: np.ndarray | None):
    """``weights @ outputs`` (the first output when ``weights`` is None)."""
    if weights is None:
        return block.outputs[0]
    return sum(float(w) * block.outputs[j] for j, w in enumerate(np.asarray(weights)) if w != 0)


def block_model(
    network: Network,
    input_bounds,
    sense: Sense = "min",
    weights: np.ndarray | None = None,
    **block_options,
) -> pyo.ConcreteModel:
    """A model holding ``NNBlock(network, ...)`` as ``m.nn`` and ``weights @ outputs`` as its
    objective."""
    check_option("sense", sense, SENSES)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(network, input_bounds=input_bounds, **block_options)
    m.obj = pyo.Objective(
        expr=objective_expression(m.nn, weights),
        sense=pyo.minimize if sense == "min" else pyo.maximize,
    )
    return m


def solve_block(
    network: Network,
    input_bounds,
    sense: Sense = "min",
    weights: np.ndarray | None = None,
    relax: bool = False,
    time_limit: float | None = None,
    **block_options,
) -> SolveStats:
    """Build ``NNBlock(network, ...)``, optimise ``weights @ outputs`` on HiGHS, return stats."""
    m = block_model(network, input_bounds, sense, weights, relax=relax, **block_options)
    return solve_model(m, time_limit, load=False)


def milp_argmin(
    network: Network,
    input_bounds,
    sense: Sense = "min",
    weights: np.ndarray | None = None,
    time_limit: float | None = 60.0,
) -> tuple[SolveStats, np.ndarray]:
    """The MILP's stats and its best input (``argmin``/``argmax``): what a surrogate user acts
    on.  Warm-started from sampled forward passes, so a point exists even at the limit."""
    m = block_model(network, input_bounds, sense, weights)
    stats = solve_model(m, time_limit, load=True, start=m.nn)
    return stats, m.nn.input_values()


def difficulty(
    network: Network,
    input_bounds,
    sense: Sense = "min",
    weights: np.ndarray | None = None,
    milp_time_limit: float | None = 60.0,
    milp: SolveStats | None = None,
) -> Difficulty:
    """Unstable neurons and mean big-M (interval bounds), LP value, and optionally the MILP.

    ``milp_time_limit=None`` skips the MILP (and so the LP gap), which can take long on an
    unregularized deep network.  ``milp`` passes the stats of a MILP the caller has already
    solved over the same network, box and objective (:func:`solve_model`), instead of solving
    it again.
    """
    bounds = interval_bounds(network, input_bounds)
    unstable, big_m = big_m_summary(layer_statistics(network, bounds))
    lp = solve_block(network, input_bounds, sense, weights, relax=True)
    gap = None
    if milp is None and milp_time_limit is not None:
        milp = solve_block(network, input_bounds, sense, weights, time_limit=milp_time_limit)
    if milp is not None:
        reference = milp.objective if milp.optimal else milp.bound
        gap = abs(reference - lp.objective)
    return Difficulty(unstable, big_m, lp.objective, milp, gap)
