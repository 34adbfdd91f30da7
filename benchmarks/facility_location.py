"""Two-stage facility location with a quantile network: open facilities now, serve later.

    python benchmarks/facility_location.py            # 20 x 20, 8,000 samples, ~15 min on 2 cores
    python benchmarks/facility_location.py --quick    # seconds (what the test suite runs)

A company decides which of ``n_f`` facilities to open (binary ``y``, fixed costs ``c_f``)
before it knows its customers' demands.  Once they are known, each customer is assigned to one
open facility within its capacity, or left unserved at a penalty: the second-stage cost
``Q(y, d)`` is a MILP of its own.  The expected cost ``c_f'y + E[Q(y, d)]`` has no formula.

We sample random decisions, draw one demand scenario each and solve its recourse MILP
(``generate_samples``, cached on disk), and train a network that predicts 50 quantiles of
``Q`` from ``y`` with the pinball loss: once without a regularizer and once with bound-width
(BW) regularization, which keeps the embedded network easy for branch and bound.  Each network
is embedded with ``NNBlock(net, inputs=m.y, outputs=m.q)``: the model's own binaries are the
network's inputs (no copies, no linking rows) and the box [0, 1] comes from their bounds.  The
first-stage MILP minimises ``c_f'y + mean(q) + 0.1 * mean(q[tau >= 0.9])``.  Finally each
decision is judged by its true expected cost, the recourse solved on fresh scenarios.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyomo.environ as pyo

from pyomo_nnrelax import Network, NNBlock
from pyomo_nnrelax.experiments.cflp import evaluation_scenarios, expected_cost, make_instance
from pyomo_nnrelax.experiments.scenarios import generate_samples
from pyomo_nnrelax.solve import solve_model
from pyomo_nnrelax.training import BoundWidth, PinballLoss, Trainer

LEVELS = np.linspace(0.01, 0.99, 50)
"""The quantile levels tau_k the network predicts."""
RISK, ALPHA = 0.1, 0.9


def train(sizes, data, validation, epochs: int, lam: float) -> Network:
    """A quantile network (pinball loss), with BoundWidth at ``lam`` when ``lam`` > 0."""
    trainer = Trainer(
        Network.mlp(sizes, seed=0),
        *data,
        validation=validation,
        input_bounds=[(0.0, 1.0)] * sizes[0],
        loss="pinball",
        quantiles=LEVELS,  # the one cost column is shared by the 50 quantile outputs
        regularizer=BoundWidth() if lam > 0 else None,
        lam=lam,
        epochs=epochs,
        seed=0,
    )
    return trainer.fit().network


def first_stage(fixed_costs: np.ndarray, net: Network, time_limit: float):
    """The first-stage MILP over the network; returns the decision, its solve and the check."""
    m = pyo.ConcreteModel()
    m.y = pyo.Var(range(len(fixed_costs)), within=pyo.Binary)  # open facility i?
    m.q = pyo.Var(range(len(LEVELS)))  # predicted quantiles of the second-stage cost
    m.nn = NNBlock(net, inputs=m.y, outputs=m.q)
    tail = [k for k in m.q if LEVELS[k] >= ALPHA]
    m.obj = pyo.Objective(
        expr=sum(float(fixed_costs[i]) * m.y[i] for i in m.y)
        + sum(m.q.values()) / len(m.q)
        + RISK * sum(m.q[k] for k in tail) / len(tail)
    )
    stats = solve_model(m, time_limit=time_limit, load=True, start=m.nn)
    y = np.round([pyo.value(m.y[i]) for i in m.y]) + 0.0
    return y, stats, m.nn.check().max_abs_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--out", type=Path, help="keep the data cache here (default: temp dir)")
    args = parser.parse_args()
    if args.quick:
        n_f, n_c, n, hidden, epochs, scenarios, limit = 6, 6, 400, [12, 12], 60, 40, 30.0
    else:
        n_f, n_c, n, hidden, epochs, scenarios, limit = 20, 20, 8000, [25] * 5, 100, 200, 120.0
    instance = make_instance(n_f, n_c, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        samples = generate_samples(instance, n, cache_dir=args.out or tmp)
    print(
        f"CFLP with {n_f} facilities and {n_c} customers: {len(samples)} sampled decisions, "
        f"one demand scenario each ({samples.limit_hits} recourse MILPs hit their limit)"
    )
    a, b = int(0.8 * n), int(0.9 * n)
    X, y = samples.X, samples.costs
    sizes = [n_f, *hidden, len(LEVELS)]
    fresh = evaluation_scenarios(instance, scenarios)
    rows = []
    for name, lam in (("plain", 0.0), ("BW 1e-2", 1e-2)):
        net = train(sizes, (X[:a], y[:a]), (X[a:b], y[a:b]), epochs, lam)
        pinball = PinballLoss(LEVELS)(net.forward(X[b:]), y[b:, None])[0]
        decision, stats, check = first_stage(instance.fixed_costs, net, limit)
        rows.append(
            (name, pinball, decision, stats, check, expected_cost(instance, decision, fresh))
        )

    print(f"\n{'network':<9}{'pinball':>9}{'MILP s':>9}{'nodes':>7}  {'open':<{n_f}}  E[cost]")
    for name, pinball, decision, stats, _, true in rows:
        time_text = ("" if stats.optimal else ">") + f"{stats.seconds:.2f}"
        opened = "".join(str(int(v)) for v in decision)
        print(f"{name:<9}{pinball:>9.2f}{time_text:>9}{stats.nodes:>7}  {opened}  {true}")
    print(
        f"\nE[cost] = c_f'y + mean of Q(y, d) over {scenarios} fresh scenarios (+- standard error)"
    )
    print(f"check against onnxruntime at every decision: max |difference| = "
          f"{max(r[4] for r in rows):.2e}")  # fmt: skip
    plain, regularized = rows[0][5], rows[1][5]
    print(
        f"the BW network's decision costs {100 * (regularized.mean / plain.mean - 1):+.2f}% "
        "against the plain network's"
    )


if __name__ == "__main__":
    main()
