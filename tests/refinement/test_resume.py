"""A resumed refinement is the run that was interrupted: the training state saved beside each
checkpoint (``round_003.state.npz``) brings back Adam's moments, the random state and the
step counter, so the rounds after ``--resume`` are those an uninterrupted run trains."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import Network
from pyomo_nnrelax.refinement import refine
from pyomo_nnrelax.refinement.history import state_path
from pyomo_nnrelax.training import L2, BoundWidth, Trainer

BOX = [(-2.0, 2.0), (-2.0, 2.0)]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (240, 2))
    return X, np.sin(X[:, 0]) * X[:, 1]


class EveryOtherStepL2(L2):
    """L2 at even training steps only: a regularizer that reads the trainer's step counter."""

    def value_and_grad(self, ctx):
        value, grads = super().value_and_grad(ctx)
        return (value, grads) if ctx.step % 2 == 0 else (0.0, [(0 * w, 0 * b) for w, b in grads])


def _trainer(data, network=None) -> Trainer:
    X, y = data
    return Trainer(
        network or Network.mlp([2, 8, 8, 1], seed=0), X[:200], y[:200], input_bounds=BOX,
        validation=(X[200:], y[200:]), regularizer=EveryOtherStepL2(), lam=1e-2, epochs=2,
        batch_size=48, lr=1e-2, seed=3,
    )  # fmt: skip


def test_a_trainer_continues_exactly_from_its_state(data):
    # 200 samples in batches of 48: 5 steps an epoch, so the parity of the step counter
    # (which EveryOtherStepL2 reads) alternates from epoch to epoch
    first = _trainer(data)
    first.fit()
    state = first.state()
    expected = first.fit()

    # a new trainer, started from the checkpoint as a resumed refinement starts it
    second = _trainer(data, network=first.network_)
    second.load_state(state)
    resumed = second.fit()

    assert [e.train_loss for e in resumed.history] == [e.train_loss for e in expected.history]
    assert [e.val_loss for e in resumed.history] == [e.val_loss for e in expected.history]
    assert resumed.network == expected.network  # bit for bit
    assert second.steps_ == first.steps_


def test_a_state_that_does_not_fit_the_network_is_refused(data):
    state = _trainer(data).state()
    with pytest.raises(ValueError, match="parameter 0 has shape"):
        _trainer(data, network=Network.mlp([2, 5, 8, 1], seed=0)).load_state(state)
    del state["rng"]
    with pytest.raises(ValueError, match="lacks 'rng'"):
        _trainer(data).load_state(state)


@pytest.fixture
def fitted(data) -> Network:
    """A network trained on the data: a regularizer costs it accuracy, so the loss budget
    sets lambda back and chooses a round."""
    X, y = data
    trainer = Trainer(Network.mlp([2, 8, 8, 1], seed=0), X, y, input_bounds=BOX, epochs=60,
                      batch_size=32, lr=1e-2)  # fmt: skip
    return trainer.fit().network


def _refine(network, data, output_dir, **options):
    X, y = data
    return refine(
        network, X, y, input_bounds=BOX, output_dir=output_dir, rounds=4, epochs_per_round=2,
        regularizer=BoundWidth(), lam=0.01, loss_budget=1.25, milp_time_limit=None,
        progress=False, batch_size=32, lr=1e-2, seed=1, **options,
    )  # fmt: skip


def deterministic(rows: list[dict]) -> list[dict]:
    """What a round computed, without the clock (training seconds; NaN as None, so that
    equal rows compare equal)."""
    return [
        {k: None if v != v else v for k, v in row.items() if not k.endswith("seconds")}
        for row in rows
    ]


@pytest.mark.parametrize("kept", [2, 3])
def test_a_refinement_interrupted_and_resumed_is_the_uninterrupted_one(
    fitted, data, tmp_path, monkeypatch, kept
):
    """Interrupted after round 2 (outside the budget: the resumed run first goes back to
    round 0, with fresh Adam moments as the uninterrupted one did) or round 3 (within it:
    Adam's moments carry on)."""
    from pyomo_nnrelax.refinement import rounds as rounds_module

    whole = _refine(fitted, data, tmp_path / "whole")
    rows = whole.history.rows
    assert [r["within_budget"] for r in rows] == [True, False, False, True, True]

    measure, calls = rounds_module.difficulty, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == kept + 2:  # rounds 0..kept are kept, the next one is interrupted
            raise KeyboardInterrupt
        return measure(*args, **kwargs)

    monkeypatch.setattr(rounds_module, "difficulty", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _refine(fitted, data, tmp_path / "parts")
    assert state_path(tmp_path / "parts", kept).is_file()
    monkeypatch.setattr(rounds_module, "difficulty", measure)
    resumed = _refine(fitted, data, tmp_path / "parts", resume=True)

    assert deterministic(resumed.history.rows) == deterministic(rows)
    assert resumed.chosen_round == whole.chosen_round == 4  # a round trained after the resume
    assert resumed.network == whole.network


def test_a_folder_without_training_states_resumes_with_a_warning(fitted, data, tmp_path):
    X, y = data
    options = dict(
        input_bounds=BOX, output_dir=tmp_path / "r", regularizer=BoundWidth(),
        epochs_per_round=1, milp_time_limit=None, progress=False, batch_size=32,
    )  # fmt: skip
    refine(fitted, X, y, rounds=1, **options)
    state_path(tmp_path / "r", 1).unlink()  # as a run of an older version left it

    with pytest.warns(UserWarning, match="round_001.state.npz is missing"):
        result = refine(fitted, X, y, rounds=2, resume=True, **options)

    assert [r["round"] for r in result.history.rows] == [0, 1, 2]


def test_the_dual_lp_gaps_slopes_come_back_with_the_state(data):
    """The dual-network LP gap keeps per-sample slopes from step to step: a trainer rebuilt
    with a fresh regularizer and the saved state trains on exactly as the original does."""
    from pyomo_nnrelax.training import LPGap

    def trainer(network=None) -> Trainer:
        X, y = data
        return Trainer(
            network or Network.mlp([2, 8, 8, 1], seed=0), X[:200], y[:200], input_bounds=BOX,
            regularizer=BoundWidth() + LPGap(slope_steps=1), lam=0.1, epochs=2, batch_size=48,
            seed=3,
        )  # fmt: skip

    first = trainer()
    first.fit()
    state = first.state()
    assert any(k.startswith("regularizer.1.slopes.min.") for k in state)
    expected = first.fit()
    second = trainer(network=first.network_)
    second.load_state(state)
    resumed = second.fit()
    assert [e.regularizer for e in resumed.history] == [e.regularizer for e in expected.history]
    assert resumed.network == expected.network
