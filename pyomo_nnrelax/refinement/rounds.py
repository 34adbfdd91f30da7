"""One round of the refinement: what is measured of a network, and how the round is judged.

Every round (round 0 is the starting network) is measured through the package's own Pyomo
block (:func:`~pyomo_nnrelax.measure.difficulty`): unstable neurons, mean big-M, the LP
relaxation value and, with a time limit, the MILP's time, nodes and global LP gap; with the
user's true function, the true value at the MILP's argmin.  The budget
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

Row = dict[str, Any]


@dataclass(frozen=True)
class RoundMeasure:
    """Measures a network the way every round is measured.

    ``trainer`` gives the held-out loss; the MILP is ``sense`` over ``box`` with
    ``milp_time_limit`` (None: no MILP); ``evaluate`` is the user's true function.
    """

    trainer: Trainer
    box: InputBox
    sense: str
    milp_time_limit: float | None
    evaluate: Callable[[np.ndarray], float] | None

    def __call__(self, network: Network, reference: Row) -> Row:
        """The measured columns of a history row; ``reference`` is round 0's row ({} for
        round 0 itself)."""
        row: Row = {"held_out_loss": self.trainer.held_out_loss(network)}
        box, sense = self.box, self.sense
        if self.evaluate is None:
            row.update(
                difficulty(network, box, sense, milp_time_limit=self.milp_time_limit).as_dict()
            )
        else:
            stats, x = milp_argmin(network, box, sense, time_limit=self.milp_time_limit)
            row.update(difficulty(network, box, sense, milp=stats).as_dict())
            row.update(argmin=x.tolist(), true_value=float(self.evaluate(x)))
            worse = row["true_value"] - reference.get("true_value", row["true_value"])
            row["decision_change"] = worse if sense == "min" else -worse
        # histories written before reference_loss existed are relative to round 0's loss
        base = reference.get("reference_loss", reference.get("held_out_loss"))
        ratio = row["held_out_loss"] / (row["held_out_loss"] if base is None else base)
        row["loss_ratio"] = ratio if math.isfinite(ratio) else None
        return row


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
