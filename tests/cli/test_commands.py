"""The nnrelax command line: parsing helpers, every command on a small model, and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from pyomo_nnrelax import Layer, Network, write_onnx
from pyomo_nnrelax.box import expand_pairs
from pyomo_nnrelax.cli import main, parse_arch, parse_bounds_text, parse_number_list
from pyomo_nnrelax.errors import InputBoundsError
from pyomo_nnrelax.onnx import read_onnx, read_stored_bounds
from pyomo_nnrelax.onnx.write import as_written, source_dtype


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.onnx"
    write_onnx(Network.mlp([2, 6, 6, 1], seed=0).with_input_bounds([-2, -2], [2, 2]), path)
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


def test_inspect_counts_stability_and_big_m_worked_out_by_hand(tmp_path):
    """Over [-1, 1]^2: z0 = x0 + 2 in [1, 3] (active), z1 = x1 - 3 in [-4, -2] (inactive),
    z2 = x0 + x1 in [-2, 2] (unstable, M = 2), z3 = 2 x0 - 0.5 in [-2.5, 1.5] (unstable,
    M = 2.5); the output layer is linear."""
    path = tmp_path / "hand.onnx"
    hidden = Layer(
        np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]), np.array([2.0, -3, 0, -0.5])
    )
    out = Layer(np.ones((1, 4)), np.zeros(1), "linear")
    write_onnx(Network((hidden, out)).with_input_bounds([-1, -1], [1, 1]), path, dtype="float64")
    report = json.loads(invoke("inspect", path, "--json").stdout)
    first = report["layers"][0]
    assert (first["unstable"], first["stable_active"], first["stable_inactive"]) == (2, 1, 1)
    assert first["mean_big_m"] == pytest.approx(2.25) and first["max_big_m"] == pytest.approx(2.5)
    assert report["unstable"] == 2 and report["max_big_m"] == pytest.approx(2.5)
    assert report["layers"][1]["unstable"] == 0


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
    # the default loss budget (1.25x MODEL's held-out loss) picks one round within it
    [chosen] = [r for r in rows if r["chosen"]]
    assert chosen["within_budget"] and chosen["loss_ratio"] <= 1.25
    checkpoint = read_onnx(tmp_path / f"refined_rounds/round_{chosen['round']:03d}.onnx")
    assert read_onnx(out) == as_written(checkpoint, "float32")  # MODEL's float type
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


@pytest.mark.parametrize("gap_method", ["dual_network", "exact_lp"])
def test_refine_gap_method_picks_how_the_lp_term_is_bounded(
    model, data, tmp_path, monkeypatch, gap_method
):
    """``--gap-method dual_network`` trains with the dual-network bound (and no LP solve in
    training); ``--gap-method exact_lp`` never calls it."""
    from pyomo_nnrelax.training import lp_gap

    calls = []
    real = lp_gap.dual_bound

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lp_gap, "dual_bound", spy)
    result = invoke(
        "refine", model, "--data", data, "-o", tmp_path / "r.onnx", "--regularizer", "bw+lp",
        "--gap-method", gap_method, "--rounds", "1", "--epochs", "1", "--milp-time-limit", "5",
        "--batch-size", "32", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rounds 0..1" in result.stdout
    assert (len(calls) > 0) == (gap_method == "dual_network")
    bad = invoke("refine", model, "--data", data, "-o", tmp_path / "s.onnx", "--gap-method", "lp")
    assert bad.exit_code == 2 and "--gap-method" in bad.output
    assert "'dual_network', 'exact_lp'" in bad.output  # the accepted values are named


def test_refine_ball_bounds_the_terms_over_each_samples_ball(model, data, tmp_path, monkeypatch):
    """``--ball EPS`` trains every bound term over each sample's EPS-ball (RegContext.ball_ibp
    with that radius); without it, over the box only."""
    from pyomo_nnrelax.training.context import RegContext

    radii = []
    real = RegContext.ball_ibp

    def spy(self, eps):
        radii.append(eps)
        return real(self, eps)

    monkeypatch.setattr(RegContext, "ball_ibp", spy)
    common = ["--data", data, "--regularizer", "bw+rs", "--rounds", "1", "--epochs", "1",
              "--milp-time-limit", "5", "--batch-size", "32", "-q"]  # fmt: skip
    result = invoke("refine", model, "-o", tmp_path / "r.onnx", "--ball", "0.1", *common)
    assert result.exit_code == 0, result.output
    assert radii and set(radii) == {0.1}
    radii.clear()
    assert invoke("refine", model, "-o", tmp_path / "s.onnx", *common).exit_code == 0
    assert radii == []
    bad = invoke("refine", model, "-o", tmp_path / "t.onnx", "--ball", "0", *common)
    assert bad.exit_code == 2 and "--ball" in bad.output


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


@pytest.mark.slow
def test_sweep_command_writes_table_and_pareto_plot(data, tmp_path):
    out = tmp_path / "new" / "results.csv"  # its folder is made
    result = invoke(
        "sweep",
        "--data",
        data,
        "--arch",
        "2-6-6-1",
        "--regularizers",
        "none,bw+lp",
        "--gap-method",
        "exact_lp",
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
    assert [(r["regularizer"], r["gap_method"]) for r in rows] == [
        ("none", "exact_lp"),
        ("bw+lp", "exact_lp"),
    ]
    assert {"test_rmse", "milp_seconds", "unstable", "lp_gap"} <= set(rows[0])
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---------------------------------------------------------------------- trust
def run_cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``nnrelax`` in a subprocess, so that output written below Python (solvers) is seen."""
    command = [sys.executable, "-m", "pyomo_nnrelax.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("solver", "code", "message"),
    [
        ("notasolver", 2, "unknown solver 'notasolver'"),
        ("gurobi_direct", 1, "solver 'gurobi_direct' is not available here"),
    ],
)
def test_solver_errors_are_one_line_on_stderr_and_nothing_on_stdout(model, solver, code, message):
    from pyomo.contrib.solver.common.factory import SolverFactory

    if solver == "gurobi_direct" and SolverFactory(solver).available():
        pytest.skip("gurobipy with a licence is installed here")
    result = run_cli("solve", model, "--solver", solver)
    assert result.returncode == code and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_a_time_limited_solve_reports_the_best_point_bound_and_gap(tmp_path):
    path = tmp_path / "deep.onnx"
    net = Network.mlp([2, 40, 40, 40, 1], seed=0)
    write_onnx(net.with_input_bounds([-2, -2], [2, 2]), path, dtype="float64")
    result = invoke("solve", path, "--time-limit", "0.5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert not report["optimal"] and report["status"] == "maxTimeLimit"
    assert report["incumbent"] in ("solver", "start")
    assert report["bound"] <= report["objective"] + 1e-9
    assert report["gap"] == pytest.approx(report["objective"] - report["bound"])
    point = np.array(report["point"])
    assert report["objective"] == pytest.approx(net.forward(point)[0, 0], abs=1e-6)
    assert report["max_abs_error"] < 1e-6
    text = invoke("solve", path, "--time-limit", "0.5")
    assert "not proven optimal: best known min of output 0" in text.stdout


def test_no_output_replaces_the_external_data_of_an_input(tmp_path):
    import onnx

    path = tmp_path / "model.onnx"
    proto = write_onnx(Network.mlp([2, 30, 1], seed=0).with_input_bounds([-1, -1], [1, 1]))
    onnx.save(
        proto, path, save_as_external_data=True, location="model.onnx.data", size_threshold=16
    )
    weights = (tmp_path / "model.onnx.data").read_bytes()
    for command in (
        ["tighten", path, "-o", tmp_path / "model.onnx.data", "--force"],
        ["refine", path, "--data", path, "-o", tmp_path / "model.onnx.data", "--force"],
    ):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        assert "which an input depends on" in error_line(result)
    assert (tmp_path / "model.onnx.data").read_bytes() == weights
    assert read_onnx(path).n_inputs == 2


def test_an_interrupted_refine_exits_130_saying_how_to_resume(model, data, tmp_path, monkeypatch):
    from pyomo_nnrelax.refinement import rounds as refine_module

    measure = refine_module.difficulty
    calls = []

    def interrupted_in_round_one(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # round 0 is measured, round 1's measurement is interrupted
            raise KeyboardInterrupt
        return measure(*args, **kwargs)

    monkeypatch.setattr(refine_module, "difficulty", interrupted_in_round_one)
    out = tmp_path / "refined.onnx"
    args = [
        "refine",
        model,
        "--data",
        data,
        "-o",
        out,
        "--regularizer",
        "bw",
        "--epochs",
        "1",
        "--milp-time-limit",
        "5",
        "--batch-size",
        "16",
        "--quiet",
        "--rounds",
        "2",
    ]
    result = invoke(*args)
    assert result.exit_code == 130
    line = result.stderr.strip().splitlines()[-1]
    assert "interrupted; rounds 0..0 of 2 are kept in" in line and "--resume" in line
    assert not out.exists()
    monkeypatch.setattr(refine_module, "difficulty", measure)
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    rows = json.loads((tmp_path / "refined.history.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2]


def test_ctrl_c_inside_an_extension_import_is_an_interrupt_saying_what_was_kept(
    model, data, tmp_path, monkeypatch
):
    # an extension module (highspy) interrupted while it initialises raises
    # ImportError("initialization failed") from the KeyboardInterrupt: it was a traceback
    from pyomo_nnrelax.refinement import rounds as refine_module

    def import_interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise ImportError("initialization failed") from exc

    monkeypatch.setattr(refine_module, "difficulty", import_interrupted)
    out = tmp_path / "refined.onnx"
    result = invoke(
        "refine", model, "--data", data, "-o", out, "--regularizer", "bw", "--batch-size", "16"
    )
    assert result.exit_code == 130
    assert "interrupted before round 0 was kept" in error_line(result)
    assert "--resume" in error_line(result)

    import pyomo_nnrelax.lp.tightening as tightening

    monkeypatch.setattr(tightening, "tighten_bounds", import_interrupted)
    result = invoke("tighten", model, "-o", tmp_path / "tight.onnx", "-q")
    assert result.exit_code == 130
    assert "nothing was written" in error_line(result)
    assert not (tmp_path / "tight.onnx").exists()


def test_bad_data_files_are_refused_before_anything_is_written(model, tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not an archive")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    cases = [
        (["refine", model, "--data", garbage, "-o", tmp_path / "r.onnx"], 1, "not an .npz"),
        (["inspect", empty], 1, "the file is empty"),
    ]
    for args, code, message in cases:
        result = invoke(*args)
        assert result.exit_code == code
        line = error_line(result)
        assert message in line and "pickle" not in line
    assert not (tmp_path / "r_rounds").exists()


def test_a_tiny_data_set_trains_with_a_warning(model, tmp_path):
    path = tmp_path / "tiny.npz"
    X = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])
    np.savez(path, X=X, y=X.sum(axis=1))
    result = invoke(
        "refine",
        model,
        "--data",
        path,
        "-o",
        tmp_path / "r.onnx",
        "--rounds",
        "1",
        "--epochs",
        "1",
        "--regularizer",
        "none",
        "--milp-time-limit",
        "5",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert "Warning: training data has only 3 samples" in result.stderr


def test_the_tighten_bar_counts_whole_layers(model, tmp_path):
    result = invoke("tighten", model, "-o", tmp_path / "t.onnx")
    assert result.exit_code == 0, result.output
    assert "3/3" in result.stderr and "0layer" not in result.stderr


# ---------------------------------------------------------------------- folders and float types
def test_writing_commands_create_missing_folders(model, data, tmp_path):
    tight = tmp_path / "new" / "deeper" / "tight.onnx"
    result = invoke("tighten", model, "-o", tight, "-q")
    assert result.exit_code == 0, result.output
    assert read_stored_bounds(tight).method == "lp"
    refined = tmp_path / "other" / "deeper" / "refined.onnx"
    result = invoke(
        "refine", model, "--data", data, "-o", refined, "--regularizer", "bw", "--rounds", "1",
        "--epochs", "1", "--milp-time-limit", "5", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in refined.parent.iterdir()) == [
        "refined.history.csv", "refined.history.json", "refined.history.png", "refined.onnx",
        "refined_rounds",
    ]  # fmt: skip


def test_an_output_whose_folder_cannot_be_made_is_refused_before_any_work(
    model, data, tmp_path, monkeypatch
):
    import pyomo_nnrelax.lp.tightening as tightening

    def no_work(*args, **kwargs):
        raise AssertionError("the command worked before checking its output")

    monkeypatch.setattr(tightening, "tighten_bounds", no_work)
    blocked = model / "sub"  # a folder would have to be made where the model file is
    for args in (
        ["tighten", model, "-o", blocked / "t.onnx"],
        ["refine", model, "--data", data, "-o", blocked / "r.onnx"],
        ["refine", model, "--data", data, "-o", tmp_path / "r.onnx", "--output-dir", blocked / "d"],
        ["sweep", "--data", data, "--arch", "2-3-1", "-o", blocked / "s.csv"],
    ):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert f"{model} is a file, not a folder" in error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "model.onnx"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_refine_then_tighten_then_solve_keeps_the_float_type_and_checks(data, tmp_path, dtype):
    """A refined network can be tightened and solved from the command line: every file
    keeps MODEL's float type (float32 in, float32 out), and the bounds tighten stores are
    those of the weights it writes."""
    model = tmp_path / "model.onnx"
    net = Network.mlp([2, 6, 6, 1], seed=0).with_input_bounds([-2, -2], [2, 2])
    write_onnx(net, model, dtype=dtype)
    refined, tight = tmp_path / "refined.onnx", tmp_path / "tight.onnx"
    result = invoke(
        "refine", model, "--data", data, "-o", refined, "--regularizer", "bw", "--lam", "1e-2",
        "--rounds", "1", "--epochs", "2", "--milp-time-limit", "5", "--fixed-lam", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert source_dtype(refined) == dtype
    # the checkpoints hold exactly the networks their rounds measured
    assert source_dtype(tmp_path / "refined_rounds/round_001.onnx") == "float64"
    assert read_onnx(refined) != net  # trained
    result = invoke("tighten", refined, "-o", tight, "-q")
    assert result.exit_code == 0, result.output
    assert source_dtype(tight) == dtype and read_onnx(tight) == read_onnx(refined)
    assert "rounded" not in result.stdout
    result = invoke("solve", tight, "--bounds", "stored", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["optimal"] and report["max_abs_error"] < 1e-6


def test_dtype_chooses_the_float_type_written(model, data, tmp_path):
    assert source_dtype(model) == "float32"
    result = invoke("tighten", model, "-o", tmp_path / "t.onnx", "--dtype", "float64", "-q")
    assert result.exit_code == 0, result.output
    assert source_dtype(tmp_path / "t.onnx") == "float64"
    assert read_onnx(tmp_path / "t.onnx") == read_onnx(model)
    result = invoke(
        "refine", model, "--data", data, "-o", tmp_path / "r.onnx", "--regularizer", "bw",
        "--rounds", "1", "--epochs", "1", "--milp-time-limit", "5", "--dtype", "float64", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert source_dtype(tmp_path / "r.onnx") == "float64"
    bad = invoke("tighten", model, "-o", tmp_path / "u.onnx", "--dtype", "float16")
    assert bad.exit_code == 2 and "'float32', 'float64'" in error_line(bad)


def _folded_model(path) -> None:
    """A float32 graph as torch exports a network with input scaling and batch
    normalisation: the reader folds them into the first Gemm's weights, which are then no
    float32 numbers."""
    from onnx import helper

    from tests.support.onnx_graphs import F32
    from tests.support.onnx_graphs import model as graph

    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("Gemm", ["scaled", "w1", "b1"], ["h"], transB=1),
        helper.make_node("BatchNormalization", ["h", "g", "beta", "mu", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ]
    inits = {
        "mean": [0.3, -0.2], "std": [1.7, 0.9], "w1": rng.normal(size=(6, 2)),
        "b1": rng.normal(size=6), "g": rng.uniform(0.5, 2, 6), "beta": rng.normal(size=6),
        "mu": rng.normal(size=6), "var": rng.uniform(0.5, 2, 6), "w2": rng.normal(size=(1, 6)),
        "b2": rng.normal(size=1),
    }  # fmt: skip
    onnx.save(graph(nodes, inits, input_shape=(2,), elem_type=F32, out_rank=2), path)


def test_tighten_keeps_a_model_whose_layers_fold_into_its_weights(tmp_path):
    model, tight = tmp_path / "folded.onnx", tmp_path / "tight.onnx"
    _folded_model(model)
    folded = read_onnx(model)
    assert folded != read_onnx(write_onnx(folded))  # float32 would round its weights

    result = invoke("tighten", model, "-o", tight, "--input-bounds", "-2,2", "-q")

    assert result.exit_code == 0, result.output
    assert "rounded the weights to float32, the type of tight.onnx, before tightening" in (
        result.stdout
    )
    assert source_dtype(tight) == "float32"
    network, stored = read_onnx(tight), read_stored_bounds(tight)
    X = np.random.default_rng(0).uniform(-2, 2, (2000, 2))
    for z, lo, hi in zip(network.pre_activations(X), stored.lower, stored.upper):
        assert np.all(z >= lo - 1e-9) and np.all(z <= hi + 1e-9)  # the bounds of these weights
    np.testing.assert_allclose(network.forward(X), folded.forward(X), rtol=1e-6, atol=1e-6)
    solved = invoke("solve", tight, "--bounds", "stored", "--json")
    assert solved.exit_code == 0 and json.loads(solved.stdout)["optimal"]

    exact = invoke("tighten", model, "-o", tmp_path / "exact.onnx", "--input-bounds", "-2,2",
                   "--dtype", "float64", "-q")  # fmt: skip
    assert exact.exit_code == 0 and "rounded" not in exact.stdout
    assert read_onnx(tmp_path / "exact.onnx") == folded
