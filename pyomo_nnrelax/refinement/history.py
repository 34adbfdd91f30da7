"""The refinement's files: one history row per round and one checkpoint per round, named here
and nowhere else.

A run's folder holds ``round_000.onnx`` (the start), ``round_001.onnx``, ... and
``history.json``.  Each checkpoint is written before the history row that describes it, both
atomically, so an interrupted run resumes from its last complete round.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import save_rows
from ..files import same_file
from ..network import Network
from ..onnx import read_onnx, write_onnx

HISTORY_FILE = "history.json"


def checkpoint_path(output_dir: str | os.PathLike, round_index: int) -> Path:
    """The checkpoint of round ``round_index`` in ``output_dir`` (``round_003.onnx``)."""
    return Path(output_dir) / f"round_{round_index:03d}.onnx"


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
    # float64: the checkpoint is exactly the network its history row measured
    write_onnx(network.with_input_bounds(*box), path, overwrite=overwrite, dtype="float64")
    return path


def load_checkpoint(output_dir: Path, round_index: int, template: Network) -> Network:
    """Round ``round_index``'s network, with the activations and weight ties of ``template``
    (the network the run trains), whatever the file kept."""
    return read_onnx(checkpoint_path(output_dir, round_index)).with_structure_of(template)
