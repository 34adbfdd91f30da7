"""The refinement loop: train a network round after round toward an easier MILP.

Each round runs some epochs of :class:`Trainer` and then measures the network through the
package's own Pyomo block (unstable neurons, mean big-M, LP relaxation value, and, with a time
limit, the MILP solve time, nodes and global LP gap), writes a checkpoint ONNX file, and
stops early once the targets are met.  The input file is never overwritten.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import same_file
from ..network import Network
from ..onnx import read_onnx
from ..options import LOSS_REFERENCES, LossReference, check_option
from ..progress import progress_bar
from ..training import BoundWidth, LPGap, Regularizer, Trainer
from .budget import AccuracyBudget, choose_round, last_good_round, on_pace, schedule_ratio
from .data import save_rows
from .measure import difficulty, milp_argmin

HISTORY_FILE = "history.json"


@dataclass
class RefineHistory:
    """One row per round (round 0 is the starting network), saved as JSON or CSV."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the rows to ``path``: ``.csv`` as a table, anything else as JSON."""
        return save_rows(self.rows, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RefineHistory:
        """Read a history written by :meth:`save` in JSON."""
        return cls(json.loads(Path(path).read_text()))

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]


@dataclass(frozen=True)
class RefineResult:
    """The result network (the last round's; with a budget, the chosen round's), the history,
    and this call's checkpoints: the one it started from (``round_000.onnx``, or the checkpoint
    a resumed run continued) and every one written."""

    network: Network
    history: RefineHistory
    checkpoints: list[Path]
    stopped_by: str
    chosen_round: int | None = None
    chosen_because: str = "the last round (no budget)"


def _default_output_dir(source) -> Path:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.with_name(path.stem + "_refined")
    return Path("nnrelax_refined")


def _checkpoint(output_dir: Path, round_index: int) -> Path:
    return output_dir / f"round_{round_index:03d}.onnx"


def _targets_met(row: dict[str, Any], targets: dict[str, float | None]) -> str | None:
    """The name of the first target met by ``row`` (all given targets must hold), or None."""
    given = {k: v for k, v in targets.items() if v is not None}
    if not given:
        return None
    for key, limit in given.items():
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value > limit:
            return None
    return "targets " + ", ".join(f"{k} <= {v}" for k, v in given.items())


def refine(
    source: str | os.PathLike | Network,
    X,
    y,
    *,
    input_bounds=None,
    rounds: int = 5,
    epochs_per_round: int = 20,
    regularizer: Regularizer | None = None,
    lam: float = 1e-3,
    validation=None,
    output_dir: str | os.PathLike | None = None,
    target_unstable: int | None = None,
    target_lp_gap: float | None = None,
    target_milp_seconds: float | None = None,
    milp_time_limit: float | None = 60.0,
    sense: str = "min",
    loss_budget: float | None = None,
    loss_reference: LossReference = "start",
    evaluate: Callable[[np.ndarray], float] | None = None,
    decision_budget: float | None = None,
    lam_growth: float = 2.0,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **trainer_options,
) -> RefineResult:
    """Alternate training epochs with measurements of the MILP, writing a checkpoint per round.

    Parameters
    ----------
    source : path or Network
        The network to refine (ONNX file or Network); never overwritten.
    X, y, validation, lam, trainer_options :
        Passed to :class:`Trainer` (``batch_size``, ``lr``, ``seed``, ``loss``, ...).
    regularizer : Regularizer, optional
        Default ``BoundWidth() + LPGap(sense=sense, method="dual")``: the paper's BW+LP, with
        the LP gap bounded by the dual network (docs/training.md), several times cheaper
        than solving the LPs and as effective in ``benchmarks/reproduce_paper.py``.
    rounds, epochs_per_round : int
        At most ``rounds`` rounds in all (a resumed run continues up to ``rounds``, counting
        the rounds already in its history) of ``epochs_per_round`` epochs each.
    output_dir : path, optional
        Where ``round_000.onnx`` (the start), ``round_001.onnx``, ... and ``history.json`` go;
        default ``<input stem>_refined/`` beside the input.
    target_unstable, target_lp_gap, target_milp_seconds : optional
        Stop after the first round meeting every target given.
    milp_time_limit : float or None
        Time limit of each round's MILP solve (seconds); None skips the MILP, and with it
        the global LP gap and MILP time.
    loss_budget : float, optional
        Keep the held-out loss (validation, else training data) within this factor of the
        starting network's, e.g. 1.25.  ``lam`` is then where the search starts: it grows
        by ``lam_growth`` after each round within budget and shrinks after a round that
        breaks it (by ``lam_growth``, more when the loss overshoots by far:
        :meth:`~pyomo_nnrelax.experiments.budget.AccuracyBudget.next_lam`), which is set
        back to the last round within budget.  The result is the
        round within budget with the easiest MILP (see :mod:`~pyomo_nnrelax.experiments.budget`).
        Without a budget, ``lam`` stays fixed and the result is the last round.
    loss_reference : {"start", "unregularized"}
        What the budget's losses are relative to: the starting network's held-out loss (for
        a network that is already trained), or that of an unregularized training of the
        starting network for as many epochs as the refinement may run (for one that is not,
        e.g. ``Network.mlp``); recorded in round 0 as ``reference_loss``.  With
        ``"unregularized"`` the lambda schedule judges each round against that training after
        as many epochs (``reference_by_round`` in round 0, ``paced_ratio`` and ``on_pace``
        per round), so early rounds are not held to a loss the reference reached only later;
        the round returned is still within budget against the full training.
    evaluate : callable, optional
        The true function (``evaluate(x) -> float`` at one input): each round's MILP argmin
        is evaluated with it and the history records ``true_value`` and
        ``decision_change`` (how much worse than at the starting network's argmin).
    decision_budget : float, optional
        Largest allowed ``decision_change`` (needs ``evaluate``); a budget like
        ``loss_budget``, and the two combine.
    resume : bool
        Continue from the last round in ``output_dir``'s history and its checkpoint (Adam
        restarts).  Checkpoints and the history are written atomically, checkpoint first, so
        an interrupted run resumes from its last complete round; without a history (a run
        stopped before round 0 was kept) it starts from round 0.
    overwrite : bool
        Allow replacing checkpoints of an earlier run in ``output_dir``.
    """
    if rounds < 1 or epochs_per_round < 1:
        raise ValueError("rounds and epochs_per_round must be positive integers")
    budget = AccuracyBudget(loss_budget, decision_budget, lam_growth)
    check_option("loss_reference", loss_reference, LOSS_REFERENCES)
    if decision_budget is not None and evaluate is None:
        raise ValueError("decision_budget needs evaluate= (the true function)")
    if evaluate is not None and milp_time_limit is None:
        raise ValueError("evaluate= needs the MILP argmin: give milp_time_limit a value")
    output_dir = Path(output_dir) if output_dir is not None else _default_output_dir(source)
    history, first_round, epoch_offset = RefineHistory(), 0, 0
    if resume and not (output_dir / HISTORY_FILE).is_file():
        # killed before round 0 was kept: start again, over what that run left
        resume, overwrite = False, True
    network = source if isinstance(source, Network) else read_onnx(source)
    if resume:
        history = RefineHistory.load(output_dir / HISTORY_FILE)
        first_round = int(history.rows[-1]["round"])
        epoch_offset = int(history.rows[-1]["epochs"])
        # the source's ties, whatever the checkpoint file kept
        network = read_onnx(_checkpoint(output_dir, first_round)).with_structure_of(network)
    else:
        _check_fresh_output_dir(source, output_dir, overwrite)
    # the trainer checks the data and the box before anything is written
    trainer = Trainer(
        network,
        X,
        y,
        input_bounds=input_bounds,
        validation=validation,
        lam=lam,
        regularizer=regularizer
        if regularizer is not None
        else BoundWidth() + LPGap(sense=sense, method="dual"),
        epochs=epochs_per_round,
        **trainer_options,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    box = trainer.input_bounds  # input_bounds, else the network's, checked by the trainer
    targets = {
        "unstable": target_unstable,
        "lp_gap": target_lp_gap,
        "milp_seconds": target_milp_seconds,
    }

    def measure(net: Network, reference: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"held_out_loss": trainer.held_out_loss(net)}
        if evaluate is None:
            row.update(difficulty(net, box, sense, milp_time_limit=milp_time_limit).as_dict())
        else:
            stats, x = milp_argmin(net, box, sense, time_limit=milp_time_limit)
            row.update(difficulty(net, box, sense, milp=stats).as_dict())
            row.update(argmin=x.tolist(), true_value=float(evaluate(x)))
            worse = row["true_value"] - reference.get("true_value", row["true_value"])
            row["decision_change"] = worse if sense == "min" else -worse
        # histories written before reference_loss existed are relative to round 0's loss
        base = reference.get("reference_loss", reference.get("held_out_loss"))
        ratio = row["held_out_loss"] / (row["held_out_loss"] if base is None else base)
        row["loss_ratio"] = ratio if math.isfinite(ratio) else None
        return row

    def judge(row: dict[str, Any], reference: dict[str, Any]) -> None:
        """``within_budget`` (against the reference loss), and where the reference is an
        unregularized training, ``on_pace`` (against it after as many epochs): the choice of
        round uses the first, the lambda schedule :func:`on_pace`."""
        row["within_budget"], row["verdict"] = budget.judge(row)
        paced = reference.get("reference_by_round")
        if paced is None or row["round"] >= len(paced):
            return
        row["paced_ratio"] = row["held_out_loss"] / paced[row["round"]]
        row["on_pace"], why = budget.judge({**row, "loss_ratio": row["paced_ratio"]})
        if row["within_budget"] and not row["on_pace"]:
            row["verdict"] = f"{why} after as many epochs"

    checkpoints = [_checkpoint(output_dir, first_round)] if resume else []
    if not resume:
        start_row = {"round": 0, "epochs": 0, "lam": 0.0, **measure(network, {})}
        if budget.active and loss_reference == "unregularized":
            paced = _unregularized_losses(trainer, rounds, epochs_per_round)
            start_row["reference"] = f"unregularized training, {rounds * epochs_per_round} epochs"
            start_row["reference_by_round"] = [start_row["held_out_loss"], *paced]
            start_row["reference_loss"] = paced[-1]
            start_row["on_pace"] = True  # the start is where the unregularized training starts
        else:
            start_row["reference"] = "the starting network"
            start_row["reference_loss"] = start_row["held_out_loss"]
        start_row["loss_ratio"] = start_row["held_out_loss"] / start_row["reference_loss"]
        start_row["within_budget"] = loss_reference == "start" or budget.judge(start_row)[0]
        checkpoints.append(_save(network, box, output_dir, 0, overwrite))
        history.rows.append(start_row)
        history.save(output_dir / HISTORY_FILE)
    reference = history.rows[0]
    if budget.active and not on_pace(history.rows[-1]):
        trainer.restore(_last_within_budget(history, output_dir))
    lam_now = _next_lam(history, budget, lam)
    stopped_by = f"{rounds} rounds"
    bar = progress_bar(max(rounds - first_round, 0), "refine", "round", show=progress)
    for round_index in range(first_round + 1, rounds + 1):
        trainer.lam = lam_now
        start = time.perf_counter()
        result = trainer.fit(epochs_per_round)
        seconds = time.perf_counter() - start
        network = result.network
        # the round's checkpoint is its best-validation epoch: report that epoch's losses
        kept = next((e for e in result.history if e.epoch == result.best_epoch), result.history[-1])
        row = {
            "round": round_index,
            "epochs": epoch_offset + trainer.history_[-1].epoch,
            "kept_epoch": epoch_offset + kept.epoch,
            "lam": lam_now,
            "train_loss": kept.train_loss,
            "val_loss": kept.val_loss,
            "regularizer": kept.regularizer,
            "lp_failures": sum(e.lp_failures for e in result.history),
            "train_seconds": seconds,
            **measure(network, reference),
        }
        judge(row, reference)
        if round_index == 1 and budget.active and loss_reference == "start":
            _warn_if_untrained(reference, row)
        history.rows.append(row)
        # a resumed run replaces the checkpoints its interrupted part wrote past the history
        checkpoints.append(_save(network, box, output_dir, round_index, overwrite or resume))
        history.save(output_dir / HISTORY_FILE)
        bar.update(1)
        bar.show(unstable=row["unstable"], lp_gap=row["lp_gap"], loss=row["train_loss"])
        if budget.active:
            if not on_pace(row):
                trainer.restore(_last_within_budget(history, output_dir))
            lam_now = budget.next_lam(lam_now, on_pace(row), schedule_ratio(row))
        met = _targets_met(row, targets) if row["within_budget"] else None
        if met:
            stopped_by = met
            break
    bar.close()
    if not budget.active:
        return RefineResult(network, history, checkpoints, stopped_by)
    chosen, why = choose_round(history.rows)
    for row in history.rows:
        row["chosen"] = row["round"] == chosen
    history.save(output_dir / HISTORY_FILE)
    chosen_network = read_onnx(_checkpoint(output_dir, chosen)).with_structure_of(trainer.network)
    return RefineResult(chosen_network, history, checkpoints, stopped_by, chosen, why)


def _unregularized_losses(trainer: Trainer, rounds: int, epochs_per_round: int) -> list[float]:
    """Held-out losses of the starting network trained without a regularizer, after each of
    ``rounds`` rounds of ``epochs_per_round`` epochs (trained round by round, as the
    refinement trains): the budget's reference is the last, the schedule's pace each one."""
    free = Trainer(
        trainer.network, trainer.X, trainer.y, input_bounds=trainer.input_bounds,
        validation=trainer.validation, loss=trainer.loss, quantiles=trainer.quantiles,
        epochs=epochs_per_round, batch_size=trainer.batch_size, lr=trainer.lr,
        seed=trainer.seed, scale_targets=trainer.scale_targets,
    )  # fmt: skip
    return [trainer.held_out_loss(free.fit().network) for _ in range(rounds)]


def _warn_if_untrained(reference: dict[str, Any], first: dict[str, Any]) -> None:
    """A loss budget relative to an untrained network constrains little: say so when the
    first regularized round already halves the starting network's held-out loss."""
    if first["held_out_loss"] < 0.5 * reference["held_out_loss"]:
        warnings.warn(
            f"the held-out loss fell from {reference['held_out_loss']:.4g} to "
            f"{first['held_out_loss']:.4g} in round 1: the starting network does not look "
            "trained, and a loss budget relative to it constrains little; pass "
            "loss_reference='unregularized' (CLI: --loss-reference unregularized)",
            stacklevel=3,
        )


def _last_within_budget(history: RefineHistory, output_dir: Path) -> Network:
    """The checkpoint of :func:`~pyomo_nnrelax.experiments.budget.last_good_round`."""
    return read_onnx(_checkpoint(output_dir, last_good_round(history.rows)))


def _next_lam(history: RefineHistory, budget: AccuracyBudget, lam: float) -> float:
    """Lambda of the next round: ``lam`` on a fresh run or without a budget, else the
    continuation from the last round's lambda and verdict."""
    last = history.rows[-1]
    if not budget.active or last["round"] == 0:
        return lam
    return budget.next_lam(float(last["lam"]), on_pace(last), schedule_ratio(last))


def _check_fresh_output_dir(source, output_dir: Path, overwrite: bool) -> None:
    """Refuse a checkpoint folder that holds an earlier run's checkpoints (unless ``overwrite``)
    or whose first checkpoint would be the source file itself."""
    if isinstance(source, (str, os.PathLike)) and same_file(source, _checkpoint(output_dir, 0)):
        raise ValueError(
            f"the checkpoint {_checkpoint(output_dir, 0)} would replace the source {source}; "
            "choose another output_dir"
        )
    existing = sorted(output_dir.glob("round_*.onnx")) if output_dir.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds checkpoints ({existing[0].name}, ...); "
            "pass resume=True to continue them or overwrite=True to replace them"
        )


def _save(network: Network, box, output_dir: Path, round_index: int, overwrite: bool) -> Path:
    path = _checkpoint(output_dir, round_index)
    # float64: the checkpoint is exactly the network its history row measured
    network.with_input_bounds(*box).to_onnx(path, overwrite=overwrite, dtype="float64")
    return path
