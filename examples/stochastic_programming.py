"""Two-stage stochastic programming with a quantile network (after Alcantara, Ruiz and Tsay).

    python examples/stochastic_programming.py            # a few minutes on 2 cores
    python examples/stochastic_programming.py --quick    # seconds (what the test suite runs)

A producer chooses, before demand is known, how much of three products to make:
``x`` in [0, 10]^3 at unit costs ``c``.  Then the correlated, log-normal demand ``xi`` is
revealed and the second stage pays a shortage penalty per unit of unmet demand and a holding
cost per unit left over:

    Q(x, xi) = sum_i  shortage_i max(xi_i - x_i, 0) + holding_i max(x_i - xi_i, 0)

Q is only available by simulation.  We sample decisions ``x``, simulate one demand each, and
train a 3-20-20-20-3 network with the pinball loss to predict the 0.1, 0.5 and 0.9 quantiles
of Q given x: once without a regularizer and once with ``BoundWidth`` at lambda 1e-2 (the
setting that made these MILPs fast in the paper).  Each network is embedded with ``NNBlock``
and the first-stage MILP

    min  c'x + q50(x) + risk * (q90(x) - q10(x))

(the median second-stage cost plus a penalty on its spread) is solved on HiGHS.  At each
decision, the predicted quantiles are checked against a Monte Carlo estimate from fresh
demand samples, and the Monte Carlo objective is compared with the best decision of a grid.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyomo.environ as pyo

from pyomo_nnrelax import InputBox, Network, NNBlock, Trainer, write_onnx
from pyomo_nnrelax.training import BoundWidth, PinballLoss

QUANTILES = (0.1, 0.5, 0.9)
RISK = 0.25
COST = np.array([1.0, 1.2, 0.8])
SHORTAGE = np.array([4.0, 5.0, 3.0])
HOLDING = np.array([0.5, 0.5, 0.5])
DEMAND_MEAN = np.array([5.0, 4.0, 6.0])
DEMAND_CV = 0.35
DEMAND_CORRELATION = 0.5
BOX = np.array([[0.0, 10.0]] * 3)


def sample_demand(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` correlated log-normal demand vectors with mean DEMAND_MEAN (n, 3)."""
    sigma2 = np.log(1.0 + DEMAND_CV**2)
    corr = np.full((3, 3), DEMAND_CORRELATION) + (1.0 - DEMAND_CORRELATION) * np.eye(3)
    normal = rng.multivariate_normal(np.zeros(3), sigma2 * corr, size=n)
    return DEMAND_MEAN * np.exp(normal - sigma2 / 2.0)


def recourse(x: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """Second-stage cost Q(x, xi) for matching rows of ``x`` and ``xi`` (broadcasting)."""
    return (SHORTAGE * np.maximum(xi - x, 0.0) + HOLDING * np.maximum(x - xi, 0.0)).sum(axis=-1)


def risk_objective(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``c'x + q50 + RISK (q90 - q10)`` for decisions (n, 3) and quantiles (n, 3)."""
    return x @ COST + q[:, 1] + RISK * (q[:, 2] - q[:, 0])


def monte_carlo_quantiles(X: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """Empirical QUANTILES of Q(x, xi) over the demand samples ``xi``, per decision (n, 3)."""
    costs = recourse(X[:, None, :], xi[None, :, :])
    return np.quantile(costs, QUANTILES, axis=1).T


def grid_reference(points: int, xi: np.ndarray) -> tuple[np.ndarray, float]:
    """The best decision on a ``points``^3 grid under the Monte Carlo objective."""
    axis = np.linspace(BOX[0, 0], BOX[0, 1], points)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    values = np.concatenate(
        [
            risk_objective(chunk, monte_carlo_quantiles(chunk, xi))
            for chunk in np.array_split(grid, max(1, len(grid) // 200))
        ]
    )
    best = int(np.argmin(values))
    return grid[best], float(values[best])


@dataclass(frozen=True)
class Decision:
    """The first-stage MILP solved over one quantile network."""

    x: np.ndarray
    predicted: np.ndarray
    seconds: float
    binaries: int
    optimal: bool
    check: float  # max |network outputs - onnxruntime| at x


def first_stage(path: Path, time_limit: float) -> Decision:
    """Embed the quantile network and solve ``min c'x + q50 + RISK (q90 - q10)`` on HiGHS."""
    m = pyo.ConcreteModel()
    m.nn = NNBlock(str(path), input_bounds=BOX)
    x, q = m.nn.inputs, m.nn.outputs
    m.obj = pyo.Objective(
        expr=sum(float(c) * x[i] for i, c in enumerate(COST)) + q[1] + RISK * (q[2] - q[0]),
        sense=pyo.minimize,
    )
    start = time.perf_counter()
    result = pyo.SolverFactory("highs").solve(m, timelimit=time_limit, load_solutions=False)
    seconds = time.perf_counter() - start
    optimal = result.solver.termination_condition == pyo.TerminationCondition.optimal
    binaries = sum(row["unstable"] for row in m.nn.layer_stats())
    if len(result.solution) == 0:
        return Decision(np.full(3, np.nan), np.full(3, np.nan), seconds, binaries, False, np.nan)
    m.solutions.load_from(result)
    check = m.nn.check().max_abs_error
    return Decision(m.nn.input_values(), m.nn.output_values(), seconds, binaries, optimal, check)


def train(
    sizes: list[int], data: tuple[np.ndarray, np.ndarray], validation, epochs: int, lam: float
) -> Network:
    """A quantile network fitted with the pinball loss, with BoundWidth when ``lam`` > 0."""
    trainer = Trainer(
        Network.mlp(sizes, seed=0),
        *data,
        validation=validation,
        input_bounds=BOX,
        loss="pinball",
        quantiles=QUANTILES,
        regularizer=BoundWidth() if lam > 0 else None,
        lam=lam,
        epochs=epochs,
        lr=3e-3,
        seed=0,
    )
    return trainer.fit().network


def numbers(values: np.ndarray) -> str:
    """``values`` as fixed-width numbers, for the table."""
    return " ".join(f"{v:5.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--out", type=Path, help="keep the ONNX files here (default: a temp dir)")
    args = parser.parse_args()
    n, epochs, sizes, mc, grid, limit = (
        (400, 3, [3, 8, 8, 3], 2000, 6, 10.0)
        if args.quick
        else (6000, 300, [3, 20, 20, 20, 3], 10000, 21, 120.0)
    )
    rng = np.random.default_rng(0)
    box = InputBox.from_pairs(BOX)
    X = box.sample(n, rng)
    y = recourse(X, sample_demand(n, rng))
    split = int(0.8 * n)
    X_test = box.sample(1000, rng)
    y_test = recourse(X_test, sample_demand(1000, rng))
    xi_mc = sample_demand(mc, rng)
    print(
        f"{n} simulated (x, Q) pairs; {'-'.join(map(str, sizes))} networks for quantiles "
        f"{QUANTILES}, {epochs} epochs each\n"
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for name, lam in (("plain", 0.0), ("BW 1e-2", 1e-2)):
            start = time.perf_counter()
            net = train(sizes, (X[:split], y[:split]), (X[split:], y[split:]), epochs, lam)
            seconds = time.perf_counter() - start
            path = out / f"quantiles_{name.split()[0].lower()}.onnx"
            write_onnx(net, path, overwrite=True, dtype="float64")
            pinball = PinballLoss(QUANTILES)(net.forward(X_test), y_test[:, None])[0]
            rows.append((name, seconds, pinball, first_stage(path, limit)))

    print(
        f"{'network':<9}{'train s':>8}{'pinball':>8}{'binaries':>9}{'MILP s':>8}  "
        f"{'decision x':<17}  {'predicted q10/50/90':<17}  {'Monte Carlo':<17}"
        f"{'obj pred':>9}{'obj MC':>8}"
    )
    for name, seconds, pinball, d in rows:
        sampled = monte_carlo_quantiles(d.x[None, :], xi_mc)[0]
        mark = "" if d.optimal else ">"
        print(
            f"{name:<9}{seconds:>8.1f}{pinball:>8.3f}{d.binaries:>9}"
            f"{mark + format(d.seconds, '.2f'):>8}  {numbers(d.x)}  {numbers(d.predicted)}  "
            f"{numbers(sampled)}"
            f"{risk_objective(d.x[None, :], d.predicted[None, :])[0]:>9.2f}"
            f"{risk_objective(d.x[None, :], sampled[None, :])[0]:>8.2f}"
        )
    checks = [d.check for *_, d in rows]
    print(f"\ncheck against onnxruntime at every decision: max |difference| = {max(checks):.2e}")
    x_ref, obj_ref = grid_reference(grid, xi_mc)
    print(
        f"\nbest decision on a {grid}^3 grid (Monte Carlo objective, {mc} demand samples): "
        f"x = {numbers(x_ref)}, objective {obj_ref:.2f}"
    )
    print(
        "objective = c'x + q50 + 0.25 (q90 - q10) of the second-stage cost; "
        "'>' marks a MILP stopped by its time limit"
    )


if __name__ == "__main__":
    main()
