"""The accuracy budget of the refinement loop (refinement/budget.py and refine(loss_budget=...,
evaluate=..., decision_budget=...))."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyomo_nnrelax import Network, write_onnx
from pyomo_nnrelax.experiments.functions import himmelblau, latin_hypercube
from pyomo_nnrelax.onnx import read_onnx
from pyomo_nnrelax.refinement import refine
from pyomo_nnrelax.refinement.budget import AccuracyBudget, choose_round
from pyomo_nnrelax.training import L1, BoundWidth, Trainer

BOX = [(-3.0, 3.0), (-3.0, 3.0)]


def test_judge_and_continuation():
    budget = AccuracyBudget(loss_budget=1.25, decision_budget=0.5, growth=2.0)
    assert budget.judge({"loss_ratio": 1.2, "decision_change": 0.1}) == (True, "within budget")
    within, why = budget.judge({"loss_ratio": 1.3, "decision_change": 0.1})
    assert not within and "1.3x the reference > 1.25x" in why
    within, why = budget.judge({"loss_ratio": 1.0, "decision_change": 0.7})
    assert not within and "worse by 0.7 > 0.5" in why
    assert budget.next_lam(1e-3, True) == 2e-3 and budget.next_lam(1e-3, False) == 5e-4
    # a loss far over budget shrinks lambda with the overshoot: sqrt((1.25 - 1) / (5 - 1))
    # = 1/4, at least by growth (a small overshoot) and at most by growth**4
    assert budget.next_lam(1e-3, False, ratio=5.0) == pytest.approx(2.5e-4)
    assert budget.next_lam(1e-3, False, ratio=1.3) == pytest.approx(5e-4)
    assert budget.next_lam(1e-3, False, ratio=2.0) == pytest.approx(5e-4)
    assert budget.next_lam(1e-3, False, ratio=500.0) == pytest.approx(1e-3 / 16)
    assert budget.next_lam(1e-3, False, ratio=1.1) == pytest.approx(5e-4)  # decision broke
    assert not AccuracyBudget().active


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"loss_budget": 0.9}, "loss_budget must be >= 1"),
        ({"loss_budget": 1.2, "growth": 1.0}, "lam_growth must be > 1"),
        ({"decision_budget": -1.0}, "decision_budget"),
    ],
)
def test_bad_budgets_are_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        AccuracyBudget(**kwargs)


def test_the_easiest_round_within_budget_is_chosen():
    """Proven rounds rank by branch-and-bound nodes, then LP gap, then unstable neurons;
    MILP seconds, which jitter from run to run, only break a tie of all three."""
    base = {"milp_optimal": True, "mean_big_m": 1.0}
    rows = [
        {**base, "round": 0, "within_budget": True, "milp_seconds": 9.0, "milp_nodes": 900,
         "lp_gap": 5.0, "unstable": 50},
        {**base, "round": 1, "within_budget": True, "milp_seconds": 3.0, "milp_nodes": 40,
         "lp_gap": 2.0, "unstable": 40},
        {**base, "round": 2, "within_budget": False, "milp_seconds": 0.1, "milp_nodes": 1,
         "lp_gap": 0.1, "unstable": 9},
        {**base, "round": 3, "within_budget": True, "milp_seconds": 2.0, "milp_nodes": 60,
         "lp_gap": 1.0, "unstable": 30},
    ]  # fmt: skip
    chosen, why = choose_round(rows)
    assert chosen == 1 and "branch-and-bound nodes" in why  # fewer nodes, never round 2
    rows[3]["milp_nodes"] = 40  # a tie of nodes: the smaller LP gap decides
    assert choose_round(rows)[0] == 3
    rows[3]["lp_gap"] = 2.0  # and of the gap: fewer unstable neurons
    assert choose_round(rows)[0] == 3
    rows[3]["unstable"] = 40  # and of those: MILP seconds
    assert choose_round(rows)[0] == 3
    rows[3]["milp_seconds"] = 9.0
    assert choose_round(rows)[0] == 1
    rows[3]["milp_seconds"] = float("nan")  # not measured everywhere: unstable neurons decide
    rows[3]["unstable"] = 30
    chosen, why = choose_round(rows)
    assert chosen == 3 and "unstable neurons" in why


def test_lambda_search_bisects_between_a_good_and_a_bad_round():
    """Once a lambda within budget and a larger one over it are known, the next lambda is
    their geometric mean, never a lambda that just broke the budget."""
    budget = AccuracyBudget(loss_budget=1.25, growth=2.0)
    rows = [
        {"round": 0, "lam": 0.0, "within_budget": True},
        {"round": 1, "lam": 1e-3, "within_budget": True},
        {"round": 2, "lam": 2e-3, "within_budget": True},
        {"round": 3, "lam": 4e-3, "within_budget": False},
    ]
    # after the bad round: halfway (geometrically) between 2e-3 and 4e-3
    assert budget.next_lam(4e-3, False, ratio=5.0, rows=rows) == pytest.approx(
        8e-3**0.5 * 1e-3**0.5
    )
    rows.append({"round": 4, "lam": 2.83e-3, "within_budget": True})
    assert budget.next_lam(2.83e-3, True, rows=rows) == pytest.approx((2.83e-3 * 4e-3) ** 0.5)
    rows[-1]["within_budget"] = False
    assert budget.next_lam(2.83e-3, False, rows=rows) == pytest.approx((2e-3 * 2.83e-3) ** 0.5)
    # with no round over budget yet lambda keeps growing
    assert budget.next_lam(2e-3, True, rows=rows[:3]) == pytest.approx(4e-3)


@pytest.fixture(scope="module")
def fitted():
    """A 2-12-12-1 network fitted to himmelblau, and its data split."""
    X = latin_hypercube(600, BOX, seed=0)
    y = himmelblau(X)
    train, val = (X[:480], y[:480]), (X[480:], y[480:])
    net = Trainer(Network.mlp([2, 12, 12, 1], seed=0), *train, input_bounds=BOX, epochs=40).fit()
    return net.network, train, val


def _refine(fitted, tmp_path, **options):
    """``refine`` of the fitted network on its data, BW by default, no MILP unless asked."""
    net, train, val = fitted
    defaults = {"regularizer": BoundWidth(), "milp_time_limit": None, "progress": False}
    return refine(
        net, *train, validation=val, input_bounds=BOX, output_dir=tmp_path,
        **{**defaults, **options},
    )  # fmt: skip


def _mse(net: Network, data) -> float:
    X, y = data
    return float(np.mean((net.forward(X)[:, 0] - y) ** 2))


def test_refine_keeps_the_held_out_loss_within_the_budget(fitted, tmp_path):
    net, _, val = fitted
    result = _refine(fitted, tmp_path, lam=1e-3, rounds=4, epochs_per_round=5, loss_budget=1.25)
    rows = result.history.rows
    # the ratio the loop judged equals an independent MSE ratio (scaling cancels in a ratio)
    for row in rows[1:]:
        checkpoint = read_onnx(tmp_path / f"round_{row['round']:03d}.onnx")
        assert row["loss_ratio"] == pytest.approx(_mse(checkpoint, val) / _mse(net, val), rel=1e-6)
        assert row["within_budget"] == (row["loss_ratio"] <= 1.25)
    assert _mse(result.network, val) <= 1.25 * _mse(net, val) * (1 + 1e-9)
    # continuation: lambda doubles after a round within budget and shrinks after one
    # outside, until a good and a bad lambda bracket it: then their geometric mean
    for i, (before, after) in enumerate(zip(rows[1:], rows[2:]), start=2):
        good = [r["lam"] for r in rows[1:i] if r["within_budget"]]
        bad = [
            r["lam"]
            for r in rows[1:i]
            if not r["within_budget"] and r["lam"] > max(good, default=0)
        ]
        if good and bad:
            assert after["lam"] == pytest.approx((max(good) * min(bad)) ** 0.5)
            continue
        overshoot = (0.25 / (before["loss_ratio"] - 1)) ** 0.5 if not before["within_budget"] else 2
        factor = 2.0 if before["within_budget"] else min(0.5, max(overshoot, 1 / 16))
        assert after["lam"] == pytest.approx(before["lam"] * factor)
    [chosen] = [r for r in rows if r["chosen"]]
    assert chosen["round"] == result.chosen_round and chosen["within_budget"]
    within = [r for r in rows if r["within_budget"]]
    assert chosen["unstable"] == min(r["unstable"] for r in within)


def test_a_budget_nothing_meets_returns_the_starting_network(fitted, tmp_path):
    net = fitted[0]
    result = _refine(
        fitted,
        tmp_path,
        regularizer=L1(),
        lam=50.0,  # destroys accuracy at once
        rounds=2,
        epochs_per_round=3,
        loss_budget=1.0001,
    )
    assert [r["within_budget"] for r in result.history.rows] == [True, False, False]
    assert result.chosen_round == 0 and result.network == net
    assert result.history.rows[2]["lam"] == 50.0 / 16  # backed off as far as it goes


def test_the_true_value_at_each_argmin_is_recorded_and_budgeted(fitted, tmp_path):
    result = _refine(
        fitted, tmp_path, lam=1e-2, rounds=2, epochs_per_round=3, milp_time_limit=30,
        evaluate=lambda x: float(himmelblau(x[None])[0]), decision_budget=5.0,
    )  # fmt: skip
    rows = result.history.rows
    for row in rows:
        x = np.array(row["argmin"])
        assert np.all(x >= -3 - 1e-9) and np.all(x <= 3 + 1e-9)
        checkpoint = read_onnx(tmp_path / f"round_{row['round']:03d}.onnx")
        assert checkpoint.forward(x[None])[0, 0] == pytest.approx(row["milp_objective"], abs=1e-6)
        assert row["true_value"] == pytest.approx(himmelblau(x[None])[0])
        assert row["decision_change"] == pytest.approx(row["true_value"] - rows[0]["true_value"])
        assert row["within_budget"] == (row["decision_change"] <= 5.0)


def test_decision_budget_needs_evaluate(fitted, tmp_path):
    net, train, _ = fitted
    with pytest.raises(ValueError, match="decision_budget needs evaluate"):
        refine(net, *train, input_bounds=BOX, decision_budget=1.0, output_dir=tmp_path)
    with pytest.raises(ValueError, match="needs the MILP argmin"):
        refine(net, *train, input_bounds=BOX, evaluate=sum, milp_time_limit=None)


def _boom(x):
    raise ZeroDivisionError("boom")


def _only_at_the_centre(x):
    if np.any(x != 0.0):
        raise ValueError("outside the domain")
    return 0.0


@pytest.mark.parametrize(
    "evaluate, message",
    [
        (_boom, r"test_budget._boom raised ZeroDivisionError: boom at x = \[0\., 0\.\]"),
        (lambda x: float("nan"), r"<lambda> returned nan at x = \[0\., 0\.\]; it must return"),
        (lambda x: np.inf, r"returned inf at x = \[0\., 0\.\]"),
        (lambda x: [1.0, 2.0], r"returned \[1\.0, 2\.0\] at x = \[0\., 0\.\]"),
        (lambda x: "high", r"returned 'high' at x"),
    ],
)
def test_a_true_function_that_fails_is_refused_before_any_milp_or_file(
    fitted, tmp_path, monkeypatch, evaluate, message
):
    from pyomo_nnrelax.refinement import rounds

    def no_milp(*args, **kwargs):
        raise AssertionError("a MILP was solved before the true function was tried")

    monkeypatch.setattr(rounds, "milp_argmin", no_milp)
    with pytest.raises(ValueError, match=f"^the true function .*{message}"):
        _refine(fitted, tmp_path / "r", milp_time_limit=5, evaluate=evaluate)
    assert not (tmp_path / "r").exists()


def test_a_true_function_failing_at_round_0s_argmin_names_it_and_leaves_no_folder(fitted, tmp_path):
    pattern = r"_only_at_the_centre raised ValueError: outside the domain at x = \[-?\d"
    with pytest.raises(ValueError, match=pattern):  # the argmin, not the centre
        _refine(fitted, tmp_path / "r", milp_time_limit=5, evaluate=_only_at_the_centre)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- the command line
def _cli(*args):
    from click.testing import CliRunner

    from pyomo_nnrelax.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def files(tmp_path, fitted):
    net, (X, y), _ = fitted
    model, data = tmp_path / "model.onnx", tmp_path / "data.npz"
    write_onnx(net, model, dtype="float64")
    np.savez(data, X=X, y=y)
    (tmp_path / "truth.py").write_text(
        "from pyomo_nnrelax.experiments.functions import himmelblau\n"
        "def f(x):\n    return himmelblau(x)\n"
    )
    return model, data, tmp_path


def test_cli_evaluates_the_argmin_with_a_file_function(files):
    model, data, tmp = files
    common = ["--regularizer", "bw", "--rounds", "1", "--epochs", "2", "--milp-time-limit", "20"]
    result = _cli(
        "refine", model, "--data", data, "-o", tmp / "r.onnx", *common,
        "--evaluate", f"{tmp / 'truth.py'}:f", "--decision-budget", "100", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp / "r.history.json").read_text())
    for row in rows:
        assert row["true_value"] == pytest.approx(himmelblau(np.array([row["argmin"]]))[0])
    [chosen] = [row["round"] for row in rows if row["chosen"]]
    assert f"round {chosen}" in result.stdout.splitlines()[1]  # why the output is that round


def _figures(row: dict) -> str:
    return f"unstable {row['unstable']}, LP gap {row['lp_gap']:.4g}, held-out loss"


def test_cli_the_summary_gives_the_figures_of_the_output_not_of_the_last_round(files):
    model, data, tmp = files
    common = ["--rounds", "2", "--epochs", "3", "--milp-time-limit", "5", "-q"]
    ruined = _cli(
        "refine", model, "--data", data, "-o", tmp / "r.onnx", "--regularizer", "l1",
        "--lam", "50", "--loss-budget", "1.0001", *common,
    )  # fmt: skip
    assert ruined.exit_code == 0, ruined.output
    rows = json.loads((tmp / "r.history.json").read_text())
    assert [r["chosen"] for r in rows] == [True, False, False]
    last_gap = f"{rows[2]['lp_gap']:.4g}"
    assert last_gap != f"{rows[0]['lp_gap']:.4g}"  # the last round is not the output
    first, why = ruined.stdout.splitlines()[:2]
    assert first == (
        "rounds 0..2 (2 rounds): no round improved on the start within the budget; the output "
        f"is MODEL's own network (round 0): {_figures(rows[0])} 1x MODEL's"
    )
    assert why == "(round 0: the only round within budget)"
    assert last_gap not in ruined.stdout

    improved = _cli("refine", model, "--data", data, "-o", tmp / "s.onnx", "--regularizer", "bw",
                    "--lam", "1e-4", *common)  # fmt: skip
    assert improved.exit_code == 0, improved.output
    rows = json.loads((tmp / "s.history.json").read_text())
    [out] = [r for r in rows if r["chosen"]]
    first, why = improved.stdout.splitlines()[:2]
    if out["round"] == 0:
        assert "no round improved on the start" in first and _figures(out) in first
    else:
        assert first.endswith(f"-> {out['unstable']}, LP gap {rows[0]['lp_gap']:.4g} -> "
                              f"{out['lp_gap']:.4g} in the output")  # fmt: skip
        assert why.startswith(f"output is round {out['round']}: ") and _figures(out) in why


def test_cli_fixed_lam_outputs_the_last_round(files):
    model, data, tmp = files
    result = _cli(
        "refine", model, "--data", data, "-o", tmp / "r.onnx", "--regularizer", "bw",
        "--rounds", "2", "--epochs", "1", "--milp-time-limit", "5", "--fixed-lam", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read_onnx(tmp / "r.onnx") == read_onnx(tmp / "r_rounds" / "round_002.onnx")
    assert "output is round" not in result.output


@pytest.mark.parametrize(
    "body, message",
    [
        ("def f(x):\n    return 1 / 0\n", "raised ZeroDivisionError: division by zero"),
        ("def f(x):\n    return float('nan')\n", "returned nan"),
    ],
)
def test_cli_a_failing_true_function_is_one_line_and_leaves_no_folder(files, body, message):
    model, data, tmp = files
    (tmp / "bad.py").write_text(body)
    result = _cli(
        "refine", model, "--data", data, "-o", tmp / "r.onnx", "--regularizer", "bw",
        "--rounds", "1", "--epochs", "1", "--evaluate", f"{tmp / 'bad.py'}:f", "-q",
    )  # fmt: skip
    assert result.exit_code == 1 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()  # at the centre of the box, before round 0
    assert line.startswith(f"Error: the true function bad.f {message} at x = [0., 0.]"), line
    assert not (tmp / "r_rounds").exists() and not (tmp / "r.onnx").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--evaluate", "nosuchmodule_xyz:f"], "cannot import nosuchmodule_xyz"),
        (["--evaluate", "{tmp}/broken.py:f"], "cannot import {tmp}/broken.py (NameError"),
        (["--evaluate", "math"], "expected MODULE:NAME"),
        (["--evaluate", "math:nosuch"], "math has no function 'nosuch'"),
        (["--decision-budget", "1"], "--decision-budget needs --evaluate"),
    ],
)
def test_cli_bad_evaluate_options_are_usage_errors(files, extra, message):
    model, data, tmp = files
    (tmp / "broken.py").write_text("def f(x):\n    return 0.0\n\nundefined_name\n")
    extra = [e.format(tmp=tmp) for e in extra]
    result = _cli("refine", model, "--data", data, "-o", tmp / "r.onnx", *extra)
    assert result.exit_code == 2 and message.format(tmp=tmp) in result.stderr, result.output
    assert not (tmp / "r_rounds").exists()


def test_a_budget_relative_to_an_unregularized_training(fitted, tmp_path):
    """``loss_reference="unregularized"``: the budget is relative to the starting network
    trained without a regularizer for as many epochs as the refinement may run (recorded in
    round 0), not to the untrained starting network, whose loss any training beats."""
    _, train, val = fitted
    untrained = Network.mlp([2, 12, 12, 1], seed=3)
    result = refine(
        untrained, *train, validation=val, input_bounds=BOX, output_dir=tmp_path,
        regularizer=BoundWidth(), lam=1e-3, rounds=3, epochs_per_round=4, loss_budget=1.25,
        loss_reference="unregularized", milp_time_limit=None, progress=False,
    )  # fmt: skip
    free = Trainer(untrained, *train, input_bounds=BOX, validation=val, epochs=4)
    paced = [_mse(free.fit().network, val) for _ in range(3)]  # trained round by round
    start = result.history.rows[0]
    assert start["reference"] == "unregularized training, 12 epochs"
    assert start["loss_ratio"] > 2  # the untrained network is far outside the budget ...
    assert start["reference_by_round"][1:] == pytest.approx(
        [loss / paced[-1] * start["reference_loss"] for loss in paced], rel=1e-9
    )
    for row in result.history.rows[1:]:  # ... and the rounds are judged against the reference
        checkpoint = read_onnx(tmp_path / f"round_{row['round']:03d}.onnx")
        assert row["loss_ratio"] == pytest.approx(_mse(checkpoint, val) / paced[-1], rel=1e-6)
        assert row["within_budget"] == (row["loss_ratio"] <= 1.25)
        paced_ratio = _mse(checkpoint, val) / paced[row["round"] - 1]
        assert row["paced_ratio"] == pytest.approx(paced_ratio, rel=1e-6)


def test_an_unregularized_reference_paces_the_lambda_schedule(fitted, tmp_path):
    """From an untrained start the early rounds trail the full unregularized training only
    because they have had fewer epochs: the schedule judges them against that training after
    as many epochs, so a lambda too small to matter keeps growing instead of collapsing."""
    _, train, val = fitted
    result = refine(
        Network.mlp([2, 12, 12, 1], seed=3), *train, validation=val, input_bounds=BOX,
        output_dir=tmp_path, regularizer=BoundWidth(), lam=1e-9, rounds=3, epochs_per_round=2,
        loss_budget=1.1, loss_reference="unregularized", milp_time_limit=None, progress=False,
    )  # fmt: skip
    rows = result.history.rows[1:]
    assert not rows[0]["within_budget"]  # behind the 6-epoch reference after 2 epochs ...
    assert all(r["on_pace"] and r["paced_ratio"] == pytest.approx(1, rel=1e-4) for r in rows)
    assert [r["lam"] for r in rows] == pytest.approx([1e-9, 2e-9, 4e-9])  # ... yet on pace


def test_an_untrained_start_under_a_budget_is_pointed_out(fitted, tmp_path):
    _, train, val = fitted
    with pytest.warns(UserWarning, match="does not look trained.*loss_reference='unregularized'"):
        refine(
            Network.mlp([2, 12, 12, 1], seed=3), *train, validation=val, input_bounds=BOX,
            output_dir=tmp_path, regularizer=BoundWidth(), rounds=1, epochs_per_round=10,
            loss_budget=1.25, milp_time_limit=None, progress=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="loss_reference must be one of"):
        refine(fitted[0], *train, input_bounds=BOX, loss_budget=1.2, loss_reference="best")


def test_when_no_round_is_within_budget_the_lowest_loss_is_chosen():
    rows = [
        {"round": 0, "within_budget": False, "held_out_loss": 9.0, "unstable": 5, "mean_big_m": 1},
        {"round": 1, "within_budget": False, "held_out_loss": 2.0, "unstable": 9, "mean_big_m": 1},
        {"round": 2, "within_budget": False, "held_out_loss": 3.0, "unstable": 1, "mean_big_m": 1},
    ]
    chosen, why = choose_round(rows)
    assert chosen == 1 and "no round was within budget" in why


def test_a_history_without_a_reference_loss_resumes_relative_to_round_0(fitted, tmp_path):
    """Histories written before ``reference_loss`` existed judge resumed rounds against the
    starting network's held-out loss, as they were judged before."""
    _refine(fitted, tmp_path, lam=1e-3, rounds=1, epochs_per_round=2, loss_budget=1.25)
    path = tmp_path / "history.json"
    rows = json.loads(path.read_text())
    del rows[0]["reference_loss"], rows[0]["reference"]
    path.write_text(json.dumps(rows))
    result = _refine(
        fitted, tmp_path, lam=1e-3, rounds=2, epochs_per_round=2, loss_budget=1.25, resume=True
    )
    start, last = result.history.rows[0], result.history.rows[-1]
    assert last["round"] == 2
    assert last["loss_ratio"] == pytest.approx(last["held_out_loss"] / start["held_out_loss"])


def test_time_limited_rounds_are_ranked_by_the_gap_they_leave():
    """MILP seconds at the time limit say nothing: a proven optimum comes first, and among
    time-limited rounds the one whose incumbent is closest to its bound."""
    base = {"within_budget": True, "mean_big_m": 1.0, "milp_nodes": 10}
    rows = [
        {**base, "round": 0, "milp_optimal": False, "milp_seconds": 20.0, "unstable": 90,
         "milp_objective": -5.0, "milp_bound": -9.0},
        {**base, "round": 1, "milp_optimal": False, "milp_seconds": 20.2, "unstable": 95,
         "milp_objective": -5.0, "milp_bound": -5.5},
        {**base, "round": 2, "milp_optimal": False, "milp_seconds": 19.9, "unstable": 99,
         "milp_objective": -5.0, "milp_bound": -7.0},
    ]  # fmt: skip
    chosen, why = choose_round(rows)
    assert chosen == 1 and "gap left at the MILP time limit" in why
    rows.append({**base, "round": 3, "milp_optimal": True, "milp_seconds": 15.0, "unstable": 99,
                 "milp_objective": -5.0, "milp_bound": -5.0})  # fmt: skip
    chosen, why = choose_round(rows)
    assert chosen == 3 and "branch-and-bound nodes" in why and "of the 4 rounds" in why
