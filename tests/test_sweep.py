"""The sweep grid: regularizer specs, data files and splits, runs on local and dask executors."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Network, interval_bounds
from pyomo_nnrelax.data import read_data, split_data
from pyomo_nnrelax.plots import pareto_mask
from pyomo_nnrelax.sweep import RunConfig, grid, run_config, run_sweep
from pyomo_nnrelax.training import LPGap, parse_regularizer


@pytest.fixture
def data_file(npz_data):
    return npz_data


def base(data_file, **overrides):
    options = dict(
        data=str(data_file), arch=(2, 6, 6, 1), epochs=1, milp_time_limit=5.0, batch_size=32
    )
    return {**options, **overrides}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("bw", "1 * BoundWidth()"),
        ("BW + lp", "1 * BoundWidth() + 1 * " + repr(LPGap(sense="min"))),
        ("0.5*bw+2*sn", "0.5 * BoundWidth() + 2 * StableNeuron()"),
        ("l1+l2+rs", "1 * L1() + 1 * L2() + 1 * ReLUStability()"),
    ],
)
def test_parse_regularizer_builds_weighted_sums(spec, expected):
    assert repr(parse_regularizer(spec)) == expected


def test_parse_regularizer_none_sense_and_errors():
    assert parse_regularizer(" none ") is None
    assert parse_regularizer("lp", sense="max").terms[0][1].sense == "max"
    allowed = "allowed: bw, lp, sn, rs, l1, l2, none"
    with pytest.raises(ValueError, match=f"unknown regularizer 'foo'.*{allowed}"):
        parse_regularizer("bw+foo")
    with pytest.raises(ValueError, match="bad weight"):
        parse_regularizer("x*bw")
    with pytest.raises(ValueError, match="positive"):
        parse_regularizer("-1*bw")


def test_grid_runs_the_baseline_once_per_seed(data_file):
    configs = grid(base(data_file), ["none", "bw"], [1e-3, 1e-2], [0, 1])
    assert [(c.regularizer, c.lam, c.seed) for c in configs] == [
        ("none", 0.0, 0),
        ("none", 0.0, 1),
        ("bw", 1e-3, 0),
        ("bw", 1e-3, 1),
        ("bw", 1e-2, 0),
        ("bw", 1e-2, 1),
    ]
    with pytest.raises(ValueError, match="exactly one"):
        RunConfig(data="d.npz", regularizer="bw", lam=0.1, seed=0, epochs=1)
    with pytest.raises(ValueError, match="unknown regularizer"):
        grid(base(data_file), ["bq"], [0.1], [0])


def test_read_data_csv_with_and_without_header(tmp_path):
    table = np.arange(12.0).reshape(4, 3)
    plain, headed = tmp_path / "plain.csv", tmp_path / "headed.csv"
    np.savetxt(plain, table, delimiter=",")
    np.savetxt(headed, table, delimiter=",", header="a,b,y", comments="")
    for path in (plain, headed):
        X, y = read_data(path)
        np.testing.assert_array_equal(X, table[:, :2])
        np.testing.assert_array_equal(y, table[:, 2:])
    X, y = read_data(plain, targets=2)
    assert X.shape == (4, 1) and y.shape == (4, 2)
    with pytest.raises(ValueError, match="at least 4"):
        read_data(plain, targets=3)
    with pytest.raises(FileNotFoundError):
        read_data(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", A=table)
    with pytest.raises(ValueError, match="missing"):
        read_data(tmp_path / "bad.npz")


def test_split_data_is_a_fixed_partition():
    X, y = np.arange(20.0).reshape(10, 2), np.arange(10.0).reshape(10, 1)
    train, val, test = split_data(X, y, 0.2, 0.3)
    assert [len(p[0]) for p in (train, val, test)] == [5, 2, 3]
    assert sorted(np.concatenate([train[1], val[1], test[1]]).ravel()) == list(range(10))
    np.testing.assert_array_equal(split_data(X, y, 0.2, 0.3)[2][0], test[0])
    with pytest.raises(ValueError, match="cannot be split"):
        split_data(X[:2], y[:2], 0.2, 0.2)


def test_pareto_mask_keeps_the_undominated_finite_points():
    errors = [1.0, 2.0, 0.5, 3.0, np.nan, 1.0]
    times = [1.0, 0.5, 3.0, 3.0, 0.1, 1.0]
    assert pareto_mask(errors, times).tolist() == [True, True, True, False, False, True]


def test_run_config_reports_accuracy_and_difficulty(data_file):
    """With no epochs the run's network is ``Network.mlp(arch, seed)``: its test error,
    unstable count and minimum are computed here independently and must match the row."""
    row = run_config(RunConfig(regularizer="bw", lam=1e-2, seed=3, **base(data_file, epochs=0)))
    assert row["regularizer"] == "bw" and row["arch"] == "2-6-6-1"
    net = Network.mlp([2, 6, 6, 1], seed=3)
    X, y = read_data(data_file)
    test = split_data(X, y, 0.2, 0.2)[2]
    assert row["test_mse"] == pytest.approx(np.mean((net.forward(test[0]) - test[1]) ** 2))
    lo, hi = X.min(axis=0), X.max(axis=0)  # no --input-bounds: the data's bounding box
    assert row["unstable"] == interval_bounds(net, InputBox(lo, hi)).unstable_count(net)
    grid = np.stack(np.meshgrid(*[np.linspace(a, b, 301) for a, b in zip(lo, hi)]), -1)
    values = net.forward(grid.reshape(-1, 2))
    assert row["milp_optimal"] and values.min() - 1e-2 <= row["milp_objective"] <= values.min()


def test_gap_method_reaches_the_trainer_and_is_checked_before_any_run(data_file):
    """``gap_method`` picks the LP-gap path of the run: the exact LPs and the dual bound give
    different gradients, hence different networks, and the row records which was used."""
    rows = {
        method: run_config(
            RunConfig(regularizer="bw+lp", lam=1e-1, seed=0, gap_method=method, **base(data_file))
        )
        for method in ("exact_lp", "dual_network")
    }
    assert {method: row["gap_method"] for method, row in rows.items()} == {
        "exact_lp": "exact_lp",
        "dual_network": "dual_network",
    }
    assert rows["exact_lp"]["test_mse"] != rows["dual_network"]["test_mse"]
    with pytest.raises(ValueError, match="gap_method must be one of"):
        RunConfig(regularizer="bw+lp", lam=1e-3, seed=0, gap_method="simplex", **base(data_file))


def test_one_input_bounds_pair_stands_for_every_input_as_in_the_other_commands(data_file):
    config = RunConfig(
        regularizer="bw", lam=1e-2, seed=0, **base(data_file, input_bounds=((-3.0, 3.0),))
    )
    row = run_config(config)
    assert row["milp_optimal"] and np.isfinite(row["test_mse"])


@pytest.mark.slow
def test_run_sweep_on_a_process_pool_keeps_config_order(data_file):
    configs = grid(base(data_file), ["none", "bw"], [1e-2], [0, 1])
    seen = []
    # spawn, as the CLI does: forked workers hung (busy) once HiGHS had run in the parent
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = run_sweep(configs, pool, progress=seen.append)
    assert [(r["regularizer"], r["seed"]) for r in rows] == [
        ("none", 0),
        ("none", 1),
        ("bw", 0),
        ("bw", 1),
    ]
    assert len(seen) == 4 and all("error" not in r for r in rows)
    assert rows[0]["test_mse"] != rows[1]["test_mse"]  # seeds give different initial weights


def test_a_failing_run_becomes_an_error_row(tmp_path, data_file):
    configs = [RunConfig(regularizer="bw", lam=0.1, seed=0, **base(tmp_path / "gone.npz"))]
    with ThreadPoolExecutor(1) as pool:
        (row,) = run_sweep(configs, pool)
    assert row["error"].startswith("FileNotFoundError") and row["regularizer"] == "bw"


@pytest.mark.slow
def test_run_sweep_on_a_dask_local_cluster(data_file, tmp_path):
    from distributed import Client, LocalCluster

    configs = grid(base(data_file), ["none", "bw"], [1e-2], [0])
    with (
        LocalCluster(
            processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        rows = run_sweep(configs, client.get_executor())
    assert [r["regularizer"] for r in rows] == ["none", "bw"]
    assert all(np.isfinite(r["test_mse"]) for r in rows)
