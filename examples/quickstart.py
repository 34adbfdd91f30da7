"""Quick start: fit a surrogate, embed it in Pyomo, refine it with BW+LP, compare MILP times.

    python examples/quickstart.py            # under a minute on 2 cores
    python examples/quickstart.py --quick    # seconds (what the test suite runs)

1. Fit a 2-25-25-1 ReLU network to the ``peaks`` function on [-2, 2]^2 (no regularizer) and
   write it to ONNX, as a user's exported surrogate would be.
2. Embed it with ``NNBlock`` and minimise its output on HiGHS; check the optimum against
   onnxruntime.
3. Refine the network with the bound-width + LP-gap regularizers (Tsay 2026; the LP gap
   bounded by the dual network, no LP solver), round after round, within an accuracy budget
   (validation loss at most 1.25x the surrogate's), and minimise again: fewer unstable
   neurons, a tighter LP relaxation, a faster MILP.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyomo.environ as pyo

from pyomo_nnrelax import (
    InputBox,
    Network,
    NNBlock,
    SolveStats,
    Trainer,
    difficulty,
    read_onnx,
    refine,
    solve_model,
    write_onnx,
)
from pyomo_nnrelax.training import BoundWidth, LPGap


def peaks(X: np.ndarray) -> np.ndarray:
    """MATLAB's ``peaks`` function: the "expensive simulation" the surrogate replaces."""
    x, y = X[:, 0], X[:, 1]
    return (
        3 * (1 - x) ** 2 * np.exp(-(x**2) - (y + 1) ** 2)
        - 10 * (x / 5 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1) ** 2) - y**2) / 3
    )


def minimise(path: Path, domain: InputBox, time_limit: float) -> SolveStats:
    """Embed the ONNX network, minimise its output on HiGHS, print the optimum and check.

    Returns the solve's time, nodes and bound, which the comparison table reuses.
    """
    m = pyo.ConcreteModel()
    m.nn = NNBlock(str(path), input_bounds=domain)
    m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.minimize)
    print(m.nn.summary())
    stats = solve_model(m, time_limit=time_limit, load=True)
    if not stats.optimal:
        print(f"HiGHS stopped: {stats.status} (time limit {time_limit:g} s)\n")
        return stats
    print(f"minimum {pyo.value(m.obj):.5f} at x = {m.nn.input_values().round(4)}")
    print(f"check against onnxruntime: max |difference| = {m.nn.check().max_abs_error:.2e}\n")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--out", type=Path, help="keep the ONNX files here (default: a temp dir)")
    args = parser.parse_args()
    n, epochs, rounds, sizes, limit = (
        (400, 3, 1, [2, 8, 8, 1], 10.0) if args.quick else (4000, 60, 6, [2, 25, 25, 1], 60.0)
    )
    domain = InputBox(lower=[-2, -2], upper=[2, 2])
    rng = np.random.default_rng(0)
    X = domain.sample(n, rng)
    y = peaks(X)
    X_test = domain.sample(2000, rng)
    split = int(0.8 * n)
    validation = (X[split:], y[split:])

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print(f"1. fitting a {'-'.join(map(str, sizes))} surrogate of peaks ({epochs} epochs)")
        fitted = (
            Trainer(
                Network.mlp(sizes, seed=0),
                X[:split],
                y[:split],
                validation=validation,
                input_bounds=domain,
                epochs=epochs,
                seed=0,
            )
            .fit()
            .network
        )
        surrogate = out / "surrogate.onnx"
        write_onnx(fitted, surrogate, overwrite=True, dtype="float64")

        print("\n2. embedding it and minimising on HiGHS")
        solved = {"before": (surrogate, minimise(surrogate, domain, limit))}

        print(
            f"3. refining with BW+LP ({rounds} rounds of {epochs // 3 or 1} epochs; lambda grows "
            "from 5e-4, doubling while the validation loss stays within 1.25x the surrogate's)"
        )
        refined = refine(
            surrogate,
            X[:split],
            y[:split],
            input_bounds=domain,
            validation=validation,
            regularizer=BoundWidth() + LPGap(sense="min"),  # the dual-network LP gap
            lam=5e-4,
            loss_budget=1.25,
            rounds=rounds,
            epochs_per_round=epochs // 3 or 1,
            output_dir=out / "refine",
            overwrite=True,
            milp_time_limit=None,
            progress=not args.quick,
        )
        refined_path = out / "refined.onnx"
        write_onnx(refined.network, refined_path, overwrite=True, dtype="float64")
        print(f"   chose {refined.chosen_because}")
        solved["after"] = (refined_path, minimise(refined_path, domain, limit))

        print(f"{'':<10}{'unstable':>9}{'LP gap':>10}{'MILP s':>9}{'nodes':>7}{'test MSE':>10}")
        for name, (path, milp) in solved.items():
            net = read_onnx(path)  # the network minimised above, as written to ONNX
            d = difficulty(net, domain, "min", milp=milp)
            mark = "" if d.milp.optimal else ">"
            mse = np.mean((net.forward(X_test)[:, 0] - peaks(X_test)) ** 2)
            print(
                f"{name:<10}{d.unstable:>9}{d.lp_gap:>10.4g}"
                f"{mark + format(d.milp.seconds, '.2f'):>9}{d.milp.nodes:>7}{mse:>10.4f}"
            )


if __name__ == "__main__":
    main()
