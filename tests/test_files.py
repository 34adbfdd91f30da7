"""Files are written whole or not at all, and never over a file an input depends on."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from pyomo_nnrelax import Network, write_onnx
from pyomo_nnrelax.data import save_rows
from pyomo_nnrelax.files import (
    atomic_write,
    atomic_write_text,
    check_outputs,
    remove_stale_temporaries,
)
from pyomo_nnrelax.onnx import read_onnx
from pyomo_nnrelax.onnx.load import external_data_files


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old contents")

    def half_then_crash(tmp):
        tmp.write_text("half of the new")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError, match="crash while writing"):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    atomic_write_text(path, "new contents")
    assert path.read_text() == "new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_an_interrupted_onnx_write_keeps_the_old_model(tmp_path, monkeypatch):
    import onnx

    path = tmp_path / "net.onnx"
    old = Network.mlp([2, 3, 1], seed=0)
    write_onnx(old, path, dtype="float64")

    def interrupted_save(model, target):
        with open(target, "wb") as handle:
            handle.write(model.SerializeToString()[:50])
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        write_onnx(Network.mlp([2, 3, 1], seed=1), path, overwrite=True)
    monkeypatch.undo()
    assert read_onnx(path) == old
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]


def test_outputs_never_replace_protected_files_even_with_force(tmp_path):
    data = tmp_path / "model.onnx.data"
    data.write_bytes(b"weights")
    with pytest.raises(ValueError, match="would replace .*model.onnx.data"):
        check_outputs([tmp_path / "sub" / ".." / "model.onnx.data"], [data], force=True)
    with pytest.raises(FileExistsError, match="--force"):
        check_outputs([data], [], force=False)
    check_outputs([data], [], force=True)


def test_an_output_whose_folder_cannot_be_made_is_refused(tmp_path, monkeypatch):
    blocker = tmp_path / "table.csv"
    blocker.write_text("a file where a folder would have to be")
    with pytest.raises(ValueError, match=f"cannot write .*: {blocker} is a file, not a folder"):
        check_outputs([blocker / "deeper" / "out.csv"], [], force=False)
    check_outputs([tmp_path / "new" / "deeper" / "out.csv"], [], force=False)  # can be made
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a folder of another user
    with pytest.raises(ValueError, match=f"the folder {tmp_path} is not writable"):
        check_outputs([tmp_path / "new" / "out.csv"], [], force=False)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_every_write_creates_missing_folders_with_the_modes_the_umask_gives(tmp_path, umask):
    """Files get ``0o666`` and folders ``0o777`` less the umask, as any new file and folder
    (the temporary file was ``0o600``, which the rename kept)."""
    written = {
        "text": lambda path: atomic_write_text(path, "whole"),
        "onnx": lambda path: write_onnx(Network.mlp([2, 3, 1], seed=0), path),
        "csv": lambda path: save_rows([{"a": 1}], path),
    }
    old = os.umask(umask)
    try:
        for kind, write in written.items():
            write(tmp_path / kind / "deeper" / f"out.{kind}")
    finally:
        os.umask(old)
    for kind in written:
        assert _mode(tmp_path / kind) == _mode(tmp_path / kind / "deeper") == 0o777 & ~umask
        assert _mode(tmp_path / kind / "deeper" / f"out.{kind}") == 0o666 & ~umask


def test_external_data_files_of_a_model_are_found(tmp_path):
    import onnx

    path = tmp_path / "model.onnx"
    model = write_onnx(Network.mlp([2, 30, 1], seed=0))
    onnx.save(
        model, path, save_as_external_data=True, location="model.onnx.data", size_threshold=16
    )
    assert external_data_files(path) == [(tmp_path / "model.onnx.data").resolve()]
    assert external_data_files(tmp_path / "missing.onnx") == []


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="stale temporary files are removed on POSIX only")
def test_a_write_removes_the_temporary_files_of_killed_writers_of_the_same_output(tmp_path):
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(ended.stdout)
    stale = tmp_path / f".table.csv.{dead}.abc123.tmp"  # what SIGKILL mid-write leaves
    live = tmp_path / f".table.csv.{os.getpid()}.def456.tmp"  # a write in progress
    other = tmp_path / f".other.csv.{dead}.abc123.tmp"  # another output's
    for path in (stale, live, other):
        path.write_text("half")

    atomic_write_text(tmp_path / "table.csv", "whole")

    assert not stale.exists() and live.exists() and other.exists()
    assert (tmp_path / "table.csv").read_text() == "whole"
    assert remove_stale_temporaries(tmp_path / "other.csv") == [other]
