"""Surrogate optimisation: replace a function by a ReLU network, refine it, optimise over it.

    python examples/surrogate_optimisation.py            # a few minutes on 2 cores
    python examples/surrogate_optimisation.py --quick    # seconds (what the test suite runs)
    python examples/surrogate_optimisation.py --out runs/himmelblau   # keep the ONNX files

The story of a user whose objective is expensive to evaluate (here, cheaply, Himmelblau's
function on [-5, 5]^2, with four global minima of value 0):

1. Sample the function, fit a 2-25-25-25-1 ReLU network (no regularizer) and write it to
   ONNX, as an exported surrogate would be.
2. Refine the ONNX network with the bound-width + LP-gap regularizers (Tsay 2026) for a few
   rounds of training and measurement (``refine``).
3. Optimise over each network inside the user's own Pyomo model: the user's decision
   variables ``m.x`` are linked to the network inputs ``m.nn.inputs`` by ordinary equality
   constraints, and a side constraint ``x0 + x1 >= 1`` (which cuts off two of the four
   minima) is written on ``m.x`` alone.
4. Compare the networks before and after refinement: unstable neurons, LP relaxation gap,
   MILP time and nodes on HiGHS (``difficulty``), test error, and the minimiser found, with
   the surrogate's prediction there against the true function value.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyomo.environ as pyo

from pyomo_nnrelax import Network, NNBlock, Trainer, difficulty, refine, write_onnx
from pyomo_nnrelax.training import BoundWidth, LPGap


@dataclass(frozen=True)
class Optimum:
    """The user's model solved over one surrogate."""

    x: np.ndarray
    predicted: float
    true: float
    seconds: float
    optimal: bool
    check: float  # max |network output - onnxruntime| at x*


def himmelblau(X: np.ndarray) -> np.ndarray:
    """Himmelblau's function, the "expensive simulation" the surrogate replaces."""
    x, y = np.atleast_2d(X).T
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def user_model(surrogate: Path, domain: np.ndarray) -> pyo.ConcreteModel:
    """The user's model: own variables and side constraint, linked to the embedded network."""
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(2), bounds=lambda _m, i: tuple(domain[i]))
    m.nn = NNBlock(str(surrogate), input_bounds=domain)
    m.link = pyo.Constraint(range(2), rule=lambda m, i: m.x[i] == m.nn.inputs[i])
    m.side = pyo.Constraint(expr=m.x[0] + m.x[1] >= 1.0)
    m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.minimize)
    return m


def optimise(surrogate: Path, domain: np.ndarray, time_limit: float) -> Optimum:
    """Minimise the surrogate subject to the side constraint; evaluate the true function."""
    m = user_model(surrogate, domain)
    start = time.perf_counter()
    result = pyo.SolverFactory("highs").solve(m, timelimit=time_limit, load_solutions=False)
    seconds = time.perf_counter() - start
    optimal = result.solver.termination_condition == pyo.TerminationCondition.optimal
    if len(result.solution) == 0:
        return Optimum(np.full(2, np.nan), np.nan, np.nan, seconds, False, np.nan)
    m.solutions.load_from(result)
    x = np.array([pyo.value(m.x[i]) for i in range(2)])
    check = m.nn.check().max_abs_error
    return Optimum(x, pyo.value(m.obj), float(himmelblau(x)[0]), seconds, optimal, check)


def fit(
    sizes: list[int], X: np.ndarray, y: np.ndarray, validation, domain: np.ndarray, epochs: int
) -> Network:
    """An ordinary (unregularized) fit, the user's starting surrogate."""
    trainer = Trainer(
        Network.mlp(sizes, seed=0),
        X,
        y,
        validation=validation,
        input_bounds=domain,
        epochs=epochs,
        lr=3e-3,
        seed=0,
    )
    return trainer.fit().network


def rmse(network: Network, X_test: np.ndarray) -> float:
    """Root mean squared error of the network against himmelblau on test points."""
    return float(np.sqrt(np.mean((network.forward(X_test)[:, 0] - himmelblau(X_test)) ** 2)))


def print_table(
    networks: dict[str, Network],
    paths: dict[str, Path],
    domain: np.ndarray,
    X_test: np.ndarray,
    time_limit: float,
) -> None:
    """Difficulty of the plain minimisation, accuracy, and the user's constrained optimum."""
    results = {
        name: (
            difficulty(net, domain, "min", milp_time_limit=time_limit),
            optimise(paths[name], domain, time_limit),
        )
        for name, net in networks.items()
    }
    print(
        f"\n{'':<8}{'unstable':>9}{'mean M':>9}{'LP gap':>9}{'MILP s':>9}{'nodes':>7}"
        f"{'test RMSE':>10} | {'x* (x0 + x1 >= 1)':>18}{'f_nn(x*)':>10}{'f(x*)':>9}{'user s':>8}"
    )
    for name, (d, best) in results.items():
        x = np.array2string(best.x, precision=3, separator=",")
        print(
            f"{name:<8}{d.unstable:>9}{d.mean_big_m:>9.3g}{d.lp_gap:>9.4g}"
            f"{mark(d.milp.optimal, d.milp.seconds):>9}{d.milp.nodes:>7}"
            f"{rmse(networks[name], X_test):>10.3f} | {x:>18}{best.predicted:>10.3f}"
            f"{best.true:>9.3f}{mark(best.optimal, best.seconds):>8}"
        )
    checks = [best.check for _, best in results.values()]
    print(f"\ncheck against onnxruntime at every x*: max |difference| = {max(checks):.2e}")
    print(
        f"MILP s: minimising the network alone (difficulty()); user s: the user's model. "
        f"'>': stopped by the {time_limit:g} s time limit (x* is then the incumbent).\n"
        "Himmelblau's minima with x0 + x1 >= 1: (3, 2) and (3.584, -1.848), value 0."
    )


def mark(optimal: bool, seconds: float) -> str:
    """Seconds, prefixed by '>' when a time limit stopped the solve."""
    return ("" if optimal else ">") + f"{seconds:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--out", type=Path, help="keep the ONNX files here (default: a temp dir)")
    args = parser.parse_args()
    n, epochs, rounds, round_epochs, sizes, limit = (
        (300, 3, 1, 1, [2, 8, 8, 8, 1], 10.0)
        if args.quick
        else (4000, 150, 3, 10, [2, 25, 25, 25, 1], 60.0)
    )
    domain = np.array([[-5.0, 5.0], [-5.0, 5.0]])
    rng = np.random.default_rng(0)
    X = rng.uniform(domain[:, 0], domain[:, 1], size=(n, 2))
    y = himmelblau(X)
    X_test = rng.uniform(domain[:, 0], domain[:, 1], size=(2000, 2))
    split = int(0.8 * n)
    validation = (X[split:], y[split:])

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print(f"1. fitting a {'-'.join(map(str, sizes))} surrogate of himmelblau ({epochs} epochs)")
        fitted = fit(sizes, X[:split], y[:split], validation, domain, epochs)
        surrogate = out / "himmelblau.onnx"
        write_onnx(fitted, surrogate, overwrite=True, dtype="float64")

        print(
            f"2. refining {surrogate.name} with BW+LP (lambda 1e-3, {rounds} rounds of "
            f"{round_epochs} epochs)"
        )
        start = time.perf_counter()
        refined = refine(
            surrogate,
            X[:split],
            y[:split],
            input_bounds=domain,
            validation=validation,
            regularizer=BoundWidth() + LPGap(sense="min", gap_method="exact_lp"),
            lam=1e-3,
            rounds=rounds,
            epochs_per_round=round_epochs,
            output_dir=out / "himmelblau_refined",
            overwrite=True,
            milp_time_limit=None,
            progress=False,
            lr=1e-3,
        )
        print(
            f"   {time.perf_counter() - start:.1f} s, stopped after {refined.stopped_by}; "
            f"unstable neurons per round: {refined.history.column('unstable')}"
        )
        refined_path = refined.checkpoints[-1]  # refine wrote the last round's network

        print("3-4. optimising over both surrogates on HiGHS")
        print_table(
            {"before": fitted, "after": refined.network},
            {"before": surrogate, "after": refined_path},
            domain,
            X_test,
            limit,
        )


if __name__ == "__main__":
    main()
