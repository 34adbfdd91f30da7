"""Robustness verification (``pyomo_nnrelax.verification``, ``nnrelax verify``): every
verdict is checked against an independent sample of the ball, every counterexample against
onnxruntime, and each stage (interval, LP, tightened LP, MILP) settles inputs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from pyomo_nnrelax import InputBoundsError, InputBox, Network, run_onnxruntime, write_onnx
from pyomo_nnrelax.cli import main
from pyomo_nnrelax.verification import clipped_ball, margin_network, verify

UNIT = InputBox(lower=[0.0, 0.0], upper=[1.0, 1.0])
EPS = 0.05


@pytest.fixture(scope="module")
def classifier() -> Network:
    return Network.mlp([2, 12, 12, 3], seed=3)


@pytest.fixture(scope="module")
def points(classifier) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).uniform(0, 1, (40, 2))
    return X, np.argmax(classifier.forward(X), axis=1)


def _ball_grid(x: np.ndarray, eps: float, n: int = 301) -> np.ndarray:
    """A dense grid of the clipped ball (its corners included)."""
    ball = clipped_ball(x, eps, UNIT)
    axes = [np.linspace(lo, hi, n) for lo, hi in zip(ball.lower, ball.upper)]
    return np.stack(np.meshgrid(*axes), axis=-1).reshape(-1, 2)


def test_margin_network_gives_the_label_minus_every_other_output(classifier):
    X = np.random.default_rng(1).uniform(0, 1, (20, 2))
    f = classifier.forward(X)
    for label in range(3):
        margins = margin_network(classifier, label).forward(X)
        expected = f[:, [label]] - np.delete(f, label, axis=1)
        np.testing.assert_allclose(margins, expected, rtol=0, atol=1e-12)


def test_every_verdict_holds_on_a_dense_sample_of_its_ball(classifier, points):
    X, labels = points
    result = verify(classifier, X, labels, EPS, input_bounds=UNIT, time_limit=30)
    statuses = {r.status for r in result.images}
    assert {"verified", "falsified"} <= statuses
    for r, x in zip(result.images, X):
        grid = _ball_grid(x, EPS)
        f = classifier.forward(grid)
        true_margin = (f[:, r.label] - np.delete(f, r.label, axis=1).max(axis=1)).min()
        if r.status == "verified":
            assert true_margin > 0 and r.margin_bound <= true_margin + 1e-9
        elif r.status == "falsified":
            ball = clipped_ball(x, EPS, UNIT)
            assert ball.contains(r.counterexample[None], tol=1e-9)[0]
            out = run_onnxruntime(write_onnx(classifier, dtype="float64"), r.counterexample[None])
            assert np.argmax(out[0]) != r.label and r.counterexample_margin < 0
        assert r.status != "unknown"


def test_every_stage_settles_some_inputs(classifier, points):
    X, labels = points
    result = verify(classifier, X, labels, 0.08, input_bounds=UNIT, time_limit=30)
    decided = {(r.status, r.decided_by) for r in result.images}
    assert ("verified", "interval") in decided and ("verified", "lp") in decided
    assert ("falsified", "milp") in decided
    assert any(by in ("tightened lp", "milp") for status, by in decided if status == "verified")


def test_a_wrong_prediction_is_misclassified_and_the_summary_counts_it(classifier, points):
    X, labels = points
    wrong = labels.copy()
    wrong[:5] = (wrong[:5] + 1) % 3
    result = verify(classifier, X[:10], wrong[:10], EPS, input_bounds=UNIT)
    assert [r.status for r in result.images[:5]] == ["misclassified"] * 5
    summary = result.summary()
    assert summary["clean_accuracy"] == 0.5
    assert summary["verified"] == result.count("verified") / 10
    assert summary["verified"] + summary["falsified"] + summary["unknown"] == pytest.approx(0.5)
    assert "clean accuracy 0.500" in result.table()


def test_the_time_limit_leaves_an_unsettled_input_unknown(classifier, points):
    X, labels = points
    settled = verify(classifier, X, labels, 0.08, input_bounds=UNIT)
    hard = [
        i for i, r in enumerate(settled.images) if r.decided_by not in ("interval", "prediction")
    ]
    result = verify(classifier, X[hard], labels[hard], 0.08, input_bounds=UNIT, time_limit=1e-9)
    assert [r.status for r in result.images] == ["unknown"] * len(hard)


def test_bad_arguments_raise_naming_them(classifier, points):
    X, labels = points
    with pytest.raises(InputBoundsError, match="no input bounds"):
        verify(classifier, X, labels, EPS)
    with pytest.raises(ValueError, match="labels must be classes 0..2"):
        verify(classifier, X, labels + 3, EPS, input_bounds=UNIT)
    with pytest.raises(ValueError, match="eps must be a positive radius"):
        verify(classifier, X, labels, 0.0, input_bounds=UNIT)
    with pytest.raises(ValueError, match="labels has 3 entries for 40 inputs"):
        verify(classifier, X, labels[:3], EPS, input_bounds=UNIT)


def test_the_command_prints_a_table_and_json(classifier, points, tmp_path):
    X, labels = points
    model, data = tmp_path / "cls.onnx", tmp_path / "test.npz"
    write_onnx(classifier, model, dtype="float64")
    np.savez(data, X=X, y=labels)
    runner = CliRunner()
    args = ["verify", str(model), "--data", str(data), "--eps", str(EPS), "--input-bounds", "0,1"]
    text = runner.invoke(main, [*args, "--limit", "6", "-q"])
    assert text.exit_code == 0, text.output
    assert "6 images, eps 0.05: clean accuracy 1.000" in text.output
    as_json = runner.invoke(main, [*args, "--limit", "6", "-q", "--json"])
    report = json.loads(as_json.output)
    reference = verify(classifier, X[:6], labels[:6], EPS, input_bounds=UNIT)
    assert [r["status"] for r in report["images"]] == [r.status for r in reference.images]
    assert report["summary"]["verified"] == reference.summary()["verified"]
    np.savez(data, X=X, y=labels + 0.5)
    bad = runner.invoke(main, [*args])
    assert bad.exit_code == 2 and "class indices" in bad.output


def test_the_lp_stage_stops_at_the_sign(classifier, points, monkeypatch):
    """An LP solve ends as soon as its dual bound proves the margin positive: HiGHS stops at
    the objective bound, and the verdicts stay those of the grid test above."""
    from pyomo_nnrelax import verification
    from pyomo_nnrelax.lp.highs import HighsModel

    statuses, solve = [], HighsModel.solve

    def recording(self):
        result = solve(self)
        if self.relax:
            statuses.append(result.status)
        return result

    monkeypatch.setattr(HighsModel, "solve", recording)
    X, labels = points
    result = verify(classifier, X, labels, 0.08, input_bounds=UNIT, time_limit=30)
    assert verification.BOUND_REACHED in statuses
    by_lp = [r for r in result.images if r.decided_by == "lp"]
    assert by_lp and all(r.margin_bound >= verification.LP_CUTOFF for r in by_lp)


def test_the_time_limit_stops_the_tightening_at_the_chunk_it_runs_out_in(
    classifier, points, monkeypatch
):
    """The per-input limit covers the tightened-LP stage: the chunk of solves that ends past
    it ends the stage (a fake clock makes every chunk last 1,000 s; no wall-clock timing)."""
    from pyomo_nnrelax import verification
    from pyomo_nnrelax.lp import tightening

    X, labels = points
    settled = verify(classifier, X, labels, 0.08, input_bounds=UNIT)
    hard = [i for i, r in enumerate(settled.images) if r.decided_by in ("tightened lp", "milp")]
    assert hard
    clock, chunks, solve_work = [0.0], [], tightening.solve_work

    def slow_chunk(work):
        chunks.append(work.cols.size)
        clock[0] += 1000.0
        return solve_work(work)

    monkeypatch.setattr(verification, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(tightening, "solve_work", slow_chunk)
    result = verify(classifier, X[hard], labels[hard], 0.08, input_bounds=UNIT, time_limit=30)
    verdicts = [(r.status, r.decided_by) for r in result.images]
    assert verdicts == [("unknown", "time limit")] * len(hard)
    assert len(chunks) == len(hard)  # one chunk each, then the stage stopped
