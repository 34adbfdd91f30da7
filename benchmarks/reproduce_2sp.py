"""Reproduce the paper's second case study: quantile networks in a two-stage stochastic CFLP.

Random first-stage decisions of a capacitated facility location instance are paired with one
random demand scenario each and the recourse MILP's cost (HiGHS, cached on disk); quantile
networks (K = 50 levels, pinball loss) are trained per regularizer, embedded with
``NNBlock(net, inputs=m.y, outputs=m.q)`` in the first-stage MILP

    min_y  c_f'y + mean_k q_k(y) + 0.1 * mean_{tau_k >= 0.9} q_k(y),   y binary

and that MILP is solved on HiGHS one at a time.  Each decision is then judged by its true
expected cost ``c_f'y + E[Q(y, d)]``, the recourse solved on fresh scenarios (the same ones for
every decision; each decision's estimate is kept in the cache folder, as decisions recur).

    python benchmarks/reproduce_2sp.py                     # 20 x 20, 8,000 samples, ~75 min
    python benchmarks/reproduce_2sp.py --archs 5 --regularizers none bw bwlp --lams 1e-3 1e-2 \
        --seeds 0 1 --time-limit 300                       # the targets' rows
    python benchmarks/reproduce_2sp.py --full --workers -1 # CFLP 50_50 and 75_75, paper sizes
    python benchmarks/reproduce_2sp.py --full --scheduler tcp://host:8786   # on dask

Columns: test pinball loss (cost units) and its ratio to no regularizer, unstable neurons
(interval bounds over [0, 1]^n_f), LP gap of the full 2SP MILP (MILP optimum minus the
optimum of its LP relaxation; a ">" on the time means the MILP stopped at its limit and the
gap is measured to its bound), B&B nodes, MILP seconds and speed-up against no regularizer,
facilities opened, the decision's true expected cost with its standard error, and how far
that is above the best decision any network found and above the unregularized network's.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyomo_nnrelax import Network
from pyomo_nnrelax.data import save_rows
from pyomo_nnrelax.experiments.cflp import (
    CFLPInstance,
    ExpectedCost,
    evaluation_scenarios,
    expected_cost,
    make_instance,
)
from pyomo_nnrelax.experiments.scenarios import generate_samples
from pyomo_nnrelax.experiments.twostage import (
    objective_weights,
    quantile_levels,
    solve_first_stage,
)
from pyomo_nnrelax.files import atomic_write_text
from pyomo_nnrelax.parallel import gather, resolve_executor
from pyomo_nnrelax.training import PinballLoss, Trainer, parse_regularizer

REGULARIZERS = {"none": "none", "l1": "l1", "l2": "l2", "bw": "bw", "sn": "sn", "lp": "lp",
                "bwlp": "bw+lp"}  # fmt: skip
"""Row names and the regularizer spec of each (:func:`parse_regularizer`)."""


@dataclass(frozen=True)
class Config:
    """One network of the grid."""

    size: tuple[int, int]
    depth: int
    regularizer: str
    lam: float
    seed: int
    epochs: int
    gap_method: str = "exact_lp"
    lp_weights: str = "random"


def train(config: Config, data: dict[str, np.ndarray]) -> dict:
    """Train one QNN; returns it with its test pinball loss and training time."""
    n_f = data["X_train"].shape[1]
    levels = quantile_levels(50)
    trainer = Trainer(
        Network.mlp([n_f] + [25] * config.depth + [levels.size], seed=config.seed),
        data["X_train"],
        data["y_train"],
        validation=(data["X_val"], data["y_val"]),
        input_bounds=[(0.0, 1.0)] * n_f,
        loss="pinball",
        quantiles=levels,
        regularizer=parse_regularizer(
            REGULARIZERS[config.regularizer],
            "min",
            config.gap_method,
            objective_weights(levels) if config.lp_weights == "objective" else None,
        ),
        lam=config.lam,
        epochs=config.epochs,  # batches of 64, Adam at lr 1e-3: the trainer's defaults
        seed=config.seed,
    )
    started = time.perf_counter()
    network = trainer.fit().network
    seconds = time.perf_counter() - started
    pinball = PinballLoss(levels)(network.forward(data["X_test"]), data["y_test"][:, None])[0]
    return {"config": config, "network": network, "train_seconds": seconds, "pinball": pinball}


def split(samples, n_val: float = 0.125, n_test: float = 0.125) -> dict[str, np.ndarray]:
    """Train / validation / test parts of the samples (in sample order, which is random)."""
    n = len(samples)
    a, b = round(n * (1 - n_val - n_test)), round(n * (1 - n_test))
    X, y = samples.X, samples.costs
    return {"X_train": X[:a], "y_train": y[:a], "X_val": X[a:b], "y_val": y[a:b],
            "X_test": X[b:], "y_test": y[b:]}  # fmt: skip


def run_instance(args, size: tuple[int, int], executor: Executor | None) -> list[dict]:
    """Data, training, MILPs and evaluation for one instance size; the table's rows."""
    instance = make_instance(*size, seed=args.instance_seed)
    started = time.perf_counter()
    samples = generate_samples(
        instance, args.samples, cache_dir=args.cache_dir, time_limit=args.recourse_time_limit,
        executor=executor, progress=not args.quiet,
    )  # fmt: skip
    print(
        f"CFLP {size[0]}_{size[1]}: {len(samples)} samples ({samples.solved} solved now, "
        f"{samples.limit_hits} recourse MILPs stopped at {args.recourse_time_limit} s), "
        f"mean recourse solve {samples.seconds.mean():.3f} s; "
        f"data ready in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    data = split(samples)
    configs = [
        Config(size, depth, reg, lam, seed, args.epochs, args.gap_method, args.lp_weights)
        for seed in args.seeds
        for depth in args.archs
        for reg in args.regularizers
        for lam in ([0.0] if reg == "none" else args.lams)
    ]
    started = time.perf_counter()
    if executor is None:
        trained = [train(c, data) for c in configs]
    else:
        trained = gather([executor.submit(train, c, data) for c in configs])
    print(f"trained {len(trained)} networks in {time.perf_counter() - started:.0f} s", flush=True)
    return measure(args, instance, trained)


def measure(args, instance: CFLPInstance, trained: list[dict]) -> list[dict]:
    """Solve every network's 2SP MILP (one at a time) and judge its decision."""
    levels = quantile_levels(50)
    scenarios = evaluation_scenarios(instance, args.eval_scenarios)
    name = f"judged-{instance.fingerprint()}-{args.eval_scenarios}-{args.recourse_time_limit}"
    store = args.cache_dir / f"{name}.json"
    judged = json.loads(store.read_text()) if store.exists() else {}
    rows = []
    for item in trained:
        c = item["config"]
        fs = solve_first_stage(instance.fixed_costs, item["network"], levels,
                               time_limit=args.time_limit)  # fmt: skip
        key = "".join(str(int(v)) for v in fs.y)
        if key not in judged:  # decisions recur across networks and runs: judged once
            true = expected_cost(instance, fs.y, scenarios, args.recourse_time_limit)
            judged[key] = [true.mean, true.stderr, true.scenarios, true.limit_hits]
            atomic_write_text(store, json.dumps(judged, indent=1))
        true = ExpectedCost(*judged[key])
        rows.append({
            "instance": f"{c.size[0]}_{c.size[1]}",
            "arch": f"{instance.n_facilities}-25x{c.depth}-50",
            "regularizer": c.regularizer, "lam": c.lam, "seed": c.seed, "pinball": item["pinball"],
            "unstable": fs.unstable, "lp_gap": fs.lp_gap, "nodes": fs.milp.nodes,
            "milp_seconds": fs.milp.seconds, "milp_optimal": fs.milp.optimal,
            "train_seconds": item["train_seconds"], "opened": int(fs.y.sum()),
            "decision": key, "predicted": fs.predicted,
            "true_cost": true.mean, "true_stderr": true.stderr, "eval_limit_hits": true.limit_hits,
            "check": fs.check,
        })  # fmt: skip
        print(f"  solved {rows[-1]['arch']} {c.regularizer} {c.lam:.0e} seed {c.seed}: "
              f"{fs.milp.seconds:.2f} s, E[cost] {true}", flush=True)  # fmt: skip
    return rows


def print_table(rows: list[dict]) -> None:
    """One block per instance and seed; ratios to no regularizer of the same architecture."""
    best = {}
    for r in rows:
        best[r["instance"]] = min(best.get(r["instance"], math.inf), r["true_cost"])
    base = {(r["instance"], r["arch"], r["seed"]): r for r in rows if r["regularizer"] == "none"}
    header = (
        f"{'arch':<11}{'reg':<6}{'lambda':>7}{'pinball':>9}{'ratio':>6}{'unstable':>9}"
        f"{'LP gap':>10}{'nodes':>8}{'MILP s':>9}{'speed-up':>10}{'open':>5}"
        f"{'E[cost] +- se':>18}{'vs best':>8}{'vs none':>8}"
    )
    for instance, seed in dict.fromkeys((r["instance"], r["seed"]) for r in rows):
        print(f"\nCFLP {instance}, seed {seed}\n{header}\n{'-' * len(header)}")
        for r in rows:
            if (r["instance"], r["seed"]) != (instance, seed):
                continue
            ref = base.get((instance, r["arch"], seed))
            mark = "" if r["milp_optimal"] else ">"
            speed = ratio = vs_none = math.nan
            ref_mark = ""
            if ref is not None:
                speed = ref["milp_seconds"] / r["milp_seconds"]
                ratio = r["pinball"] / ref["pinball"]
                vs_none = 100 * (r["true_cost"] / ref["true_cost"] - 1)
                ref_mark = "" if ref["milp_optimal"] else ">"
            cost = f"{r['true_cost']:.1f} +- {r['true_stderr']:.1f}"
            print(
                f"{r['arch']:<11}{r['regularizer']:<6}{r['lam']:>7.0e}{r['pinball']:>9.2f}"
                f"{ratio:>6.2f}{r['unstable']:>9}{r['lp_gap']:>10.3g}{r['nodes']:>8}"
                f"{mark + format(r['milp_seconds'], '.2f'):>9}"
                f"{ref_mark + format(speed, '.1f') + 'x':>10}{r['opened']:>5}{cost:>18}"
                f"{100 * (r['true_cost'] / best[instance] - 1):>7.2f}%{vs_none:>7.2f}%"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facilities", type=int, default=20)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--samples", type=int, default=8000, help="(decision, scenario) pairs")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--archs", nargs="+", type=int, default=[2, 3, 5], help="hidden layers")
    parser.add_argument("--regularizers", nargs="+", default=list(REGULARIZERS),
                        choices=list(REGULARIZERS))  # fmt: skip
    parser.add_argument("--lams", nargs="+", type=float, default=[1e-4, 1e-3, 1e-2])
    parser.add_argument(
        "--gap-method",
        choices=["exact_lp", "dual_network"],
        default="exact_lp",
        help="of the LP-gap rows (LPGap's gap_method)",
    )
    parser.add_argument(
        "--lp-weights",
        choices=["objective", "random"],
        default="random",
        help="the LP gap of the 2SP objective's weights over the quantiles (LPGap(weights=...)), "
        "or of a random objective per step (the paper's multi-output rule)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="network seeds")
    parser.add_argument("--instance-seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=120.0, help="2SP MILP limit, s")
    parser.add_argument("--recourse-time-limit", type=float, default=60.0, help="per recourse")
    parser.add_argument("--eval-scenarios", type=int, default=200, help="fresh scenarios")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache") / "cflp")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for data and training (-1: one per CPU)")  # fmt: skip
    parser.add_argument("--scheduler", help="a dask scheduler address instead of --workers")
    parser.add_argument(
        "--full",
        action="store_true",
        help="CFLP 50_50 and 75_75, 20,000 samples, 200 epochs, 1800 s (2SP) and 600 s limits",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV (or JSON) file")
    args = parser.parse_args()
    sizes = [(args.facilities, args.customers)]
    if args.full:
        sizes, args.samples, args.epochs = [(50, 50), (75, 75)], 20000, 200
        args.time_limit, args.recourse_time_limit = 1800.0, 600.0
    client = None
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
    executor, release = resolve_executor(
        client.get_executor() if client is not None else None, args.workers
    )
    started = time.perf_counter()
    try:
        rows = [row for size in sizes for row in run_instance(args, size, executor)]
    finally:
        release()
        if client is not None:
            client.close()
    print_table(rows)
    checks = max(r["check"] for r in rows)
    print(f"\nMILP outputs against onnxruntime at every decision: max |difference| = {checks:.2e}")
    print(f"{time.perf_counter() - started:.0f} s in all")
    if args.csv:
        save_rows(rows, args.csv)


if __name__ == "__main__":
    main()
