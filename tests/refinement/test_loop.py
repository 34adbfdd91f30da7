"""The refinement loop: checkpoints, history files, targets, resume, never overwriting."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pyomo_nnrelax import Network, interval_bounds, write_onnx
from pyomo_nnrelax.onnx import read_onnx
from pyomo_nnrelax.refinement import RefineHistory, refine
from pyomo_nnrelax.training import BoundWidth, Trainer

BOX = [(-2.0, 2.0), (-2.0, 2.0)]


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.onnx"
    write_onnx(Network.mlp([2, 8, 8, 1], seed=0).with_input_bounds([-2, -2], [2, 2]), path)
    return path


def run(model_path, data, **options):
    X, y = data
    defaults = dict(
        rounds=2,
        epochs_per_round=2,
        regularizer=BoundWidth(),
        lam=1e-2,
        milp_time_limit=20,
        progress=False,
        batch_size=32,
    )
    return refine(model_path, X, y, **{**defaults, **options})


def test_refine_writes_a_checkpoint_per_round_and_keeps_its_input(model_path, data):
    before = model_path.read_bytes()
    result = run(model_path, data)
    assert model_path.read_bytes() == before
    out = model_path.with_name("model_refined")
    assert [p.name for p in result.checkpoints] == [
        "round_000.onnx",
        "round_001.onnx",
        "round_002.onnx",
    ]
    assert all(p.parent == out and p.exists() for p in result.checkpoints)
    last = read_onnx(result.checkpoints[-1])
    X = data[0][:50]
    np.testing.assert_allclose(last.forward(X), result.network.forward(X), rtol=1e-5, atol=1e-5)
    assert last.input_bounds is not None


def test_history_has_a_row_per_round_and_saves_as_json_and_csv(model_path, data, tmp_path):
    result = run(model_path, data)
    rows = result.history.rows
    assert [r["round"] for r in rows] == [0, 1, 2]
    grid = np.stack(np.meshgrid(*[np.linspace(-2, 2, 301)] * 2), -1).reshape(-1, 2)
    for row, checkpoint in zip(rows, result.checkpoints):
        net = read_onnx(checkpoint)  # each row measures the network of its checkpoint
        bounds = interval_bounds(net, BOX)
        assert row["unstable"] == bounds.unstable_count(net)
        hidden = zip(bounds.lower[:-1], bounds.upper[:-1])  # the output layer is linear
        big_m = np.concatenate([np.maximum(-lo, hi)[(lo < 0) & (hi > 0)] for lo, hi in hidden])
        assert row["mean_big_m"] == pytest.approx(big_m.mean(), rel=1e-5)
        true_min = net.forward(grid).min()
        assert row["milp_optimal"] and true_min - 1e-2 <= row["milp_objective"] <= true_min + 1e-6
        assert row["lp_value"] <= row["milp_objective"] + 1e-9
    assert all(r["lp_failures"] == 0 for r in rows[1:])
    assert rows[2]["epochs"] == 4 and rows[2]["train_loss"] < rows[1]["train_loss"]
    saved = json.loads((model_path.with_name("model_refined") / "history.json").read_text())
    assert [r["round"] for r in saved] == [0, 1, 2]
    result.history.save(tmp_path / "h.csv")
    with (tmp_path / "h.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3


def test_a_rounds_losses_are_those_of_the_epoch_it_keeps(data, tmp_path):
    """A round keeps its best-validation epoch; its row reports that epoch's losses, so the
    validation loss of the row is the held-out loss measured on its checkpoint.  From a
    trained network a regularizer raises the loss, so the first epoch of a round is kept."""
    X, y = data
    train, val = (X[:200], y[:200]), (X[200:], y[200:])
    options = dict(input_bounds=BOX, batch_size=32, lr=1e-2)
    trained = Trainer(Network.mlp([2, 6, 6, 1], seed=0), *train, epochs=30, **options).fit()
    result = refine(
        trained.network, *train, validation=val, rounds=2, epochs_per_round=3, lam=0.05,
        regularizer=BoundWidth(), milp_time_limit=None, output_dir=tmp_path / "r",
        progress=False, **options,
    )  # fmt: skip
    rows = result.history.rows[1:]
    assert any(r["kept_epoch"] < r["epochs"] for r in rows)  # the case that was misreported
    for row in rows:
        assert row["epochs"] - 3 < row["kept_epoch"] <= row["epochs"]
        assert row["val_loss"] == pytest.approx(row["held_out_loss"], rel=1e-9)


def test_refine_stops_once_the_targets_are_met(model_path, data):
    result = run(model_path, data, rounds=5, target_unstable=10_000)
    assert len(result.history.rows) == 2
    assert result.stopped_by.startswith("targets unstable")


def test_existing_checkpoints_are_not_overwritten_but_can_be_resumed(model_path, data):
    run(model_path, data, rounds=1)
    out = model_path.with_name("model_refined")
    first = (out / "round_001.onnx").read_bytes()
    with pytest.raises(FileExistsError, match="resume=True"):
        run(model_path, data, rounds=1)
    assert (out / "round_001.onnx").read_bytes() == first
    resumed = run(model_path, data, rounds=2, resume=True)  # rounds is the total
    assert [r["round"] for r in RefineHistory.load(out / "history.json").rows] == [0, 1, 2]
    assert [p.name for p in resumed.checkpoints] == ["round_001.onnx", "round_002.onnx"]
    assert [r["epochs"] for r in resumed.history.rows] == [0, 2, 4]
    again = run(model_path, data, rounds=2, resume=True)  # nothing left to do
    assert [p.name for p in again.checkpoints] == ["round_002.onnx"]
    assert len(again.history.rows) == 3


def test_bad_round_counts_are_rejected(model_path, data):
    with pytest.raises(ValueError, match="rounds and epochs_per_round"):
        run(model_path, data, rounds=0)


def test_bad_data_is_refused_before_the_checkpoint_folder_is_made(model_path, data):
    X, y = data
    with pytest.raises(ValueError, match="y has shape"):
        refine(model_path, X, y[:10], progress=False)
    assert not model_path.with_name("model_refined").exists()


def test_an_interrupted_round_keeps_the_complete_ones_and_resumes(model_path, data, monkeypatch):
    from pyomo_nnrelax.refinement import rounds as refine_module

    measure, calls = refine_module.difficulty, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # rounds 0 and 1 measured, round 2's measurement interrupted
            raise KeyboardInterrupt
        return measure(*args, **kwargs)

    monkeypatch.setattr(refine_module, "difficulty", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(model_path, data, rounds=3)
    out = model_path.with_name("model_refined")
    assert [r["round"] for r in RefineHistory.load(out / "history.json").rows] == [0, 1]
    assert sorted(p.name for p in out.iterdir()) == [
        "history.json",
        "round_000.onnx",
        "round_000.state.npz",
        "round_001.onnx",
        "round_001.state.npz",
    ]
    monkeypatch.setattr(refine_module, "difficulty", measure)
    resumed = run(model_path, data, rounds=3, resume=True)
    assert [r["round"] for r in resumed.history.rows] == [0, 1, 2, 3]
    X = data[0][:50]
    saved = read_onnx(out / "round_003.onnx").forward(X)
    np.testing.assert_allclose(saved, resumed.network.forward(X), rtol=1e-5, atol=1e-5)


def test_resume_after_a_kill_before_round_0_was_kept_starts_again(model_path, data):
    # a run killed between round 0's checkpoint and its history left round_000.onnx alone:
    # plain runs refused the folder and resume=True said "nothing to resume"
    out = model_path.with_name("model_refined")
    out.mkdir()
    (out / "round_000.onnx").write_bytes(b"half of a checkpoint")

    result = run(model_path, data, rounds=1, resume=True)

    assert [r["round"] for r in result.history.rows] == [0, 1]
    assert [r["round"] for r in RefineHistory.load(out / "history.json").rows] == [0, 1]
    assert read_onnx(out / "round_000.onnx") == read_onnx(model_path)
