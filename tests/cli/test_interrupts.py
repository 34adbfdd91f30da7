"""Every ``nnrelax`` command killed at a random moment: nothing half-written, nothing lost.

Each command runs as a subprocess on a tiny network and data set and gets SIGKILL (the
process itself, as the OOM killer would) or SIGINT (its whole process group, as Ctrl-C in a
terminal would) after a seeded random delay; a command that finishes first is a valid case
too.  Then:

- every named output is absent or complete (ONNX loads with the package, CSV and JSON parse
  in full, PNG has its end chunk);
- the worker processes of a killed command end by themselves;
- the folder holds no other file than the inputs, the outputs and, after SIGKILL only, the
  temporary files of :func:`pyomo_nnrelax.files.atomic_write` (``.<name>.<pid>.<random>.tmp``),
  which the next write of the same output removes;
- the input files are byte-identical to before;
- SIGINT exits with 130 (or by SIGINT, see ``check_interrupt_message``) and one line on
  stderr saying what was kept and how to continue;
- a follow-up run completes: ``refine ... --resume`` with every round of ``--rounds``; after
  a kill that left temporary files, the other writing commands with ``--force``; and leaves
  no temporary file.

``NNRELAX_KILL_CASES`` (default 1) sets the number of kill moments per command and signal.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pyomo_nnrelax import Network, write_onnx
from pyomo_nnrelax.onnx import read_onnx, read_stored_bounds

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups"),
]

KILL_CASES = int(os.environ.get("NNRELAX_KILL_CASES", "1"))
REPO = Path(__file__).resolve().parents[2]
TEMPORARY = re.compile(r"^\..+\.\d+\.[^.]+\.tmp$")
"""The name of a temporary file of ``atomic_write``: ``.<output name>.<pid>.<random>.tmp``."""
ROUNDS = 2


# ---------------------------------------------------------------------- running and killing
def run(args: list[str], cwd: Path, sig: int | None = None, delay: float = 0.0):
    """Run ``nnrelax ARGS`` in ``cwd``; after ``delay`` seconds send ``sig`` unless it has
    finished.  Returns (exit code, stdout, stderr, whether the signal was sent)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyomo_nnrelax.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C reaches it and its workers
    )
    sent = False
    try:
        if sig is not None:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                if sig == signal.SIGINT:
                    os.killpg(proc.pid, signal.SIGINT)
                else:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    # the workers it started (sweep) must end without it, not wait forever
                    # for work, holding the output pipes
                    assert group_ends(proc.pid), "worker processes outlived a killed command"
                sent = True
        out, err = proc.communicate(timeout=240)
    finally:
        try:  # workers of a killed command are ended with their group (processes we started)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    return proc.returncode, out, err, sent


def group_ends(pgid: int, patience: float = 60.0) -> bool:
    """Whether every process of group ``pgid`` has ended within ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------- what a complete file is
def check_complete(path: Path) -> None:
    """``path`` is a whole file of its kind (raises AssertionError naming it otherwise)."""
    suffix = path.suffix
    if suffix == ".onnx":
        read_onnx(path)
    elif suffix == ".json":
        json.loads(path.read_text())
    elif suffix == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert len(rows) >= 2, f"{path.name}: no data rows"
        assert all(len(r) == len(rows[0]) for r in rows), f"{path.name}: ragged rows"
    elif suffix == ".png":
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path.name}: not a PNG"
        assert data.endswith(b"IEND\xaeB`\x82"), f"{path.name}: the PNG is cut short"
    elif suffix == ".npz":
        with np.load(path) as archive:
            list(archive.values())
    else:
        raise AssertionError(f"unexpected file {path.name}")


def check_folder(
    folder: Path, inputs: dict[Path, str], outputs: set[Path], temporary_allowed: bool
) -> list[Path]:
    """Inputs unchanged, outputs complete, nothing else but allowed temporary files; returns
    the temporary files found."""
    for path, before in inputs.items():
        assert digest(path) == before, f"the input {path.name} changed"
    temporary = []
    for path in all_files(folder):
        if path in inputs:
            continue
        if TEMPORARY.match(path.name):
            temporary.append(path)
            continue
        assert path in outputs, f"unexpected file {path.relative_to(folder)}"
        check_complete(path)
    assert temporary_allowed or not temporary, f"temporary files left: {temporary}"
    return temporary


def check_interrupt_message(code: int, out: str, err: str, sent: bool, pattern: str) -> None:
    """After SIGINT: exit 130 (or by SIGINT) and one line on stderr matching ``pattern``."""
    if not sent:
        assert code == 0, err
        return
    lines = err.strip().splitlines()
    if code == -signal.SIGINT and not lines:  # while Python shut down, after the work was done
        assert out.strip(), "ended by SIGINT before printing its result, without a message"
        return
    # -SIGINT: Python ends "by SIGINT" (the shell shows 130 too) when the interrupt landed in
    # an extension module's initialisation, after the message below is written
    assert code in (130, -signal.SIGINT), f"exit code {code} after SIGINT; stderr:\n{err}"
    assert len(lines) == 1, f"not one line on stderr:\n{err}"
    assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]


# ---------------------------------------------------------------------- the commands
@pytest.fixture
def folder(tmp_path) -> Path:
    """A tiny network (2-6-6-1 with a stored box) and a data set of 200 samples."""
    write_onnx(
        Network.mlp([2, 6, 6, 1], seed=0).with_input_bounds([-2, -2], [2, 2]),
        tmp_path / "model.onnx",
    )
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (200, 2))
    np.savez(tmp_path / "data.npz", X=X, y=np.sin(X[:, 0]) * X[:, 1])
    return tmp_path


def inputs_of(folder: Path) -> dict[Path, str]:
    return {p: digest(p) for p in (folder / "model.onnx", folder / "data.npz")}


SIGNALS = [("kill", signal.SIGKILL), ("int", signal.SIGINT)]
CASES = [(name, sig, case) for name, sig in SIGNALS for case in range(KILL_CASES)]


def moment(command: str, sig: int, case: int, longest: float) -> float:
    """A seeded random moment in (0.5, longest) seconds."""
    rng = np.random.default_rng([sum(map(ord, command)), int(sig), case])
    return float(rng.uniform(0.5, longest))


@pytest.mark.parametrize("name, sig, case", CASES)
def test_tighten_killed(folder, name, sig, case):
    inputs = inputs_of(folder)
    output = folder / "tight.onnx"
    args = ["tighten", "model.onnx", "-o", "tight.onnx", "--bounds", "lp", "-q"]

    code, out, err, sent = run(args, folder, sig, moment("tighten", sig, case, 8.0))

    left = check_folder(folder, inputs, {output}, temporary_allowed=sig == signal.SIGKILL)
    if sig == signal.SIGINT:
        check_interrupt_message(code, out, err, sent, r"interrupted.*nothing was written")
    if output.exists():
        assert read_stored_bounds(output).method == "lp"
    if left:  # the next run removes what the killed one left
        code, out, err, _ = run([*args, "--force"], folder)
        assert code == 0, err
        check_folder(folder, inputs, {output}, temporary_allowed=False)


@pytest.mark.parametrize("name, sig, case", CASES)
def test_solve_killed(folder, name, sig, case):
    inputs = inputs_of(folder)
    args = ["solve", "model.onnx", "--json"]

    code, out, err, sent = run(args, folder, sig, moment("solve", sig, case, 8.0))

    check_folder(folder, inputs, set(), temporary_allowed=False)  # solve writes no file
    if sig == signal.SIGINT:
        check_interrupt_message(code, out, err, sent, r"interrupted")
    if code == 0:
        assert json.loads(out)["optimal"] is True


@pytest.mark.parametrize("name, sig, case", CASES)
def test_refine_killed_then_resumed(folder, name, sig, case):
    inputs = inputs_of(folder)
    rounds_dir = folder / "refined_rounds"
    outputs = {
        folder / "refined.onnx",
        *(folder / f"refined.history{ext}" for ext in (".json", ".csv", ".png")),
        rounds_dir / "history.json",
        *(rounds_dir / f"round_{i:03d}.onnx" for i in range(ROUNDS + 1)),
    }
    args = [
        "refine",
        "model.onnx",
        "--data",
        "data.npz",
        "-o",
        "refined.onnx",
        "--regularizer",
        "bw",
        "--rounds",
        str(ROUNDS),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--milp-time-limit",
        "5",
        "-q",
    ]

    code, out, err, sent = run(args, folder, sig, moment("refine", sig, case, 12.0))

    check_folder(folder, inputs, outputs, temporary_allowed=sig == signal.SIGKILL)
    if sig == signal.SIGINT:
        check_interrupt_message(
            code, out, err, sent, r"interrupted.*(--resume|nothing was written)"
        )
    history = rounds_dir / "history.json"
    kept = json.loads(history.read_text()) if history.exists() else []
    for row in kept:  # every round in the history has its checkpoint
        read_onnx(rounds_dir / f"round_{row['round']:03d}.onnx")

    code, out, err, _ = run([*args, "--resume"], folder)

    assert code == 0, err
    check_folder(folder, inputs, outputs, temporary_allowed=False)
    rows = json.loads((folder / "refined.history.json").read_text())
    assert [r["round"] for r in rows] == list(range(ROUNDS + 1))

    def measured(row: dict) -> dict:  # what a round measured (not which round was chosen)
        return {k: v for k, v in row.items() if k != "chosen"}

    assert [measured(r) for r in rows[: len(kept)]] == [measured(r) for r in kept]  # not redone
    [chosen] = [r["round"] for r in rows if r["chosen"]]  # the loss budget's choice
    final = read_onnx(folder / "refined.onnx")
    assert final == read_onnx(rounds_dir / f"round_{chosen:03d}.onnx")


@pytest.mark.parametrize("name, sig, case", CASES)
def test_sweep_killed(folder, name, sig, case):
    inputs = inputs_of(folder)
    outputs = {folder / "results.csv", folder / "results.png"}
    args = [
        "sweep",
        "--data",
        "data.npz",
        "--arch",
        "2-4-1",
        "--regularizers",
        "none",
        "--lams",
        "1e-3",
        "--seeds",
        "0,1",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--workers",
        "1",
        "--milp-time-limit",
        "5",
        "-o",
        "results.csv",
        "-q",
    ]

    code, out, err, sent = run(args, folder, sig, moment("sweep", sig, case, 12.0))

    left = check_folder(folder, inputs, outputs, temporary_allowed=sig == signal.SIGKILL)
    if sig == signal.SIGINT:
        check_interrupt_message(code, out, err, sent, r"interrupted.*(nothing was|written:)")
    if (folder / "results.csv").exists():
        with (folder / "results.csv").open(newline="") as handle:
            assert len(list(csv.DictReader(handle))) == 2
    if left:  # the next run removes what the killed one left
        code, out, err, _ = run([*args, "--force"], folder)
        assert code == 0, err
        check_folder(folder, inputs, outputs, temporary_allowed=False)
