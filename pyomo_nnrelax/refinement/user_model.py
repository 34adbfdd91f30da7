"""Refinement judged on the user's own model: ``refine(..., model=build)``.

``build(network)`` returns the user's Pyomo model with the network embedded in one or more
:class:`~pyomo_nnrelax.NNBlock` (any number of copies, any other constraints and one active
objective).  Each round builds it around the round's network and measures what the user
will meet: the MILP's time, nodes and bound, its LP relaxation, the unstable neurons of every
copy and, with ``evaluate(model)``, the true value of the decision the MILP makes.  The box
the network is trained and regularized on is the hull of every copy's box (:func:`copy_boxes`,
:func:`training_box`), so that the regularizer makes every copy easier, not one of them.
See docs/training.md, "Refining on your own model".
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyomo.environ as pyo

from ..block import NNBlock
from ..bounds import big_m_summary, layer_statistics
from ..box import InputBox
from ..measure import Difficulty
from ..network import Network
from ..solve import solve_model

Build = Callable[[Network], pyo.ConcreteModel]
OUTSIDE_DATA = 0.05
"""How far (a fraction of the data's span per input) a copy's box may reach beyond the
training data's range before a warning says the network extrapolates there."""


@dataclass(frozen=True)
class Copy:
    """One copy of the network in the user's model: where it is and its input box."""

    label: str
    box: InputBox


def embed(build: Build, network: Network) -> tuple[pyo.ConcreteModel, list[NNBlock]]:
    """``build(network)`` and the blocks in it that embed ``network`` (other networks the
    model holds are left alone).  Raises ValueError when the model has no such block or not
    exactly one active objective: it could not be measured."""
    name = function_name(build)
    model = build(network)
    if not isinstance(model, pyo.Block):
        raise ValueError(f"{name} returned {type(model).__name__}, not a Pyomo model")
    blocks = [
        b
        for b in model.component_data_objects(pyo.Block, active=True, descend_into=True)
        if isinstance(b, NNBlock) and b.network == network
    ]
    if not blocks:
        raise ValueError(
            f"{name}(network) returned a model without an NNBlock of the network it was given: "
            "build the NNBlock(s) from the network argument"
        )
    objectives = list(model.component_data_objects(pyo.Objective, active=True))
    if len(objectives) != 1:
        raise ValueError(
            f"{name}(network) returned a model with {len(objectives)} active objectives; "
            "it needs exactly one"
        )
    return model, blocks


def inspect(build: Build, network: Network) -> tuple[list[Copy], str]:
    """Every copy of ``network`` in the model ``build`` makes of it, and the direction
    ("min" or "max") of the model's objective."""
    model, blocks = embed(build, network)
    objective = next(model.component_data_objects(pyo.Objective, active=True))
    return copy_boxes(blocks), "min" if objective.sense == pyo.minimize else "max"


def copy_boxes(blocks: list[NNBlock]) -> list[Copy]:
    """Every copy of the network in ``blocks``, with its input box (a batched block holds
    several)."""
    return [
        Copy(label, box)
        for block in blocks
        for label, box in zip(block.copy_names(), block.copy_boxes())
    ]


def training_box(copies: list[Copy], given: InputBox | None, X: np.ndarray) -> InputBox:
    """The box the network is trained and regularized on: the hull of every copy's box.

    A ``given`` box must contain that hull (ValueError naming the first copy outside it);
    a copy whose box leaves the training data's range (by more than :data:`OUTSIDE_DATA` of
    its span) is warned about, since the network extrapolates there and the refinement
    cannot judge its accuracy.
    """
    lower = np.min([c.box.lower for c in copies], axis=0)
    upper = np.max([c.box.upper for c in copies], axis=0)
    if given is not None:
        for copy in copies:
            outside = (copy.box.lower < given.lower) | (copy.box.upper > given.upper)
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise ValueError(
                    f"input_bounds does not cover the box of {copy.label}: input {i} ranges over "
                    f"[{copy.box.lower[i]:g}, {copy.box.upper[i]:g}], input_bounds gives "
                    f"[{given.lower[i]:g}, {given.upper[i]:g}]; leave input_bounds out to "
                    "train on the hull of the copies' boxes"
                )
        return given
    _warn_outside_data(copies, np.asarray(X, dtype=np.float64).reshape(len(X), -1))
    return InputBox(lower, upper)


def _warn_outside_data(copies: list[Copy], X: np.ndarray) -> None:
    low, high = X.min(axis=0), X.max(axis=0)
    slack = OUTSIDE_DATA * np.maximum(high - low, 1e-12)
    leaving = [
        c for c in copies if np.any(c.box.lower < low - slack) or np.any(c.box.upper > high + slack)
    ]
    if not leaving:
        return
    first = leaving[0]
    i = int(np.flatnonzero((first.box.lower < low - slack) | (first.box.upper > high + slack))[0])
    warnings.warn(
        f"{len(leaving)} of {len(copies)} copies have boxes leaving the training data's range, "
        f"e.g. {first.label}: input {i} over [{first.box.lower[i]:g}, {first.box.upper[i]:g}], "
        f"data over [{low[i]:g}, {high[i]:g}]; the network extrapolates there",
        UserWarning,
        stacklevel=4,
    )


@dataclass(frozen=True)
class ModelMeasure:
    """Measures a network on the user's model, as :class:`~.rounds.RoundMeasure` does on one
    copy over one box: the same history columns, plus ``copies`` and ``binaries``."""

    build: Build
    milp_time_limit: float | None

    def __call__(self, network: Network) -> tuple[dict[str, Any], pyo.ConcreteModel | None]:
        """The row's measured columns, and the solved model (None: no MILP, or no point
        found) for the true function."""
        model, blocks = embed(self.build, network)
        stats = [layer_statistics(b.network, bounds) for b in blocks for bounds in b.copy_bounds()]
        unstable, big_m = big_m_summary([row for rows in stats for row in rows])
        variables = model.component_data_objects(pyo.Var, active=True)
        binaries = sum(1 for v in variables if v.is_binary())
        lp = solve_model(_relaxed(model), load=False).objective
        milp, gap = None, None
        if self.milp_time_limit is not None:
            milp = solve_model(model, self.milp_time_limit, load=True, start=blocks)
            reference = milp.objective if milp.optimal else milp.bound
            gap = abs(reference - lp)
        row = Difficulty(unstable, big_m, lp, milp, gap).as_dict()
        row.update(copies=len(stats), binaries=binaries)
        if milp is not None:
            row["argmin"] = [x.tolist() for b in blocks for x in np.atleast_2d(b.input_values())]
        solved = milp is not None and milp.incumbent != "none"
        return row, model if solved else None


def _relaxed(model: pyo.ConcreteModel) -> pyo.ConcreteModel:
    """A copy of ``model`` with its integer variables relaxed: the LP relaxation."""
    relaxed = model.clone()
    pyo.TransformationFactory("core.relax_integer_vars").apply_to(relaxed)
    return relaxed


def function_name(function: Callable) -> str:
    """``module.qualname`` of the user's function, for messages."""
    module, qualname = (getattr(function, k, None) for k in ("__module__", "__qualname__"))
    return f"{module}.{qualname}" if module and qualname else repr(function)
