"""One round of the refinement: what is measured of a network, and how the round is judged.

Every round (round 0 is the starting network) is measured through the package's own Pyomo
block (:func:`~pyomo_nnrelax.measure.difficulty`), or on the user's own model
(:mod:`.user_model`): unstable neurons, mean big-M, the LP relaxation value and, with a time
limit, the MILP's time, nodes and global LP gap; with the user's true function, the true
value at the MILP's argmin (of the decision the user's model makes).  The budget
(:mod:`.budget`) then says whether the round may be chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..box import InputBox
from ..measure import difficulty, milp_argmin
from ..network import Network
from ..training import Trainer, TrainResult
from .budget import AccuracyBudget
from .user_model import ModelMeasure, function_name

Row = dict[str, Any]


@dataclass(frozen=True)
class RoundMeasure:
    """Measures a network the way every round is measured.

    ``trainer`` gives the held-out loss; the MILP is ``sense`` over ``box`` with
    ``milp_time_limit`` (None: no MILP), or with ``model`` the user's own model
    (:mod:`.user_model`); ``evaluate`` is the user's true function, of one input or, with
    ``model``, of the solved model.
    """

    trainer: Trainer
    box: InputBox
    sense: str
    milp_time_limit: float | None
    evaluate: Callable[[Any], float] | None
    model: ModelMeasure | None = None

    def __call__(self, network: Network, reference: Row) -> Row:
        """The measured columns of a history row; ``reference`` is round 0's row ({} for
        round 0 itself)."""
        row: Row = {"held_out_loss": self.trainer.held_out_loss(network)}
        if self.model is not None:
            measured, solved = self.model(network)
            row.update(measured)
            if self.evaluate is not None:
                value = None if solved is None else true_value(self.evaluate, solved, _ON_MODEL)
                row["true_value"] = value
        elif self.evaluate is None:
            row.update(
                difficulty(
                    network, self.box, self.sense, milp_time_limit=self.milp_time_limit
                ).as_dict()
            )
        else:
            stats, x = milp_argmin(network, self.box, self.sense, time_limit=self.milp_time_limit)
            row.update(difficulty(network, self.box, self.sense, milp=stats).as_dict())
            x = np.array(x, dtype=np.float64)
            row.update(argmin=x.tolist(), true_value=true_value(self.evaluate, x.copy(), _at(x)))
        if self.evaluate is not None:
            row["decision_change"] = _worsening(row, reference, self.sense)
        # histories written before reference_loss existed are relative to round 0's loss
        base = reference.get("reference_loss", reference.get("held_out_loss"))
        ratio = row["held_out_loss"] / (row["held_out_loss"] if base is None else base)
        row["loss_ratio"] = ratio if math.isfinite(ratio) else None
        return row

    def check_evaluate(self) -> None:
        """Call the true function once, at the centre of the box: one that fails does so
        before anything is written, not after round 0's MILP (without a box, the
        measurement itself says what is missing; with ``model``, round 0's solved model is
        the first point, and it is measured before anything is written)."""
        if self.evaluate is not None and self.box is not None and self.model is None:
            centre = np.array(self.box.center, dtype=np.float64)
            true_value(self.evaluate, centre.copy(), _at(centre))


_ON_MODEL = "on the solved model"


def _worsening(row: Row, reference: Row, sense: str) -> float | None:
    """How much worse the true value is than the reference round's (None if unknown)."""
    value, base = row.get("true_value"), reference.get("true_value", row.get("true_value"))
    if value is None or base is None:
        return None
    worse = value - base
    return worse if sense == "min" else -worse


def true_value(evaluate: Callable[[Any], float], argument: Any, where: str) -> float:
    """``evaluate(argument)``, the user's true function at one input (or, with ``model=``,
    at the solved model), as one finite float.

    Anything else (an exception, several numbers, NaN or an infinite value) raises
    ValueError naming the function and ``where``: a round judged by it would be meaningless.
    """
    name = function_name(evaluate)
    try:
        value = evaluate(argument)
    except Exception as exc:  # the user's code: one line naming it, the cause chained
        raise ValueError(
            f"the true function {name} raised {type(exc).__name__}: {exc} {where}"
        ) from exc
    try:
        number = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        number = np.array([])
    if number.size != 1 or not math.isfinite(number[0]):
        raise ValueError(
            f"the true function {name} returned {value!r} {where}; it must return one finite number"
        )
    return float(number[0])


def _at(x: np.ndarray) -> str:
    return f"at x = {np.array2string(np.asarray(x), precision=6, separator=', ')}"


def judge(budget: AccuracyBudget, row: Row, reference: Row) -> None:
    """Set ``within_budget`` (against the reference loss) and, where the reference is an
    unregularized training, ``on_pace`` (against it after as many epochs): the choice of
    round uses the first, the lambda schedule :func:`~.budget.on_pace`."""
    row["within_budget"], row["verdict"] = budget.judge(row)
    paced = reference.get("reference_by_round")
    if paced is None or row["round"] >= len(paced):
        return
    row["paced_ratio"] = row["held_out_loss"] / paced[row["round"]]
    row["on_pace"], why = budget.judge({**row, "loss_ratio": row["paced_ratio"]})
    if row["within_budget"] and not row["on_pace"]:
        row["verdict"] = f"{why} after as many epochs"


def training_columns(
    round_index: int, epoch_offset: int, lam: float, result: TrainResult, trainer: Trainer
) -> Row:
    """The training columns of a round's row.  The round's checkpoint is its best-validation
    epoch, so the losses reported are that epoch's."""
    kept = next((e for e in result.history if e.epoch == result.best_epoch), result.history[-1])
    return {
        "round": round_index,
        "epochs": epoch_offset + trainer.history_[-1].epoch,
        "kept_epoch": epoch_offset + kept.epoch,
        "lam": lam,
        "train_loss": kept.train_loss,
        "val_loss": kept.val_loss,
        "regularizer": kept.regularizer,
        "lp_failures": sum(e.lp_failures for e in result.history),
    }


def start_row(
    network: Network,
    measure: RoundMeasure,
    budget: AccuracyBudget,
    loss_reference: str,
    paced: list[float] | None,
    paced_epochs: int = 0,
) -> Row:
    """Round 0: the starting network measured, and the reference the budget is relative to
    (its own held-out loss, or the losses ``paced`` of an unregularized training of
    ``paced_epochs`` epochs, round by round)."""
    row: Row = {"round": 0, "epochs": 0, "lam": 0.0, **measure(network, {})}
    if paced is not None:
        row["reference"] = f"unregularized training, {paced_epochs} epochs"
        row["reference_by_round"] = [row["held_out_loss"], *paced]
        row["reference_loss"] = paced[-1]
        row["on_pace"] = True  # the start is where the unregularized training starts
    else:
        row["reference"] = "the starting network"
        row["reference_loss"] = row["held_out_loss"]
    row["loss_ratio"] = row["held_out_loss"] / row["reference_loss"]
    row["within_budget"] = loss_reference == "start" or budget.judge(row)[0]
    return row


def targets_met(row: Row, targets: dict[str, float | None]) -> str | None:
    """The name of the targets met by ``row`` (all given targets must hold), or None."""
    given = {k: v for k, v in targets.items() if v is not None}
    if not given:
        return None
    for key, limit in given.items():
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value > limit:
            return None
    return "targets " + ", ".join(f"{k} <= {v}" for k, v in given.items())
