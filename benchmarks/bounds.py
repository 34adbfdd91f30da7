"""Interval vs LP vs MILP bounds: what tightening costs and what it buys on HiGHS.

For random and trained networks of 2 and 3 hidden layers, one table per network: unstable
neurons, mean big-M and tightening time per bound method, then the time to minimise the
network output to optimality (appsi_highs, one solve at a time) with the big-M and partition
formulations, cold and from ``warm_start()``, beside OMLT's interval-bound big-M and partition
formulations read from the same ONNX file.  Needs ``pip install omlt==1.2.2``.

    python benchmarks/bounds.py [--time-limit 60] [--quick]

A ">" marks a solve stopped by the time limit.  Where tightening time plus solve time is
above the interval-bound solve time, tightening did not pay for itself on that network.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pyomo.environ as pyo

from pyomo_nnrelax import Network, NNBlock, interval_bounds, read_onnx, tighten_bounds, write_onnx
from pyomo_nnrelax.bounds import big_m_summary, layer_statistics
from pyomo_nnrelax.experiments.functions import box, latin_hypercube, peaks
from pyomo_nnrelax.training import Trainer

BOX = [(-2.0, 2.0), (-2.0, 2.0)]


def networks(quick: bool) -> dict[str, Network]:
    """Random networks and peaks surrogates (no regularizer) of 2 and 3 hidden layers."""
    if quick:
        return {"random 2-8-8-1": Network.mlp([2, 8, 8, 1], seed=0)}
    X = latin_hypercube(4000, box("peaks"), seed=0)
    trained = {
        f"peaks {'-'.join(map(str, s))}": Trainer(
            Network.mlp(s, seed=0), X, peaks(X), input_bounds=BOX, epochs=30, seed=0
        )
        .fit()
        .network
        for s in ([2, 20, 20, 1], [2, 16, 16, 16, 1])
    }
    random = {
        f"random {'-'.join(map(str, s))}": Network.mlp(s, seed=1)
        for s in ([2, 20, 20, 1], [2, 16, 16, 16, 1])
    }
    return {**random, **trained}


def solve_seconds(m: pyo.ConcreteModel, time_limit: float, warm: bool) -> str:
    """Minimise the model's objective with appsi_highs; seconds, '>' if time-limited."""
    opt = pyo.SolverFactory("appsi_highs")
    start = time.perf_counter()
    result = opt.solve(m, warmstart=warm, timelimit=time_limit, load_solutions=False)
    seconds = time.perf_counter() - start
    optimal = result.solver.termination_condition == pyo.TerminationCondition.optimal
    return ("" if optimal else ">") + f"{seconds:.2f}"


def ours(net: Network, bounds, formulation: str, time_limit: float, warm: bool) -> str:
    m = pyo.ConcreteModel()
    options = {"partitions": 2} if formulation == "partition" else {}
    m.nn = NNBlock(net, input_bounds=BOX, bounds=bounds, formulation=formulation, **options)
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    if warm:
        m.nn.warm_start()
    return solve_seconds(m, time_limit, warm)


def omlt(path: Path, formulation: str, time_limit: float) -> str:
    from omlt import OmltBlock
    from omlt.io import load_onnx_neural_network
    from omlt.neuralnet import ReluBigMFormulation, ReluPartitionFormulation

    definition = load_onnx_neural_network(onnx.load(str(path)), input_bounds=dict(enumerate(BOX)))
    m = pyo.ConcreteModel()
    m.nn = OmltBlock()
    kind = ReluBigMFormulation if formulation == "bigm" else ReluPartitionFormulation
    m.nn.build_formulation(kind(definition))
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    return solve_seconds(m, time_limit, warm=False)


def report(name: str, net: Network, path: Path, time_limit: float) -> None:
    print(f"\n== {name} ({sum(l.n_out for l in net.layers[:-1])} hidden neurons)")
    print(
        f"{'bounds':<9}{'unstable':>9}{'mean M':>9}{'tighten s':>10}{'bigm s':>9}"
        f"{'bigm+ws s':>10}{'part s':>9}{'part+ws s':>10}"
    )
    for method in ("interval", "lp", "milp"):
        start = time.perf_counter()
        bounds = (
            interval_bounds(net, BOX)
            if method == "interval"
            else tighten_bounds(net, None, method, input_bounds=BOX, time_limit=time_limit / 10)
        )
        seconds = time.perf_counter() - start
        unstable, mean_m = big_m_summary(layer_statistics(net, bounds))
        times = [
            ours(net, bounds, f, time_limit, warm)
            for f in ("bigm", "partition")
            for warm in (False, True)
        ]
        print(
            f"{method:<9}{unstable:>9}{mean_m:>9.3g}{seconds:>10.2f}"
            + "".join(f"{t:>{w}}" for t, w in zip(times, (9, 10, 9, 10)))
        )
    print(
        f"{'OMLT':<9}{'':>9}{'':>9}{'':>10}{omlt(path, 'bigm', time_limit):>9}{'':>10}"
        f"{omlt(path, 'partition', time_limit):>9}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per MILP")
    parser.add_argument("--quick", action="store_true", help="one tiny network")
    args = parser.parse_args()
    np.set_printoptions(precision=3)
    with tempfile.TemporaryDirectory() as tmp:
        for name, net in networks(args.quick).items():
            path = Path(tmp) / (name.replace(" ", "_") + ".onnx")
            write_onnx(net, path)
            report(name, read_onnx(path), path, args.time_limit)


if __name__ == "__main__":
    main()
