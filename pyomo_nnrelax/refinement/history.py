"""The refinement's files: one history row, one checkpoint and one training state per round,
named here and nowhere else.

A run's folder holds ``round_000.onnx`` (the start), ``round_001.onnx``, ..., the training
state beside each (``round_001.state.npz``: what :meth:`~pyomo_nnrelax.training.Trainer.state`
gives, so that a resumed run continues the same trajectory) and ``history.json``.  Each
checkpoint and its state are written before the history row that describes them, all
atomically, so an interrupted run resumes from its last complete round.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import save_rows
from ..files import atomic_write, same_file
from ..network import Network
from ..onnx import read_onnx, write_onnx

HISTORY_FILE = "history.json"


def checkpoint_path(output_dir: str | os.PathLike, round_index: int) -> Path:
    """The checkpoint of round ``round_index`` in ``output_dir`` (``round_003.onnx``)."""
    return Path(output_dir) / f"round_{round_index:03d}.onnx"


def state_path(output_dir: str | os.PathLike, round_index: int) -> Path:
    """The training state saved with round ``round_index`` (``round_003.state.npz``)."""
    return Path(output_dir) / f"round_{round_index:03d}.state.npz"


def checkpoints_in(output_dir: Path) -> list[Path]:
    """The checkpoints a folder holds, in round order (none if it does not exist)."""
    return sorted(output_dir.glob("round_*.onnx")) if output_dir.is_dir() else []


@dataclass
class RefineHistory:
    """One row per round (round 0 is the starting network), saved as JSON or CSV."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the rows to ``path``: ``.csv`` as a table, anything else as JSON."""
        return save_rows(self.rows, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RefineHistory:
        """Read a history written by :meth:`save` in JSON."""
        return cls(json.loads(Path(path).read_text()))

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]

    @property
    def last(self) -> dict[str, Any]:
        """The row of the last round kept."""
        return self.rows[-1]


def default_output_dir(source) -> Path:
    """``<input stem>_refined/`` beside an input file, else ``nnrelax_refined/``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.with_name(path.stem + "_refined")
    return Path("nnrelax_refined")


def check_fresh_output_dir(source, output_dir: Path, overwrite: bool) -> None:
    """Refuse a checkpoint folder that holds an earlier run's checkpoints (unless ``overwrite``)
    or whose first checkpoint would be the source file itself."""
    first = checkpoint_path(output_dir, 0)
    if isinstance(source, (str, os.PathLike)) and same_file(source, first):
        raise ValueError(
            f"the checkpoint {first} would replace the source {source}; choose another output_dir"
        )
    existing = checkpoints_in(output_dir)
    if existing and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds checkpoints ({existing[0].name}, ...); "
            "pass resume=True to continue them or overwrite=True to replace them"
        )


def save_checkpoint(
    network: Network, box, output_dir: Path, round_index: int, overwrite: bool
) -> Path:
    """Write round ``round_index``'s network (with the training box) as its checkpoint."""
    path = checkpoint_path(output_dir, round_index)
    # the loop measures the network as written (as_written), so the checkpoint is exactly the
    # network its history row describes: dense float64, or a CNN's own graph in its own types
    write_onnx(network.with_input_bounds(*box), path, overwrite=overwrite, dtype="float64")
    return path


def load_checkpoint(output_dir: Path, round_index: int, template: Network) -> Network:
    """Round ``round_index``'s network, with the activations and weight ties of ``template``
    (the network the run trains), whatever the file kept."""
    return read_onnx(checkpoint_path(output_dir, round_index)).with_structure_of(template)


def save_state(state: Mapping[str, np.ndarray], output_dir: Path, round_index: int) -> Path:
    """Write the training state of round ``round_index`` (named arrays) beside its checkpoint."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:  # a file object: np.savez would append ".npz" to a name
            np.savez(handle, **state)

    return atomic_write(state_path(output_dir, round_index), write)


def load_state(output_dir: Path, round_index: int) -> dict[str, np.ndarray] | None:
    """The training state of round ``round_index``, or None when the folder has none (a run
    written before states were kept).  A damaged file raises ValueError naming it."""
    path = state_path(output_dir, round_index)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable training state ({exc})") from None
