"""Data in and out: reading ``.npz``/``.csv`` data sets, a fixed
train/validation/test split, and writing result rows as CSV or JSON."""

from __future__ import annotations

import csv
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write, atomic_write_text


def read_data(path: str | os.PathLike, targets: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Inputs X (n, d) and targets y (n, targets) from ``.npz`` (arrays X, y) or ``.csv``.

    In a CSV file the last ``targets`` columns are the targets; a first row that is not
    numeric is taken as a header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {os.fspath(path)} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix != ".csv":
        raise ValueError(f"{path}: data must be a .npz or .csv file")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if lines and not _numeric_row(lines[0]):
        lines = lines[1:]
    try:
        table = np.array([[float(v) for v in line.split(",")] for line in lines], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric value in the data ({exc})") from None
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] <= targets:
        raise ValueError(
            f"{path}: need rows of at least {targets + 1} comma-separated numbers "
            f"(inputs, then {targets} target column(s))"
        )
    return table[:, :-targets], table[:, -targets:]


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X and y of an ``.npz`` archive, with errors that say what is wrong with the file."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz archive (np.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"X", "y"} - set(archive.files)
            if missing:
                raise ValueError(
                    f"{path}: arrays {sorted(missing)} missing; it holds {archive.files}"
                )
            X, y = archive["X"], archive["y"]
            if X.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
                raise ValueError(f"{path}: X and y must hold numbers, not {X.dtype}/{y.dtype}")
            X, y = X.astype(np.float64), y.astype(np.float64)
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from None
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: X or y holds Python objects, not numbers") from None
    if X.ndim != 2 or len(y) != len(X):
        raise ValueError(
            f"{path}: X must be (n, inputs) and y have n rows; got {X.shape} and {y.shape}"
        )
    return X, y.reshape(len(y), -1)


def _numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


def split_data(
    X: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """A shuffled (train, validation, test) split of (X, y); each part keeps at least one row
    (the test part is empty when ``test_fraction`` is 0)."""
    n = len(X)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n_val < 1 or (test_fraction > 0 and n_test < 1) or n - n_val - n_test < 1:
        raise ValueError(
            f"{n} samples cannot be split into training, validation ({val_fraction}) and "
            f"test ({test_fraction}) parts"
        )
    order = np.random.default_rng(seed).permutation(n)
    parts = np.split(order, [n - n_val - n_test, n - n_test])
    return tuple((X[rows], y[rows]) for rows in parts)


def save_rows(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write dict rows to ``path``: ``.csv`` as a table (union of the keys), else as JSON."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return atomic_write_text(path, json.dumps(rows, indent=2, default=_json_default))
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return float(value)
