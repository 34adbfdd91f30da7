"""A surrogate in every period of a plan: unregularized against refined on the plan itself.

The study of ``examples/multi_period.py`` (its process, plan and training, imported from it)
at several plan lengths and seeds.  Per seed, one unregularized 2-32-32-1 surrogate (300
epochs on 3,000 noisy measurements); per plan length T, a surrogate refined from the same
start with ``refine(..., model=plan.model, evaluate=plan.true_cost, loss_budget=1.25,
loss_reference="unregularized")``, six rounds of 50 epochs, each round's plan MILP limited
to ``--round-limit`` seconds.  Each surrogate's plan is then solved with ``--time-limit``
and judged on the true process against the best plan found by dynamic programming over a
grid of loads (``vs best``).  A table row per run as it finishes, then the medians over the
seeds per plan length and surrogate.

    python benchmarks/multi_period.py [--periods 10 25 50] [--seeds 0 1 2]
                                      [--time-limit 600] [--round-limit 60]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path


def load_example():
    """``examples/multi_period.py`` as a module: the study's process, plan and training."""
    path = Path(__file__).parent.parent / "examples" / "multi_period.py"
    spec = importlib.util.spec_from_file_location("multi_period", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


EXAMPLE = load_example()
ROUNDS, EPOCHS = 6, 50
COLUMNS = ("build s", "binaries", "MILP s", "nodes", "optimal", "gap", "true cost")


def refined(plan, data, validation, seed: int, round_limit: float):
    """The surrogate refined on ``plan``'s model, and the refinement's seconds."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = EXAMPLE.refine_on_plan(
            plan, data, validation, seed, rounds=ROUNDS, epochs=EPOCHS,
            round_limit=round_limit, output_dir=Path(tmp) / "rounds",
        )  # fmt: skip
    return result.network, time.perf_counter() - began


def line(periods: int, seed, name: str, row: dict, best: float, extra: str = "") -> str:
    cells = "".join(EXAMPLE.cell(row[k]) for k in COLUMNS)
    versus = 100 * (row["true cost"] / best - 1)
    return f"{periods:>7} {seed!s:>5} {name:<14}{cells}{versus:>8.2f}%{extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--periods", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--round-limit", type=float, default=60.0)
    args = parser.parse_args()
    plans = {t: EXAMPLE.Plan.of(t) for t in args.periods}
    best = {t: plan.best() for t, plan in plans.items()}
    print(f"{'periods':>7} {'seed':>5} {'surrogate':<14}" + "".join(f"{k:>11}" for k in COLUMNS)
          + f"{'vs best':>9}  (best plans: "
          + ", ".join(f"T={t} {b:.4f}" for t, b in best.items()) + ")", flush=True)  # fmt: skip
    results: dict[tuple[int, str], list[dict]] = {}
    for seed in args.seeds:
        data = EXAMPLE.measurements(3000, seed)
        validation = EXAMPLE.measurements(1000, seed + 1000)
        network = EXAMPLE.train_unregularized(data, validation, seed, ROUNDS * EPOCHS)
        for periods, plan in plans.items():
            row = EXAMPLE.solve_plan(plan, network, args.time_limit)
            results.setdefault((periods, "unregularized"), []).append(row)
            print(line(periods, seed, "unregularized", row, best[periods]), flush=True)
            better, seconds = refined(plan, data, validation, seed, args.round_limit)
            row = EXAMPLE.solve_plan(plan, better, args.time_limit)
            results.setdefault((periods, "refined"), []).append(row)
            extra = f"  (refinement {seconds:.0f} s)"
            print(line(periods, seed, "refined", row, best[periods], extra), flush=True)
    print("\nmedians over the seeds")
    for (periods, name), rows in results.items():
        median = {k: statistics.median(float(r[k]) for r in rows) for k in COLUMNS}
        median["optimal"] = f"{sum(bool(r['optimal']) for r in rows)}/{len(rows)}"
        print(line(periods, "all", name, median, best[periods]), flush=True)


if __name__ == "__main__":
    main()
