"""Bound tightening: interval vs LP vs MILP bounds, big-M vs partition, cold vs warm starts.

    python examples/bound_tightening.py            # a few minutes on 2 cores
    python examples/bound_tightening.py --quick    # seconds (what the test suite runs)

The MILP of a ReLU network needs one binary per *unstable* neuron, and its big-M constants
come from the pre-activation bounds, so deeper networks with loose bounds get slow.  This
example

1. fits a 2-16-16-16-1 network to ``peaks`` on [-2, 2]^2 (a short, unregularized fit);
2. computes its pre-activation bounds three ways with ``tighten_bounds``: interval
   propagation, LP-based tightening, and MILP-based tightening with a time limit per solve,
   and prints the unstable neurons, mean big-M constant and time of each;
3. minimises the network with each set of bounds (passed to ``NNBlock`` as a
   ``NetworkBounds``), with the big-M and the partition formulation, each solved on
   ``appsi_highs`` cold and warm-started from ``m.nn.warm_start()`` (the best of a sample of
   the box, passed as ``opt.solve(m, warmstart=True)``), under a time limit: a solve that
   hits it is reported with the gap it had left;
4. stores the MILP-tightened bounds in the ONNX metadata (``write_onnx(..., bounds=...)``)
   and shows that ``NNBlock(path)`` picks them up for free over the same box, and falls back
   to interval bounds over a different box.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyomo.environ as pyo

from pyomo_nnrelax import (
    InputBox,
    Network,
    NetworkBounds,
    NNBlock,
    Trainer,
    interval_bounds,
    tighten_bounds,
    write_onnx,
)

CHECKS: list[float] = []  # max |network - onnxruntime| at every optimum found
FORMULATIONS = (
    ("big-M", {"formulation": "bigm"}),
    ("partition", {"formulation": "partition", "partitions": 2}),
)


def peaks(X: np.ndarray) -> np.ndarray:
    """MATLAB's ``peaks`` function, the function the network is fitted to."""
    x, y = X[:, 0], X[:, 1]
    return (
        3 * (1 - x) ** 2 * np.exp(-(x**2) - (y + 1) ** 2)
        - 10 * (x / 5 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1) ** 2) - y**2) / 3
    )


def fit(sizes: list[int], n: int, epochs: int, domain: InputBox) -> Network:
    """A short, unregularized fit of ``peaks``: a typical deep surrogate with loose bounds."""
    X = domain.sample(n, np.random.default_rng(0))
    return (
        Trainer(
            Network.mlp(sizes, seed=0),
            X,
            peaks(X),
            input_bounds=domain,
            epochs=epochs,
            lr=3e-3,
            seed=0,
        )
        .fit()
        .network
    )


def all_bounds(
    network: Network, domain: InputBox, time_limit: float
) -> dict[str, tuple[NetworkBounds, float]]:
    """Interval, LP- and MILP-tightened bounds over ``domain``, each with its time (s)."""
    results = {}
    for method in ("interval", "lp", "milp"):
        start = time.perf_counter()
        start_bounds = interval_bounds(network, domain)
        if method != "interval":
            # time_limit applies to every solve, so LP solves get none (they are quick)
            limit = time_limit if method == "milp" else None
            start_bounds = tighten_bounds(network, start_bounds, method, time_limit=limit)
        results[method] = (start_bounds, time.perf_counter() - start)
    return results


def solve(
    network: Network,
    domain: InputBox,
    bounds: NetworkBounds,
    options: dict,
    warm: bool,
    time_limit: float,
) -> str:
    """Minimise the network on appsi_highs: the solve time, or '>limit gap' if stopped."""
    m = pyo.ConcreteModel()
    m.nn = NNBlock(network, input_bounds=domain, bounds=bounds, **options)
    m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.minimize)
    if warm:
        m.nn.warm_start()
    # Through pyo.SolverFactory, appsi_highs takes the start and limit as solve() arguments:
    # it resets opt.config on every solve, so opt.config.warmstart = True would be ignored.
    opt = pyo.SolverFactory("appsi_highs")
    start = time.perf_counter()
    result = opt.solve(m, warmstart=warm, timelimit=time_limit, load_solutions=False)
    seconds = time.perf_counter() - start
    if result.solver.termination_condition == pyo.TerminationCondition.optimal:
        m.solutions.load_from(result)
        CHECKS.append(m.nn.check().max_abs_error)
        return f"{seconds:.2f}"
    best, bound = result.problem.upper_bound, result.problem.lower_bound
    if best is None or bound is None or not np.isfinite(best - bound):
        return f">{seconds:.0f} no sol."
    return f">{seconds:.0f} gap {best - bound:.3g}"


def store_and_reload(network: Network, domain: InputBox, bounds: NetworkBounds, path: Path) -> None:
    """Write the bounds into the ONNX metadata and show which bounds NNBlock then uses."""
    write_onnx(
        network.with_input_bounds(domain.lower, domain.upper),
        path,
        bounds=bounds,
        dtype="float64",
        overwrite=True,
    )
    same = NNBlock(str(path))
    print(
        f"NNBlock({path.name!r}) over the stored box: bounds.method = {same.bounds.method!r}, "
        f"{same.bounds.unstable_count(same.network)} binaries"
    )
    other = NNBlock(str(path), input_bounds=InputBox(domain.lower / 2, domain.upper / 2))
    print(
        f"NNBlock({path.name!r}, input_bounds=[-1, 1]^2): bounds.method = "
        f"{other.bounds.method!r} (stored bounds are for another box), "
        f"{other.bounds.unstable_count(other.network)} binaries"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--out", type=Path, help="keep the ONNX file here (default: a temp dir)")
    args = parser.parse_args()
    n, epochs, sizes, bound_limit, limit = (
        (300, 2, [2, 6, 6, 6, 1], 0.1, 3.0)
        if args.quick
        else (3000, 40, [2, 16, 16, 16, 1], 1.0, 30.0)
    )
    domain = InputBox(lower=[-2, -2], upper=[2, 2])
    print(f"1. fitting a {'-'.join(map(str, sizes))} network to peaks ({epochs} epochs)")
    network = fit(sizes, n, epochs, domain)
    print(f"2. bounds over [-2, 2]^2 (MILP tightening: {bound_limit:g} s per solve)")
    print(f"3. minimising the network on appsi_highs, MILP time limit {limit:g} s\n")
    print(
        f"{'bounds':<9}{'time s':>8}{'unstable':>9}{'mean M':>8}"
        + "".join(f"{name + ws:>15}" for name, _ in FORMULATIONS for ws in ("", " +ws"))
    )
    computed = all_bounds(network, domain, bound_limit)
    for method, (bounds, seconds) in computed.items():
        unstable, mean_m = bounds.unstable_count(network), bounds.mean_big_m(network)
        times = [
            solve(network, domain, bounds, options, warm, limit)
            for _, options in FORMULATIONS
            for warm in (False, True)
        ]
        print(
            f"{method:<9}{seconds:>8.2f}{unstable:>9}{mean_m:>8.3g}"
            + "".join(f"{t:>15}" for t in times)
        )
    print(
        "wall-clock solve times (s); '>' marks a solve stopped by its time limit, with the "
        "gap |incumbent - bound| left\n(no sol.: no incumbent found); +ws = warm-started "
        "from m.nn.warm_start()"
    )
    if CHECKS:
        print(f"check against onnxruntime at every optimum: max |difference| = {max(CHECKS):.2e}\n")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print("4. storing the MILP bounds in the ONNX metadata")
        store_and_reload(network, domain, computed["milp"][0], out / "peaks_tightened.onnx")


if __name__ == "__main__":
    main()
