"""The refinement loop: train a network round after round toward an easier MILP.

Each round runs some epochs of :class:`~pyomo_nnrelax.training.Trainer`, measures the network
(:mod:`.rounds`), writes a checkpoint and a history row (:mod:`.history`), and lets the
accuracy budget (:mod:`.budget`) set the next round's regularizer weight.  The input file is
never overwritten.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..box import InputBox, as_input_box
from ..network import Network
from ..onnx import read_onnx
from ..onnx.write import as_written
from ..options import LOSS_REFERENCES, LossReference, check_option
from ..progress import progress_bar
from ..training import BoundWidth, LPGap, Regularizer, Trainer
from .budget import AccuracyBudget, choose_round, last_good_round, on_pace, schedule_ratio
from .history import (
    HISTORY_FILE,
    RefineHistory,
    check_fresh_output_dir,
    checkpoint_path,
    default_output_dir,
    load_checkpoint,
    load_state,
    save_checkpoint,
    save_state,
    state_path,
)
from .rounds import RoundMeasure, judge, start_row, targets_met, training_columns
from .user_model import Build, ModelMeasure, inspect, training_box


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
    evaluate: Callable[[Any], float] | None = None,
    decision_budget: float | None = None,
    lam_growth: float = 2.0,
    model: Build | None = None,
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
        Default ``BoundWidth() + LPGap(sense=sense)``: the paper's BW+LP, with the LP gap
        bounded by the dual network (docs/training.md), several times cheaper than solving
        the LPs and as effective in ``benchmarks/reproduce_paper.py``.
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
        :meth:`~pyomo_nnrelax.refinement.budget.AccuracyBudget.next_lam`), which is set
        back to the last round within budget.  The result is the round within budget with
        the easiest MILP (see :mod:`~pyomo_nnrelax.refinement.budget`).  Without a budget,
        ``lam`` stays fixed and the result is the last round.
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
        ``decision_change`` (how much worse than at the starting network's argmin).  It is
        called once at the centre of the box before anything is written; an exception, NaN
        or an infinite value raises ValueError naming it and the point.
    decision_budget : float, optional
        Largest allowed ``decision_change`` (needs ``evaluate``); a budget like
        ``loss_budget``, and the two combine.
    model : callable, optional
        ``model(network)`` returns the user's Pyomo model with ``network`` embedded in one
        or more :class:`~pyomo_nnrelax.NNBlock` (any number of copies, batched or not, any
        other constraints, one active objective).  Each round is then measured on that
        model instead of on one copy over one box: MILP time, nodes and gap, LP
        relaxation, the unstable neurons of all copies; ``evaluate`` is then called as
        ``evaluate(m)`` with the solved model (the true cost of its decision) and
        ``decision_change`` follows the direction of the model's objective.  The network
        is trained and regularized on ``input_bounds`` if given (it must cover every
        copy's box), else on the hull of the copies' boxes (round 0's ``training_box``
        says which), with a warning when a copy's box leaves the training data's range.
    resume : bool
        Continue from the last round in ``output_dir``'s history, its checkpoint and its
        training state (Adam's moments, the random state, the step count, the regularizer's
        own state): the rounds that follow are those the interrupted run would have trained.
        Checkpoints, states and the history are
        written atomically, the history row last, so an interrupted run resumes from its
        last complete round; without a history (a run stopped before round 0 was kept) it
        starts from round 0.
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
    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(source)
    if resume and not (output_dir / HISTORY_FILE).is_file():
        # killed before round 0 was kept: start again, over what that run left
        resume, overwrite = False, True
    network = source if isinstance(source, Network) else read_onnx(source)
    notes: dict[str, Any] = {}
    if model is not None:
        input_bounds, sense_of_model, notes = _on_user_model(model, network, input_bounds, X)
    history = RefineHistory.load(output_dir / HISTORY_FILE) if resume else RefineHistory()
    if resume:
        network = load_checkpoint(output_dir, int(history.last["round"]), network)
    else:
        check_fresh_output_dir(source, output_dir, overwrite)
    # the trainer checks the data and the box before anything is written
    trainer = Trainer(
        network, X, y, input_bounds=input_bounds, validation=validation, lam=lam,
        regularizer=regularizer if regularizer is not None else BoundWidth() + LPGap(sense=sense),
        epochs=epochs_per_round, **trainer_options,
    )  # fmt: skip
    measure = RoundMeasure(
        trainer, trainer.input_bounds, sense if model is None else sense_of_model,
        milp_time_limit, evaluate, None if model is None else ModelMeasure(model, milp_time_limit),
    )  # fmt: skip
    measure.check_evaluate()
    if resume:
        _resume_training(trainer, output_dir, int(history.last["round"]))
    run = _Run(
        trainer, budget, output_dir, history, measure,
        {"unstable": target_unstable, "lp_gap": target_lp_gap,
         "milp_seconds": target_milp_seconds},
        overwrite or resume,
    )  # fmt: skip
    if not resume:
        run.start(network, loss_reference, rounds, epochs_per_round, notes)
    stopped_by = run.rounds(rounds, lam, progress)
    return run.result(stopped_by)


@dataclass
class _Run:
    """The state of one refinement: the trainer, the budget, the folder and its history.

    ``replace`` allows writing over checkpoints already in the folder (``overwrite``, or a
    resumed run replacing what its interrupted part wrote past the history).
    """

    trainer: Trainer
    budget: AccuracyBudget
    output_dir: Path
    history: RefineHistory
    measure: RoundMeasure
    targets: dict[str, float | None]
    replace: bool

    def __post_init__(self) -> None:
        first = self.history.rows[-1]["round"] if self.history.rows else None
        self.checkpoints = [] if first is None else [checkpoint_path(self.output_dir, first)]
        self.network = self.trainer.network

    def _keep(self, network: Network, row: dict[str, Any]) -> None:
        """Write the round's checkpoint and training state (the folder is made with the
        first), then its history row."""
        box, index = self.measure.box, int(row["round"])
        self.checkpoints.append(save_checkpoint(network, box, self.output_dir, index, self.replace))
        save_state(self.trainer.state(), self.output_dir, index)
        self.history.rows.append(row)
        self.history.save(self.output_dir / HISTORY_FILE)

    def start(
        self, network: Network, loss_reference: str, rounds: int, epochs: int, notes: dict
    ) -> None:
        """Measure and keep round 0, with the reference the budget is relative to and
        ``notes`` on how the run was set up."""
        paced = None
        if self.budget.active and loss_reference == "unregularized":
            paced = _unregularized_losses(self.trainer, rounds, epochs)
        network = as_written(network, "float64")  # what the checkpoint holds
        row = start_row(network, self.measure, self.budget, loss_reference, paced, rounds * epochs)
        self._keep(network, {**row, **notes})

    def _back_to_budget(self) -> None:
        """After a round the schedule counts as bad, train on from the last good one."""
        round_index = last_good_round(self.history.rows)
        self.trainer.restore(read_onnx(checkpoint_path(self.output_dir, round_index)))

    def rounds(self, rounds: int, lam: float, progress: bool) -> str:
        """Train and keep rounds up to ``rounds`` in all; what stopped them."""
        reference = self.history.rows[0]
        if self.budget.active and not on_pace(self.history.last):
            self._back_to_budget()
        lam_now = _next_lam(self.history, self.budget, lam)
        first_round = int(self.history.last["round"])
        epoch_offset = int(self.history.last["epochs"])
        bar = progress_bar(max(rounds - first_round, 0), "refine", "round", show=progress)
        try:
            for round_index in range(first_round + 1, rounds + 1):
                self.trainer.lam = lam_now
                began = time.perf_counter()
                result = self.trainer.fit()
                row = training_columns(round_index, epoch_offset, lam_now, result, self.trainer)
                row["train_seconds"] = time.perf_counter() - began
                network = as_written(result.network, "float64")  # what the checkpoint holds
                row.update(self.measure(network, reference))
                judge(self.budget, row, reference)
                paced = "reference_by_round" in reference
                if round_index == 1 and self.budget.active and not paced:
                    _warn_if_untrained(reference, row)
                self.network = network
                self._keep(network, row)
                bar.update(1)
                bar.show(unstable=row["unstable"], lp_gap=row["lp_gap"], loss=row["train_loss"])
                if self.budget.active:
                    if not on_pace(row):
                        self._back_to_budget()
                    lam_now = self.budget.next_lam(
                        lam_now, on_pace(row), schedule_ratio(row), self.history.rows
                    )
                met = targets_met(row, self.targets) if row["within_budget"] else None
                if met:
                    return met
        finally:
            bar.close()
        return f"{rounds} rounds"

    def result(self, stopped_by: str) -> RefineResult:
        """The last round's network, or with a budget the round it chooses."""
        if not self.budget.active:
            return RefineResult(self.network, self.history, self.checkpoints, stopped_by)
        chosen, why = choose_round(self.history.rows)
        for row in self.history.rows:
            row["chosen"] = row["round"] == chosen
        self.history.save(self.output_dir / HISTORY_FILE)
        network = load_checkpoint(self.output_dir, chosen, self.trainer.network)
        return RefineResult(network, self.history, self.checkpoints, stopped_by, chosen, why)


def _on_user_model(
    build: Build, network: Network, input_bounds, X
) -> tuple[InputBox, str, dict[str, Any]]:
    """The training box, objective direction and round-0 notes of a refinement on the
    user's model (:mod:`.user_model`)."""
    copies, sense = inspect(build, network)
    given = None if input_bounds is None else as_input_box(input_bounds, network.n_inputs)
    box = training_box(copies, given, np.asarray(X, dtype=np.float64))
    where = "input_bounds, which covers" if given is not None else "the hull of"
    notes = {"copies": len(copies), "training_box": f"{where} the {len(copies)} copies' boxes"}
    return box, sense, notes


def _resume_training(trainer: Trainer, output_dir: Path, round_index: int) -> None:
    """Load round ``round_index``'s training state into ``trainer``; a folder written before
    states were kept resumes with fresh Adam moments and random state, with a warning."""
    state = load_state(output_dir, round_index)
    if state is None:
        warnings.warn(
            f"{state_path(output_dir, round_index)} is missing (a run of an older version): "
            "training resumes with a fresh optimizer and random state, so the rounds from "
            "here differ from those of an uninterrupted run",
            stacklevel=3,
        )
        return
    try:
        trainer.load_state(state)
    except ValueError as exc:
        raise ValueError(f"{state_path(output_dir, round_index)}: {exc}") from None


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
            stacklevel=4,
        )


def _next_lam(history: RefineHistory, budget: AccuracyBudget, lam: float) -> float:
    """Lambda of the next round: ``lam`` on a fresh run or without a budget, else the
    continuation from the last round's lambda and verdict."""
    last = history.last
    if not budget.active or last["round"] == 0:
        return lam
    return budget.next_lam(float(last["lam"]), on_pace(last), schedule_ratio(last), history.rows)
