"""The nnrelax command line: parsing helpers, every command on a small model, and bad input."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from pyomo_nnrelax import Network
from pyomo_nnrelax.box import expand_pairs
from pyomo_nnrelax.cli import main, parse_arch, parse_bounds_text, parse_number_list
from pyomo_nnrelax.errors import InputBoundsError
from pyomo_nnrelax.onnx import read_onnx, read_stored_bounds


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.onnx"
    Network.mlp([2, 6, 6, 1], seed=0).with_input_bounds([-2, -2], [2, 2]).to_onnx(path)
    return path


@pytest.fixture
def data(npz_data):
    return npz_data


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# ---------------------------------------------------------------------- pure parsing
def test_parse_bounds_text():
    assert parse_bounds_text("-2,2;-1, 1.5") == [(-2.0, 2.0), (-1.0, 1.5)]
    assert parse_bounds_text("0,0") == [(0.0, 0.0)]
    for bad, why in (
        ("1,2,3", "not 'lo,hi'"),
        ("2,-2", "inverted"),
        ("a,1", "two numbers"),
        ("0,inf", "not finite"),
        ("-1,1;", "not 'lo,hi'"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_bounds_text(bad)


def test_expand_bounds_repeats_one_pair_and_checks_counts():
    assert expand_pairs([(-1.0, 1.0)], 3).pairs() == [(-1.0, 1.0)] * 3
    assert expand_pairs([(0.0, 1.0), (2.0, 3.0)], 2).pairs() == [(0.0, 1.0), (2.0, 3.0)]
    with pytest.raises(InputBoundsError, match="2 pairs but the network has 3 inputs"):
        expand_pairs([(0.0, 1.0), (2.0, 3.0)], 3)


def test_parse_arch_and_number_lists():
    assert parse_arch("2-25-25-1") == (2, 25, 25, 1)
    assert parse_number_list("1e-4, 1e-3", float) == [1e-4, 1e-3]
    assert parse_number_list("0,1", int) == [0, 1]
    for bad in ("2", "2-0-1", "2-x-1"):
        with pytest.raises(ValueError):
            parse_arch(bad)
    with pytest.raises(ValueError, match="list of int"):
        parse_number_list("0,1.5", int)


# ---------------------------------------------------------------------- commands
def test_help_and_version():
    assert invoke("--version").output.strip() == "nnrelax, version 0.1.0"
    for command in ("inspect", "tighten", "refine", "solve", "sweep"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Usage: " in result.output


def test_inspect_text_and_json(model):
    result = invoke("inspect", model)
    assert result.exit_code == 0, result.output
    assert "ONNX ops: Gemm x3, Relu x2" in result.output
    assert "widths: 2-6-6-1" in result.output
    assert "unstable neurons (binaries):" in result.output
    result = invoke("inspect", model, "--input-bounds", "-0.1,0.1", "--json")
    report = json.loads(result.stdout)
    assert report["widths"] == [2, 6, 6, 1] and report["bounds"] == "interval"
    assert report["input_bounds"] == [[-0.1, 0.1], [-0.1, 0.1]]
    assert [r["activation"] for r in report["layers"]] == ["relu", "relu", "linear"]
    for r in report["layers"][:2]:
        assert r["unstable"] + r["stable_active"] + r["stable_inactive"] == 6
    assert report["unstable"] == sum(r["unstable"] for r in report["layers"])


def test_tighten_writes_stored_bounds_and_refuses_to_overwrite(model, tmp_path):
    out = tmp_path / "tight.onnx"
    result = invoke("tighten", model, "-o", out, "--bounds", "lp", "--time-limit", "5")
    assert result.exit_code == 0, result.output
    assert "(interval) ->" in result.stdout and "(lp)" in result.stdout
    assert "tighten (lp)" in result.stderr  # the progress bar
    stored = read_stored_bounds(out)
    assert stored.method == "lp"
    assert read_onnx(out) == read_onnx(model)
    again = invoke("tighten", model, "-o", out, "--quiet")
    assert again.exit_code == 1 and "pass --force" in error_line(again)
    forced = invoke("tighten", model, "-o", out, "--quiet", "--force")
    assert forced.exit_code == 0 and forced.stderr == ""
    report = json.loads(invoke("inspect", out, "--bounds", "stored", "--json").stdout)
    assert report["bounds"] == "lp"


def test_refine_writes_network_history_and_plot_then_resumes(model, data, tmp_path):
    out = tmp_path / "refined.onnx"
    args = [
        "refine",
        model,
        "--data",
        data,
        "-o",
        out,
        "--regularizer",
        "0.5*bw+lp",
        "--lam",
        "1e-2",
        "--epochs",
        "1",
        "--milp-time-limit",
        "5",
        "--batch-size",
        "32",
    ]
    result = invoke(*args, "--rounds", "2", "--quiet")
    assert result.exit_code == 0, result.output
    for name in (
        "refined.onnx",
        "refined.history.json",
        "refined.history.csv",
        "refined.history.png",
        "refined_rounds/round_002.onnx",
    ):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "refined.history.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((tmp_path / "refined.history.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert read_onnx(out) == read_onnx(tmp_path / "refined_rounds" / "round_002.onnx")
    assert invoke(*args, "--rounds", "1").exit_code == 1  # outputs exist
    resumed = invoke(*args, "--rounds", "3", "--resume", "--quiet")  # --rounds is a total
    assert resumed.exit_code == 0, resumed.output
    with (tmp_path / "refined.history.csv").open() as handle:
        assert [row["round"] for row in csv.DictReader(handle)] == ["0", "1", "2", "3"]


def test_refine_reads_csv_data_without_a_regularizer(model, tmp_path):
    X = np.random.default_rng(1).uniform(-2, 2, (40, 2))
    path = tmp_path / "data.csv"
    np.savetxt(path, np.c_[X, X.sum(axis=1)], delimiter=",", header="a,b,y", comments="")
    result = invoke(
        "refine",
        model,
        "--data",
        path,
        "-o",
        tmp_path / "r.onnx",
        "--regularizer",
        "none",
        "--rounds",
        "1",
        "--epochs",
        "1",
        "--milp-time-limit",
        "5",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert "rounds 0..1" in result.stdout


@pytest.mark.parametrize("formulation", ["bigm", "partition"])
def test_solve_prints_optimum_and_check(model, formulation):
    result = invoke(
        "solve", model, "--maximize", "--formulation", formulation, "--time-limit", "10"
    )
    assert result.exit_code == 0, result.output
    assert "status: convergenceCriteriaSatisfied (solver highs)" in result.stdout
    value = float(result.stdout.split("maximum of output 0: ")[1].split()[0])
    grid = np.stack(np.meshgrid(np.linspace(-2, 2, 41), np.linspace(-2, 2, 41)), -1).reshape(-1, 2)
    assert value >= read_onnx(model).forward(grid).max() - 1e-6
    difference = float(result.stdout.rsplit("max |difference| ", 1)[1])
    assert difference < 1e-5


def test_solve_with_a_legacy_pyomo_solver(model):
    result = invoke("solve", model, "--solver", "appsi_highs", "--input-bounds", "-1,1")
    assert result.exit_code == 0, result.output
    assert "status: optimal (solver appsi_highs)" in result.stdout and "nodes n/a" in result.stdout
    assert "argmin:" in result.stdout
    bad = invoke("solve", model, "--solver", "appsi_highs", "--time-limit", "1")
    assert bad.exit_code == 2 and "--time-limit" in error_line(bad)


def test_sweep_command_writes_table_and_pareto_plot(data, tmp_path):
    out = tmp_path / "results.csv"
    result = invoke(
        "sweep",
        "--data",
        data,
        "--arch",
        "2-6-6-1",
        "--regularizers",
        "none,bw",
        "--lams",
        "1e-2",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--milp-time-limit",
        "5",
        "-o",
        out,
        "--workers",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert "2 of 2 runs done" in result.stdout
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["regularizer"] for r in rows] == ["none", "bw"]
    assert {"test_rmse", "milp_seconds", "unstable", "lp_gap"} <= set(rows[0])
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="dask.distributed is not installed (pip install 'dask[distributed]')",
)
def test_sweep_command_on_a_dask_scheduler(model, data, tmp_path):
    from distributed import LocalCluster

    out = tmp_path / "results.csv"
    with LocalCluster(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        result = invoke(
            "sweep",
            "--data",
            data,
            "--model",
            model,
            "--regularizers",
            "bw",
            "--lams",
            "1e-2",
            "--epochs",
            "1",
            "--milp-time-limit",
            "5",
            "-o",
            out,
            "--scheduler",
            cluster.scheduler_address,
            "--quiet",
        )
    assert result.exit_code == 0, result.output
    assert "1 of 1 runs done" in result.stdout


# ---------------------------------------------------------------------- bad invocations
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["inspect", "{tmp}/missing.onnx"], 2, "does not exist"),
        (["inspect", "{model}", "--input-bounds", "1,2,3"], 2, "not 'lo,hi'"),
        (["inspect", "{model}", "--input-bounds", "2,-2"], 2, "inverted"),
        (["inspect", "{model}", "--input-bounds", "0,1;0,1;0,1"], 2, "3 pairs"),
        (["refine", "{model}", "-o", "{tmp}/r.onnx"], 2, "Missing option '--data'"),
        (
            [
                "refine",
                "{model}",
                "--data",
                "{data}",
                "-o",
                "{tmp}/r.onnx",
                "--regularizer",
                "bw+xx",
            ],
            2,
            "allowed: bw, lp, sn, rs, l1, l2, none",
        ),
        (["tighten", "{model}", "-o", "{model}", "--force"], 2, "which an input depends on"),
        (["sweep", "--data", "{data}", "-o", "{tmp}/s.csv"], 2, "exactly one of --model"),
        (["sweep", "--data", "{data}", "--arch", "2-x", "-o", "{tmp}/s.csv"], 2, "--arch"),
        (
            [
                "sweep",
                "--data",
                "{data}",
                "--arch",
                "2-3-1",
                "--regularizers",
                "none,bw+zz",
                "-o",
                "{tmp}/s.csv",
            ],
            2,
            "unknown regularizer 'zz'",
        ),
        (["solve", "{model}", "--output", "3"], 2, "1 outputs"),
        (["solve", "{tmp}/bad.onnx"], 1, "bad.onnx"),
    ],
)
def test_bad_invocations_give_one_error_line(args, code, message, model, data, tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx file")
    paths = {"tmp": tmp_path, "model": model, "data": data}
    result = invoke(*(a.format(**paths) for a in args))
    assert result.exit_code == code
    line = error_line(result)
    assert line.startswith("Error: ") and message in line


def test_module_entry_point_in_a_subprocess(model, tmp_path):
    command = [sys.executable, "-m", "pyomo_nnrelax.cli", "inspect", str(model)]
    ok = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["widths"] == [2, 6, 6, 1]
    bad = subprocess.run(
        [*command, "--input-bounds", "2,-2"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "Error: Invalid value for '--input-bounds': pair 0 '2,-2' is inverted (lo > hi)"
    ]
