"""Reproduce the regularizer comparison of Tsay (2026) on HiGHS, with the paper's columns.

For each benchmark function and architecture, one network per regularizer is trained from
the same initial weights and data; then the output of each is minimised as a MILP on HiGHS
(through NNBlock) one at a time, so solve times are not disturbed by training.

    python benchmarks/reproduce_paper.py                 # reduced sizes, about 20 min on 2 cores
    python benchmarks/reproduce_paper.py --full          # the paper's sizes (many hours)
    python benchmarks/reproduce_paper.py --functions peaks --archs 5 --regularizers none bw bwlp
    python benchmarks/reproduce_paper.py --archs 3 5 --regularizers none bwlp budget \
        --loss-budget 1.25                               # the accuracy budget beside fixed lambda

Columns: unstable neurons (interval bounds), global LP gap, B&B nodes, MILP time (a ">" marks
a time-limited solve, whose gap is then a lower bound), test MSE relative to no regularizer,
training time relative to no regularizer, and the decision: the true function at the MILP's
argmin and its regret against the function's known global minimum, as a percentage of the
function's range over its box (what a surrogate user pays for a wrong optimum).

``budget`` rows start from the unregularized network of the same setting and refine it with
BW+LP within ``--loss-budget`` and ``--decision-budget`` (``refine(..., loss_budget=...,
evaluate=f, decision_budget=...)``: lambda from ``--budget-lam``, doubling while the
validation loss and the true value at each round's MILP argmin hold, ``--budget-rounds``
rounds of half the epochs each, each round's MILP solved with ``--budget-time-limit``); their
training time is the refinement's training (its MILP measurements left out), against the
unregularized training.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyomo_nnrelax import Network, write_onnx
from pyomo_nnrelax.box import as_input_box
from pyomo_nnrelax.data import save_rows
from pyomo_nnrelax.experiments.functions import ackley, box, himmelblau, latin_hypercube, peaks
from pyomo_nnrelax.measure import difficulty, milp_argmin
from pyomo_nnrelax.refinement import refine
from pyomo_nnrelax.training import L1, BoundWidth, LPGap, StableNeuron, Trainer

FUNCTIONS = {"peaks": peaks, "himmelblau": himmelblau, "ackley": ackley}
GLOBAL_MINIMUM = {"peaks": -6.551133332835841, "himmelblau": 0.0, "ackley": 0.0}
"""Known global minima over the standard boxes (peaks: at about (0.2283, -1.6255))."""
REGULARIZERS = {
    "none": lambda method: None,
    "l1": lambda method: L1(),
    "bw": lambda method: BoundWidth(),
    "sn": lambda method: StableNeuron(),
    "lp": lambda method: LPGap(sense="min", gap_method=method),
    "bwlp": lambda method: BoundWidth() + LPGap(sense="min", gap_method=method),
    "budget": lambda method: None,  # trained as "none", then refined with BW+LP in a budget
}
"""Regularizers by name; ``method`` is the LP-gap method (``lp``: 8 exact LPs per mini-batch,
as the paper; ``dual``: the dual-network bound on the whole mini-batch)."""
USES_LP = {"lp", "bwlp", "budget"}
"""The rows that use the LP-gap method."""


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
    loss_budget: float = 1.25
    budget_rounds: int = 6
    gap_method: str = "exact_lp"
    decision_budget: float = 5.0
    budget_time_limit: float = 20.0


def function_range(name: str) -> float:
    """The range of a benchmark function over its box (20,000 Latin-hypercube points): the
    unit of the regret and decision-budget columns."""
    grid = latin_hypercube(20000, box(name), seed=0)
    return float(np.ptp(FUNCTIONS[name](grid)))


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
        regularizer=REGULARIZERS[config.regularizer](config.gap_method),
        lam=config.lam,
        epochs=config.epochs,
        batch_size=64,
        lr=1e-3,
        seed=config.seed,
    )
    start = time.perf_counter()
    network = trainer.fit().network
    seconds = time.perf_counter() - start
    span = y.max() - y.min()
    if config.regularizer == "budget":
        with tempfile.TemporaryDirectory() as tmp:
            result = refine(
                network,
                X[: config.n_train],
                y[: config.n_train],
                validation=(X[config.n_train :], y[config.n_train :]),
                input_bounds=domain,
                regularizer=REGULARIZERS["bwlp"](config.gap_method),
                lam=config.lam,
                loss_budget=config.loss_budget,
                evaluate=lambda x: float(f(x[None])[0]),
                decision_budget=config.decision_budget / 100 * function_range(config.function),
                milp_time_limit=config.budget_time_limit,
                rounds=config.budget_rounds,
                epochs_per_round=max(config.epochs // 2, 1),
                output_dir=tmp,
                progress=False,
                seed=config.seed,
            )
        network = result.network
        seconds = sum(row.get("train_seconds", 0.0) for row in result.history.rows)
        history, chosen_because = result.history, result.chosen_because
    else:
        history = chosen_because = None
    mse = float(np.mean(((network.forward(X_test)[:, 0] - f(X_test)) / span) ** 2))
    return {
        "config": config,
        "network": network,
        "train_seconds": seconds,
        "test_mse": mse,
        "history": history,
        "chosen_because": chosen_because,
    }


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
    parser.add_argument(
        "--gap-method",
        nargs="+",
        choices=["exact_lp", "dual_network"],
        default=["exact_lp"],
        help="LP-gap method(s) (LPGap's gap_method); with both, every LP-gap row is run with each",
    )
    parser.add_argument("--loss-budget", type=float, default=1.25, help="of the budget rows")
    parser.add_argument("--budget-rounds", type=int, default=6, help="of the budget rows")
    parser.add_argument(
        "--budget-lam", type=float, default=2.5e-4, help="starting lambda of the budget rows"
    )
    parser.add_argument(
        "--decision-budget",
        type=float,
        default=5.0,
        help="of the budget rows: largest worsening of the true value at the argmin, in %% of "
        "the function's range",
    )
    parser.add_argument(
        "--budget-time-limit", type=float, default=20.0, help="MILP limit per budget round, s"
    )
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    parser.add_argument(
        "--save-networks",
        type=Path,
        metavar="DIR",
        help="write every trained network to DIR as ONNX (float64, with the box), e.g. to "
        "time its MILP again with `nnrelax solve FILE --minimize --json`, and the history of "
        "each budget row as CSV",
    )
    args = parser.parse_args()
    if args.full:
        args.n_train, args.n_val, args.epochs, args.time_limit = 70000, 30000, 200, 1800.0
    configs = [
        Config(
            fn, depth, reg, lam, args.seed, args.n_train, args.n_val, args.epochs,
            args.loss_budget, args.budget_rounds, method, args.decision_budget,
            args.budget_time_limit,
        )
        for fn in args.functions
        for depth in args.archs
        for reg in args.regularizers
        for lam in ([0.0] if reg == "none" else [args.budget_lam] if reg == "budget" else args.lams)
        for method in (args.gap_method if reg in USES_LP else args.gap_method[:1])
    ]  # fmt: skip
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=spawn) as pool:
        trained = list(pool.map(train, configs))
    rows, choices = [], []
    for item in trained:
        c = item["config"]
        domain = box(c.function)
        name = f"{c.function}_25x{c.depth}_{c.regularizer}_{c.gap_method}_{c.lam:g}_s{c.seed}"
        if item["chosen_because"] is not None:
            choices.append(f"{name}: {item['chosen_because']}")
        if args.save_networks:
            args.save_networks.mkdir(parents=True, exist_ok=True)
            write_onnx(
                item["network"].with_input_bounds(*as_input_box(domain, 2)),
                args.save_networks / f"{name}.onnx",
                overwrite=True,
                dtype="float64",
            )
            if item["history"] is not None:
                item["history"].save(args.save_networks / f"{name}.history.csv")
        stats, argmin = milp_argmin(item["network"], domain, "min", time_limit=args.time_limit)
        measured = difficulty(item["network"], domain, "min", milp=stats)
        true_value = float(FUNCTIONS[c.function](argmin[None])[0])
        span = function_range(c.function)
        rows.append(
            {
                "function": c.function,
                "arch": f"2-25x{c.depth}-1",
                "regularizer": c.regularizer,
                "gap_method": c.gap_method if c.regularizer in USES_LP else "",
                "lam": c.lam,
                "unstable": measured.unstable,
                "lp_gap": measured.lp_gap,
                "nodes": measured.milp.nodes,
                "milp_seconds": measured.milp.seconds,
                "milp_optimal": measured.milp.optimal,
                "test_mse": item["test_mse"],
                "train_seconds": item["train_seconds"],
                "milp_objective": stats.objective,
                "true_at_argmin": true_value,
                "regret_pct": 100 * (true_value - GLOBAL_MINIMUM[c.function]) / span,
            }
        )
    print_table(rows)
    for line in choices:
        print(line)
    if args.csv:
        save_rows(rows, args.csv)


def print_table(rows: list[dict]) -> None:
    """The paper's columns, with ratios to the unregularized network of the same setting."""
    base = {(r["function"], r["arch"]): r for r in rows if r["regularizer"] == "none"}
    header = (
        f"{'function':<11}{'arch':<11}{'reg':<7}{'gap_method':<13}{'lambda':>8}{'unstable':>9}"
        f"{'LP gap':>10}"
        f"{'nodes':>9}{'MILP s':>10}{'MILP speed-up':>14}{'MSE ratio':>10}{'train ratio':>12}"
        f"{'MILP opt':>10}{'f(argmin)':>10}{'regret %':>9}"
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
            f"{r['function']:<11}{r['arch']:<11}{r['regularizer']:<7}{r['gap_method']:<13}"
            f"{r['lam']:>8.2g}{r['unstable']:>9}"
            f"{r['lp_gap']:>10.3g}{r['nodes']:>9}{mark + format(r['milp_seconds'], '.2f'):>10}"
            f"{ref_mark + format(speedup, '.1f') + 'x':>14}{mse_ratio:>10.2f}{train_ratio:>12.2f}"
            f"{r['milp_objective']:>10.4g}{r['true_at_argmin']:>10.4g}{r['regret_pct']:>9.2f}"
        )


if __name__ == "__main__":
    main()
