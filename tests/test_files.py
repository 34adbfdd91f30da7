"""Files are written whole or not at all, and never over a file an input depends on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyomo_nnrelax import Network, write_onnx
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
