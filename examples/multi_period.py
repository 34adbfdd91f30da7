"""One surrogate in every period of a plan, refined on the plan itself.

    python examples/multi_period.py                 # 10 periods; about 15 minutes on 2 cores
    python examples/multi_period.py --periods 25 --time-limit 600
    python examples/multi_period.py --quick         # tiny sizes (what the test suite runs)

1. The process: a boiler whose fuel use per period depends on its load (0.2 to 1 of its
   capacity) and its setpoint.  Fuel per unit of output is lowest near two sweet spots of
   load (two burner stages), and at each load the best setpoint is known in closed form.
   A 2-32-32-1 network learns it from 3,000 measurements with noise (sd 0.02, about 2% of
   the fuel use), trained for 300 epochs without a regularizer.
2. The plan: T periods at varying fuel prices, a production target over the plan and ramp
   limits between periods.  One block holds a copy of the network per period:
   ``NNBlock(network, inputs=m.x)`` with ``m.x[t, i]`` the load and setpoint of period t.
3. The plan over the unregularized surrogate is solved with a time limit.  The refined
   surrogate is trained from the same start with BW+LP, ``refine(..., model=plan.model,
   evaluate=plan.true_cost, loss_budget=1.25, loss_reference="unregularized")``: lambda grows
   while the held-out loss stays within 1.25x the unregularized training's, and every round
   is measured on the plan (MILP time, nodes, gap, the true cost of its decision), not on one
   copy.  The plan over the refined surrogate is solved again.
4. Both plans are judged on the true process, against the best plan of the true process
   found by dynamic programming over a grid of loads.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyomo.environ as pyo

from pyomo_nnrelax import Network, NNBlock, Trainer, refine, solve_model, write_onnx
from pyomo_nnrelax.training import BoundWidth, LPGap

BOX = np.array([(0.2, 1.0), (0.0, 1.0)])  # (load, setpoint)


def efficiency(load) -> np.ndarray:
    """At the best setpoint: a base of 0.55 with two sweet spots, at loads 0.45 and 0.9."""
    load = np.asarray(load, dtype=np.float64)
    return (
        0.55
        + 0.12 * np.exp(-(((load - 0.45) / 0.12) ** 2))
        + 0.15 * np.exp(-(((load - 0.9) / 0.1) ** 2))
    )


def best_setpoint(load) -> np.ndarray:
    return 0.25 + 0.5 * np.asarray(load, dtype=np.float64) ** 2


def fuel(X) -> np.ndarray:
    """The simulation the surrogate replaces: fuel per period at rows (load, setpoint)."""
    load, setpoint = np.atleast_2d(np.asarray(X, dtype=np.float64)).T
    return load / efficiency(load) + 0.6 * load * (setpoint - best_setpoint(load)) ** 2


@dataclass(frozen=True)
class Plan:
    """``min sum_t price_t fuel_t`` with ``sum_t load_t >= demand`` and ramp limits."""

    prices: np.ndarray
    demand: float
    ramp: float = 0.25

    @classmethod
    def of(cls, periods: int) -> Plan:
        prices = 1.0 + 0.5 * np.sin(2.0 * np.pi * np.arange(periods) / 12.0)
        return cls(prices, 0.65 * periods)

    def model(self, network: Network) -> pyo.ConcreteModel:
        """The plan over ``network``: one batched block, a copy per period."""
        m = pyo.ConcreteModel()
        m.T = pyo.RangeSet(0, len(self.prices) - 1)
        m.x = pyo.Var(m.T, [0, 1], bounds=lambda _, t, i: tuple(BOX[i]))
        m.nn = NNBlock(network, inputs=m.x)
        m.cost = pyo.Objective(expr=sum(p * m.nn.outputs[t, 0] for t, p in enumerate(self.prices)))
        m.demand = pyo.Constraint(expr=sum(m.x[t, 0] for t in m.T) >= self.demand)
        later = list(m.T)[1:]
        m.up = pyo.Constraint(later, rule=lambda m, t: m.x[t, 0] - m.x[t - 1, 0] <= self.ramp)
        m.down = pyo.Constraint(later, rule=lambda m, t: m.x[t - 1, 0] - m.x[t, 0] <= self.ramp)
        return m

    def true_cost(self, m: pyo.ConcreteModel) -> float:
        """What the plan a solved model holds costs with the true process."""
        plan = np.array([[pyo.value(m.x[t, i]) for i in (0, 1)] for t in m.T])
        return float(self.prices @ fuel(plan))

    def best(self, step: float = 0.01) -> float:
        """The best plan of the true process with loads on a grid (each period at its best
        setpoint), by dynamic programming over (load, production so far)."""
        loads = BOX[0, 0] + step * np.arange(round((BOX[0, 1] - BOX[0, 0]) / step) + 1)
        units = np.rint(loads / step).astype(int)
        need, window = math.ceil(self.demand / step - 1e-9), math.floor(self.ramp / step + 1e-9)
        per_period = loads / efficiency(loads)
        cost = np.full((loads.size, need + 1), np.inf)
        cost[np.arange(loads.size), np.minimum(units, need)] = self.prices[0] * per_period
        produced = np.arange(need + 1)
        for price in self.prices[1:]:
            new = np.full_like(cost, np.inf)
            for j, u in enumerate(units):
                best = cost[max(0, j - window) : j + window + 1].min(axis=0)
                origin = np.maximum(produced - u, 0)
                arrive = np.where(produced >= u, best[origin], np.inf)
                arrive[need] = best[need - u :].min()  # production beyond the target
                new[j] = arrive + price * per_period[j]
            cost = new
        return float(cost[:, need].min())


NOISE = 0.02
"""Standard deviation of the measurement noise on the fuel data."""


def measurements(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy measurements of ``fuel`` at uniform points of the box."""
    rng = np.random.default_rng(seed)
    X = BOX[:, 0] + (BOX[:, 1] - BOX[:, 0]) * rng.random((n, 2))
    return X, fuel(X) + NOISE * rng.standard_normal(n)


def trainer_options(seed: int) -> dict:
    """How both surrogates are trained (the same box, learning rate and seed)."""
    return {"input_bounds": BOX, "lr": 3e-3, "seed": seed}


def start(seed: int) -> Network:
    return Network.mlp([2, 32, 32, 1], seed=seed)


def train_unregularized(data, validation, seed: int, epochs: int) -> Network:
    """The surrogate without a regularizer, from the start the refinement starts from."""
    trainer = Trainer(start(seed), *data, validation=validation, epochs=epochs,
                      **trainer_options(seed))  # fmt: skip
    return trainer.fit().network


def refine_on_plan(
    plan: Plan, data, validation, seed: int, *, rounds: int, epochs: int,
    round_limit: float, output_dir: Path, progress: bool = False,
):  # fmt: skip
    """BW+LP from the same start as the unregularized surrogate, every round measured on
    ``plan``'s model (its MILP limited to ``round_limit`` seconds) and its decision costed on
    the true process, lambda growing from 1e-4 while the held-out loss stays within 1.25x
    the unregularized training's."""
    return refine(
        start(seed), *data, validation=validation, model=plan.model,
        evaluate=plan.true_cost, loss_budget=1.25, loss_reference="unregularized",
        regularizer=BoundWidth() + LPGap(), lam=1e-4, rounds=rounds,
        epochs_per_round=epochs, milp_time_limit=round_limit, output_dir=output_dir,
        overwrite=True, progress=progress, **trainer_options(seed),
    )  # fmt: skip


def solve_plan(plan: Plan, network: Network, time_limit: float, verbose: bool = False) -> dict:
    """Build and solve the plan over ``network``; what it cost to build and solve, and what
    its decision costs with the true process (``verbose``: print every copy's check against
    onnxruntime at the plan)."""
    began = time.perf_counter()
    m = plan.model(network)
    built = time.perf_counter() - began
    stats = solve_model(m, time_limit, start=m.nn)
    if verbose:
        print(f"check against onnxruntime: max |difference| = {m.nn.check().max_abs_error:.2e}")
    return {
        "build s": built,
        "binaries": sum(1 for v in m.component_data_objects(pyo.Var) if v.is_binary()),
        "MILP s": stats.seconds,
        "nodes": stats.nodes,
        "optimal": stats.optimal,
        "gap": stats.gap,
        "true cost": plan.true_cost(m),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--periods", type=int, default=10)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per plan MILP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: about a minute")
    parser.add_argument("--out", type=Path, help="keep the ONNX files here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        run(args, out)


def run(args: argparse.Namespace, out: Path) -> None:
    """Train, refine on the plan, solve both plans and print the table; the surrogates go
    to ``out`` (``unregularized.onnx``, ``refined.onnx``)."""
    periods, limit = (3, 10.0) if args.quick else (args.periods, args.time_limit)
    rounds, epochs = (2, 10) if args.quick else (6, 50)
    plan = Plan.of(periods)
    data = measurements(600 if args.quick else 3000, args.seed)
    validation = measurements(200 if args.quick else 1000, args.seed + 1000)
    unregularized = train_unregularized(data, validation, args.seed, rounds * epochs)
    write_onnx(unregularized, out / "unregularized.onnx", overwrite=True, dtype="float64")
    rows = {"unregularized": solve_plan(plan, unregularized, limit, verbose=True)}
    result = refine_on_plan(
        plan, data, validation, args.seed, rounds=rounds, epochs=epochs,
        round_limit=limit / 2, output_dir=out / "refinement", progress=not args.quick,
    )  # fmt: skip
    print(f"refinement: {result.chosen_because}")
    write_onnx(result.network, out / "refined.onnx", overwrite=True, dtype="float64")
    rows["refined"] = solve_plan(plan, result.network, limit, verbose=True)
    best = plan.best(0.05 if args.quick else 0.01)
    print(f"{periods} periods; the best plan of the true process costs {best:.4f}")
    print(f"{'surrogate':<14}" + "".join(f"{k:>11}" for k in rows["refined"]) + f"{'vs best':>9}")
    for name, row in rows.items():
        cells = "".join(cell(v) for v in row.values())
        print(f"{name:<14}{cells}{100 * (row['true cost'] / best - 1):>8.2f}%")


def cell(value) -> str:
    """A table cell: 4 significant digits for a float."""
    return f"{value:>11.4g}" if isinstance(value, float) else f"{value!s:>11}"


if __name__ == "__main__":
    main()
