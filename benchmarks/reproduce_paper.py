"""Reproduce the regularizer comparison of Tsay (2026) on HiGHS, with the paper's columns.

For each benchmark function and architecture, one network per regularizer is trained from
the same initial weights and data; then the output of each is minimised as a MILP on HiGHS
(through NNBlock) one at a time, so solve times are not disturbed by training.

    python benchmarks/reproduce_paper.py                 # reduced sizes, about 20 min on 2 cores
    python benchmarks/reproduce_paper.py --full          # the paper's sizes (many hours)
    python benchmarks/reproduce_paper.py --functions peaks --archs 5 --regularizers none bw bwlp

Columns: unstable neurons (interval bounds), global LP gap, B&B nodes, MILP time (a ">" marks
a time-limited solve, whose gap is then a lower bound), test MSE relative to no regularizer,
training time relative to no regularizer.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyomo_nnrelax import Network
from pyomo_nnrelax.experiments.data import save_rows
from pyomo_nnrelax.experiments.functions import ackley, box, himmelblau, latin_hypercube, peaks
from pyomo_nnrelax.experiments.measure import difficulty
from pyomo_nnrelax.training import L1, BoundWidth, LPGap, StableNeuron, Trainer

FUNCTIONS = {"peaks": peaks, "himmelblau": himmelblau, "ackley": ackley}
REGULARIZERS = {
    "none": lambda: None,
    "l1": L1,
    "bw": BoundWidth,
    "sn": StableNeuron,
    "lp": lambda: LPGap(sense="min", samples=8),
    "bwlp": lambda: BoundWidth() + LPGap(sense="min", samples=8),
}


@dataclass(frozen=True)
class Config:
    function: str
    depth: int
    regularizer: str
    lam: float
    seed: int
    n_train: int
    n_val: int
    epochs: int


def train(config: Config) -> dict:
    """Train one network; returns it with its test MSE and training time."""
    f = FUNCTIONS[config.function]
    domain = box(config.function)
    X = latin_hypercube(config.n_train + config.n_val, domain, seed=config.seed)
    y = f(X)
    X_test = latin_hypercube(5000, domain, seed=config.seed + 1000)
    start_net = Network.mlp([2] + [25] * config.depth + [1], seed=config.seed)
    trainer = Trainer(
        start_net,
        X[: config.n_train],
        y[: config.n_train],
        input_bounds=domain,
        validation=(X[config.n_train :], y[config.n_train :]),
        regularizer=REGULARIZERS[config.regularizer](),
        lam=config.lam,
        epochs=config.epochs,
        batch_size=64,
        lr=1e-3,
        seed=config.seed,
    )
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    span = y.max() - y.min()
    mse = float(np.mean(((result.network.forward(X_test)[:, 0] - f(X_test)) / span) ** 2))
    return {"config": config, "network": result.network, "train_seconds": seconds, "test_mse": mse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", nargs="+", default=list(FUNCTIONS), choices=list(FUNCTIONS))
    parser.add_argument(
        "--archs", nargs="+", type=int, default=[2, 3, 5], help="hidden layers of 25 neurons"
    )
    parser.add_argument(
        "--regularizers", nargs="+", default=list(REGULARIZERS), choices=list(REGULARIZERS)
    )
    parser.add_argument("--lams", nargs="+", type=float, default=[1e-3], help="regularizer weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-val", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--time-limit", type=float, default=60.0, help="MILP time limit, s")
    parser.add_argument("--workers", type=int, default=2, help="training processes")
    parser.add_argument(
        "--full",
        action="store_true",
        help="paper sizes: 70,000/30,000 points, 200 epochs, 1800 s limit",
    )
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    args = parser.parse_args()
    if args.full:
        args.n_train, args.n_val, args.epochs, args.time_limit = 70000, 30000, 200, 1800.0
    configs = [
        Config(fn, depth, reg, lam, args.seed, args.n_train, args.n_val, args.epochs)
        for fn in args.functions
        for depth in args.archs
        for reg in args.regularizers
        for lam in ([0.0] if reg == "none" else args.lams)
    ]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=spawn) as pool:
        trained = list(pool.map(train, configs))
    rows = []
    for item in trained:
        c = item["config"]
        measured = difficulty(
            item["network"], box(c.function), "min", milp_time_limit=args.time_limit
        )
        rows.append(
            {
                "function": c.function,
                "arch": f"2-25x{c.depth}-1",
                "regularizer": c.regularizer,
                "lam": c.lam,
                "unstable": measured.unstable,
                "lp_gap": measured.lp_gap,
                "nodes": measured.milp.nodes,
                "milp_seconds": measured.milp.seconds,
                "milp_optimal": measured.milp.optimal,
                "test_mse": item["test_mse"],
                "train_seconds": item["train_seconds"],
            }
        )
    print_table(rows)
    if args.csv:
        save_rows(rows, args.csv)


def print_table(rows: list[dict]) -> None:
    """The paper's columns, with ratios to the unregularized network of the same setting."""
    base = {(r["function"], r["arch"]): r for r in rows if r["regularizer"] == "none"}
    header = (
        f"{'function':<11}{'arch':<11}{'reg':<6}{'lambda':>8}{'unstable':>9}{'LP gap':>10}"
        f"{'nodes':>9}{'MILP s':>10}{'MILP speed-up':>14}{'MSE ratio':>10}{'train ratio':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        ref = base.get((r["function"], r["arch"]))
        mark = "" if r["milp_optimal"] else ">"
        speedup = mse_ratio = train_ratio = float("nan")
        if ref is not None:
            speedup = ref["milp_seconds"] / r["milp_seconds"]
            mse_ratio = r["test_mse"] / ref["test_mse"]
            train_ratio = r["train_seconds"] / ref["train_seconds"]
        ref_mark = ">" if ref is not None and not ref["milp_optimal"] else ""
        print(
            f"{r['function']:<11}{r['arch']:<11}{r['regularizer']:<6}{r['lam']:>8.0e}{r['unstable']:>9}"
            f"{r['lp_gap']:>10.3g}{r['nodes']:>9}{mark + format(r['milp_seconds'], '.2f'):>10}"
            f"{ref_mark + format(speedup, '.1f') + 'x':>14}{mse_ratio:>10.2f}{train_ratio:>12.2f}"
        )


if __name__ == "__main__":
    main()
