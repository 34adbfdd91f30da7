"""The README's `nnrelax refine` example, end to end: data, a fitted surrogate, the command.

Writes a peaks data set (3000 Latin-hypercube points on [-2, 2]^2) and a 2-25-25-25-1
network fitted without a regularizer to 3000 other points (60 epochs, seed 0) into OUT, then
runs exactly

    nnrelax refine OUT/model.onnx --data OUT/data.npz -o OUT/refined.onnx \\
        --regularizer bw+lp --lam 5e-4 --rounds 6 --epochs 20 --input-bounds "-2,2" \\
        --milp-time-limit 30 -q

and prints the history it wrote (OUT/refined.history.csv; the plot is refined.history.png,
the README's docs/images/refine_history.png).  Training is deterministic for a seed; the MILP
seconds and node counts of each round's measurement vary from run to run (HiGHS, busy cores).

    python benchmarks/refine_history.py [--out DIR]     # about 2 minutes on 2 cores

``--depth 5 --plain`` runs the README's plain budget command on a 2-25x5 surrogate
instead: ``nnrelax refine model.onnx --data data.npz -o refined.onnx --loss-budget 1.2``,
every other option at its default (5 rounds of 20 epochs, lambda from 1e-3, 60 s MILPs).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pyomo_nnrelax import Network, write_onnx
from pyomo_nnrelax.experiments.functions import box, latin_hypercube, peaks
from pyomo_nnrelax.training import Trainer

COLUMNS = (
    "round", "lam", "loss_ratio", "within_budget", "unstable", "lp_gap", "milp_seconds",
    "milp_nodes", "chosen",
)  # fmt: skip


def write_inputs(out: Path, depth: int = 3) -> tuple[Path, Path]:
    """The data set and the unregularized surrogate (``depth`` hidden layers of 25) the
    command starts from, fitted on other points of the same function (so the 20% the command
    holds out are new to it)."""
    domain = box("peaks")
    X = latin_hypercube(3000, domain, seed=1)
    data = out / "data.npz"
    np.savez(data, X=X, y=peaks(X))
    X_fit = latin_hypercube(3000, domain, seed=0)
    fitted = Trainer(
        Network.mlp([2] + [25] * depth + [1], seed=0), X_fit, peaks(X_fit), input_bounds=domain,
        epochs=60, seed=0,
    ).fit()  # fmt: skip
    model = out / "model.onnx"
    write_onnx(fitted.network, model, overwrite=True, dtype="float64")
    return data, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Keep the files here (default: a temp dir).")
    parser.add_argument("--depth", type=int, default=3, help="hidden layers of 25 neurons")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="run `nnrelax refine model.onnx --data data.npz -o refined.onnx --loss-budget 1.2` "
        "instead, every other option at its default, and time it",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        data, model = write_inputs(out, args.depth)
        command = [
            sys.executable, "-m", "pyomo_nnrelax.cli", "refine", str(model),
            "--data", str(data), "-o", str(out / "refined.onnx"), "-q", "--force",
        ]  # fmt: skip
        if args.plain:
            command += ["--loss-budget", "1.2"]
        else:
            command += [
                "--regularizer", "bw+lp", "--lam", "5e-4", "--rounds", "6", "--epochs", "20",
                "--input-bounds", "-2,2", "--milp-time-limit", "30",
            ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True)
        print(f"nnrelax refine took {time.perf_counter() - start:.0f} s")
        with open(out / "refined.history.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        print(" ".join(f"{c:>12}" for c in COLUMNS))
        for row in rows:
            print(" ".join(f"{_short(row.get(c, '')):>12}" for c in COLUMNS))


def _short(text: str) -> str:
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


if __name__ == "__main__":
    main()
