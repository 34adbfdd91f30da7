"""Every ``nnrelax`` command that writes or runs long, interrupted at a known point.

Each command runs as a subprocess in its own process group.  The test waits for a sign
that it is busy with its work, in the command's own output: its progress bar on stderr
(``tighten``, ``sweep``) or its checkpoints (``refine``); ``solve`` prints nothing until it
ends, so it is started by a launcher that touches a marker file as HiGHS begins to solve.  Only
then is the signal sent: SIGINT to the process group (Ctrl-C in a terminal) or SIGKILL to
the command alone (the OOM killer).  Then:

- the signal arrived: the exit code is 130 after SIGINT and -9 after SIGKILL, not 0;
- after SIGINT, stdout is empty and what stderr shows from the signal on (carriage returns
  applied, as a terminal shows it) is exactly one line saying what was kept;
- no output is half written: each output is absent or complete (ONNX files read back, CSV and
  JSON parse, PNG has its end chunk), and nothing else is in the folder but, after SIGKILL,
  the temporary files of :func:`pyomo_nnrelax.files.atomic_write`, which the next write of
  the same output removes;
- the inputs are byte-identical, and the worker processes of a killed command end by
  themselves;
- the work can be finished: ``refine --resume`` completes the rounds from its checkpoints
  (each readable, with its training state) and they are those of an uninterrupted run; the
  other commands run again.
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
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pyomo_nnrelax import Network, write_onnx
from pyomo_nnrelax.onnx import read_onnx, read_stored_bounds
from pyomo_nnrelax.onnx.write import as_written
from pyomo_nnrelax.refinement.history import load_state

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups"),
]

REPO = Path(__file__).resolve().parents[2]
PATIENCE = 600.0
"""Seconds to wait for a sign of progress or for the end: generous, for a loaded machine."""
TEMPORARY = re.compile(r"^\..+\.\d+\.[^.]+\.tmp$")
"""The name of a temporary file of ``atomic_write``: ``.<output name>.<pid>.<random>.tmp``."""
SIGNALS = [pytest.param(signal.SIGINT, id="sigint"), pytest.param(signal.SIGKILL, id="sigkill")]

SOLVE_LAUNCHER = """
import sys
from pathlib import Path

import highspy

marker, run = Path(sys.argv[1]), highspy.Highs.run


def marked_run(self):
    marker.touch()  # HiGHS starts to solve: the test may interrupt it now
    return run(self)


highspy.Highs.run = marked_run
from pyomo_nnrelax.cli import main

main(sys.argv[2:], prog_name="nnrelax")
"""
"""``python -c SOLVE_LAUNCHER MARKER ARGS``: ``nnrelax ARGS`` touching MARKER when HiGHS
starts a solve (``nnrelax solve`` runs one, the MILP)."""


# ---------------------------------------------------------------------- running and signalling
def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT's default action in the command, as a terminal's shell gives it: a suite run in
    the background (``pytest &``, ``nohup``) passes SIGINT on ignored, and Python then never
    raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Running:
    """``nnrelax ARGS`` (or ``python -c LAUNCHER ARGS``) in ``cwd``, in a process group of
    its own, with its stdout and stderr collected as they come."""

    def __init__(self, args: list[str], cwd: Path, launcher: str | None = None) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        start = ["-c", launcher] if launcher else ["-m", "pyomo_nnrelax.cli"]
        self.proc = subprocess.Popen(
            [sys.executable, *start, *map(str, args)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own group: Ctrl-C reaches it and its workers
            preexec_fn=_ctrl_c_as_in_a_terminal,
        )
        self._lock = threading.Lock()
        self._out, self._err = bytearray(), bytearray()
        self._signalled_at: int | None = None
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, buffer), daemon=True)
            for pipe, buffer in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, buffer: bytearray) -> None:
        for chunk in iter(lambda: pipe.read1(1 << 16), b""):
            with self._lock:
                buffer += chunk

    @property
    def stderr(self) -> str:
        with self._lock:
            return self._err.decode(errors="replace")

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """Wait until ``ready()``; fail if the command ends first or nothing comes in time."""
        deadline = time.monotonic() + PATIENCE
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"the command ended (exit {self.proc.returncode}) before {what}:\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no sign of {what} in {PATIENCE} s:\n{self.stderr}")
            time.sleep(0.05)

    def send(self, sig: int) -> None:
        """SIGINT to the whole group, as Ctrl-C; SIGKILL to the command alone."""
        with self._lock:
            self._signalled_at = len(self._err)
        if sig == signal.SIGINT:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGKILL)

    def finish(self) -> tuple[int, str, str]:
        """Exit code, stdout and stderr once the command (and every worker it started) ended."""
        try:
            code = self.proc.wait(timeout=PATIENCE)
            # the workers it started (sweep) end without it, not wait forever for work
            assert group_ends(self.proc.pid), "worker processes outlived the command"
        finally:
            try:  # what is left of the group, if the checks above failed (processes we started)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=60)
        with self._lock:
            return code, self._out.decode(errors="replace"), self._err.decode(errors="replace")

    def shown_after_signal(self) -> list[str]:
        """The stderr lines a terminal shows from the signal on: from the start of the line
        the signal came in, each line as its last carriage return left it, blank ones
        dropped (a progress bar cleared with ``\\r`` shows nothing)."""
        with self._lock:
            start = self._err.rfind(b"\n", 0, self._signalled_at) + 1
            text = self._err[start:].decode(errors="replace")
        shown = (line.rsplit("\r", 1)[-1] for line in text.split("\n"))
        return [line for line in shown if line.strip()]


def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """``nnrelax ARGS`` to its end."""
    return Running(args, cwd).finish()


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


def progressed(command: Running, total: int) -> bool:
    """Whether the command's progress bar on stderr has counted at least one of ``total``."""
    return re.search(rf"\| *[1-9]\d*/{total} \[", command.stderr) is not None


def check_signal_arrived(
    sig: int, code: int, out: str, command: Running, message: str = r"[Ii]nterrupted"
) -> None:
    """The command ended by the signal: -9 after SIGKILL; after SIGINT exit 130, nothing
    on stdout and one line on stderr matching ``message``."""
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL, f"exit {code} after SIGKILL:\n{command.stderr}"
        return
    assert code == 130, f"exit {code} after SIGINT:\n{command.stderr}"
    assert out == ""
    shown = command.shown_after_signal()
    assert len(shown) == 1, "not one line on stderr after Ctrl-C:\n" + "\n".join(shown)
    assert re.match(message, shown[0]), shown[0]


# ---------------------------------------------------------------------- files
def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_complete(path: Path) -> None:
    """``path`` is a whole file of its kind (raises AssertionError naming it otherwise)."""
    if path.suffix == ".onnx":
        read_onnx(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert len(rows) >= 2, f"{path.name}: no data rows"
        assert all(len(r) == len(rows[0]) for r in rows), f"{path.name}: ragged rows"
    elif path.suffix == ".png":
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path.name}: not a PNG"
        assert data.endswith(b"IEND\xaeB`\x82"), f"{path.name}: the PNG is cut short"
    elif path.suffix == ".npz":
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
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path in inputs:
            continue
        if TEMPORARY.match(path.name):
            temporary.append(path)
            continue
        assert path in outputs, f"unexpected file {path.relative_to(folder)}"
        check_complete(path)
    assert temporary_allowed or not temporary, f"temporary files left: {temporary}"
    return temporary


def make_inputs(folder: Path, widths: list[int]) -> dict[Path, str]:
    """``model.onnx`` (``Network.mlp(widths)`` over [-2, 2]^2) and ``data.npz`` (200 samples)
    in ``folder``; returns their digests."""
    folder.mkdir(parents=True, exist_ok=True)
    write_onnx(
        Network.mlp(widths, seed=0).with_input_bounds([-2, -2], [2, 2]), folder / "model.onnx"
    )
    X = np.random.default_rng(0).uniform(-2, 2, (200, 2))
    np.savez(folder / "data.npz", X=X, y=np.sin(X[:, 0]) * X[:, 1])
    return {p: digest(p) for p in (folder / "model.onnx", folder / "data.npz")}


# ---------------------------------------------------------------------- tighten and solve
@pytest.mark.parametrize("sig", SIGNALS)
def test_tighten_interrupted_while_tightening(tmp_path, sig):
    """Interrupted once a layer of MILP bounds is done, with minutes of MILPs to go."""
    inputs = make_inputs(tmp_path, [2, 16, 16, 16, 16, 1])
    output = tmp_path / "tight.onnx"
    args = ["tighten", "model.onnx", "-o", output.name, "--bounds", "milp", "--time-limit", "1"]
    command = Running(args, tmp_path)

    command.wait_for(lambda: progressed(command, 5), "a tightened layer")
    command.send(sig)
    code, out, _ = command.finish()

    check_signal_arrived(sig, code, out, command, r"interrupted; nothing was written")
    check_folder(tmp_path, inputs, set(), temporary_allowed=False)  # no tight.onnx, whole or half
    code, _, err = run([*args[:-4], "--bounds", "lp", "-q"], tmp_path)  # the work can be done
    assert code == 0, err
    assert read_stored_bounds(output).method == "lp"


def test_solve_interrupted_while_solving(tmp_path):
    """Ctrl-C in a MILP solve that would take minutes: HiGHS stops, one line, exit 130."""
    inputs = make_inputs(tmp_path / "work", [2, 40, 40, 40, 1])
    marker = tmp_path / "solving"
    args = ["solve", "model.onnx", "--json", "--time-limit", "300"]  # the limit: never a hang
    command = Running([marker, *args], tmp_path / "work", launcher=SOLVE_LAUNCHER)

    command.wait_for(marker.exists, "HiGHS solving")
    command.send(signal.SIGINT)
    code, out, _ = command.finish()

    check_signal_arrived(signal.SIGINT, code, out, command, r"interrupted before the solve ended")
    check_folder(tmp_path / "work", inputs, set(), temporary_allowed=False)  # solve writes none


# ---------------------------------------------------------------------- refine
ROUNDS = 4
REFINE = [
    "refine", "model.onnx", "--data", "data.npz", "-o", "refined.onnx", "--regularizer", "bw",
    "--rounds", str(ROUNDS), "--epochs", "2", "--batch-size", "16", "--milp-time-limit", "5",
]  # fmt: skip
"""A refinement with a stateless regularizer (an ``lp`` term's dual-network slopes are not
kept: a resumed run would differ in them)."""


def refine_outputs(folder: Path) -> set[Path]:
    """What refine may write in ``folder``: OUTPUT, its history and the checkpoint folder."""
    rounds_dir = folder / "refined_rounds"
    kept = [f"round_{i:03d}{ext}" for i in range(ROUNDS + 1) for ext in (".onnx", ".state.npz")]
    return {
        folder / "refined.onnx",
        *(folder / f"refined.history{ext}" for ext in (".json", ".csv", ".png")),
        rounds_dir / "history.json",
        *(rounds_dir / name for name in kept),
    }


def deterministic(rows: list[dict]) -> list[dict]:
    """What the rounds computed, without the clock: no seconds, and not the chosen round,
    which MILP seconds decide (NaN as None, so that equal rows compare equal)."""
    return [
        {k: None if v != v else v for k, v in row.items() if k != "chosen" and "seconds" not in k}
        for row in rows
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    """The history of the refinement run to its end without a signal."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    make_inputs(folder, [2, 6, 6, 1])
    code, _, err = run([*REFINE, "-q"], folder)
    assert code == 0, err
    return json.loads((folder / "refined.history.json").read_text())


@pytest.mark.parametrize("sig", SIGNALS)
def test_refine_interrupted_after_round_1_then_resumed_is_the_uninterrupted_run(
    tmp_path, uninterrupted, sig
):
    inputs = make_inputs(tmp_path, [2, 6, 6, 1])
    rounds_dir, outputs = tmp_path / "refined_rounds", refine_outputs(tmp_path)
    history = rounds_dir / "history.json"

    def round_1_kept() -> bool:
        return history.is_file() and json.loads(history.read_text())[-1]["round"] >= 1

    command = Running(REFINE, tmp_path)  # with its progress bar: the Ctrl-C line is alone
    command.wait_for(round_1_kept, "round 1's checkpoint")
    command.send(sig)
    code, out, _ = command.finish()

    check_signal_arrived(
        sig, code, out, command, rf"interrupted; rounds 0\.\.\d of {ROUNDS} are kept in "
        r"refined_rounds .*; continue with the same command and --resume$",
    )  # fmt: skip
    check_folder(tmp_path, inputs, outputs, temporary_allowed=sig == signal.SIGKILL)
    assert not (tmp_path / "refined.onnx").exists()
    kept = json.loads(history.read_text())
    assert 1 <= kept[-1]["round"] < ROUNDS
    for row in kept:  # every round in the history has its checkpoint and training state
        read_onnx(rounds_dir / f"round_{row['round']:03d}.onnx")
        assert load_state(rounds_dir, row["round"]) is not None

    code, out, err = run([*REFINE, "--resume", "-q"], tmp_path)

    assert code == 0, err
    check_folder(tmp_path, inputs, outputs, temporary_allowed=False)
    rows = json.loads((tmp_path / "refined.history.json").read_text())
    assert deterministic(rows[: len(kept)]) == deterministic(kept)  # kept rounds not redone
    assert deterministic(rows) == deterministic(uninterrupted)  # the same run
    [chosen] = [r["round"] for r in rows if r["chosen"]]
    checkpoint = read_onnx(rounds_dir / f"round_{chosen:03d}.onnx")
    assert read_onnx(tmp_path / "refined.onnx") == as_written(checkpoint, "float32")


# ---------------------------------------------------------------------- sweep
@pytest.mark.parametrize("sig", SIGNALS)
def test_sweep_interrupted_after_its_first_run(tmp_path, sig):
    inputs = make_inputs(tmp_path, [2, 6, 6, 1])
    outputs = {tmp_path / "results.csv", tmp_path / "results.png"}
    args = [
        "sweep", "--data", "data.npz", "--arch", "2-12-12-1", "--regularizers", "bw",
        "--lams", "1e-3", "--seeds", "0,1,2,3", "--epochs", "40", "--batch-size", "16",
        "--workers", "1", "--milp-time-limit", "5", "-o", "results.csv",
    ]  # fmt: skip
    command = Running(args, tmp_path)

    command.wait_for(lambda: progressed(command, 4), "a finished run")
    command.send(sig)
    code, out, _ = command.finish()

    check_signal_arrived(sig, code, out, command, r"interrupted; nothing was written")
    check_folder(tmp_path, inputs, set(), temporary_allowed=False)  # no results, whole or half
    code, _, err = run([*args, "-q"], tmp_path)
    assert code == 0, err
    check_folder(tmp_path, inputs, outputs, temporary_allowed=False)
    with (tmp_path / "results.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4
