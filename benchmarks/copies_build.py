"""Build time of T copies of one network: one batched ``NNBlock(inputs=m.x)`` against T
separate blocks (``add_component`` in a loop), side by side in one run.

The network is a 2-32-32-1 surrogate, each copy over its own box (the variables' bounds of
a plan's periods); both models have the same binaries and rows (tests/test_block_copies.py
checks that they reach the same optimum).  Times are the median of ``--repeats`` builds of
each, interleaved, so that both see the same machine load.

    python benchmarks/copies_build.py [--copies 10 25 50 100 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pyomo.environ as pyo

from pyomo_nnrelax import Network, NNBlock

NET = Network.mlp([2, 32, 32, 1], seed=0)


def variables(copies: int) -> pyo.ConcreteModel:
    """``m.x[t, i]``: copy ``t``'s box shifts with ``t`` (a plan's periods)."""
    m = pyo.ConcreteModel()
    centre = np.sin(np.arange(copies))
    m.x = pyo.Var(range(copies), [0, 1], bounds=lambda _, t, i: (centre[t] - 1.0, centre[t] + 1.0))
    return m


def batched(copies: int) -> pyo.ConcreteModel:
    m = variables(copies)
    m.nn = NNBlock(NET, inputs=m.x)
    return m


def separate(copies: int) -> pyo.ConcreteModel:
    m = variables(copies)
    for t in range(copies):
        m.add_component(f"nn{t}", NNBlock(NET, inputs=[m.x[t, 0], m.x[t, 1]]))
    return m


def binaries(m: pyo.ConcreteModel) -> int:
    return sum(1 for v in m.component_data_objects(pyo.Var) if v.is_binary())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    batched(2), separate(2)  # imports and caches warm
    print(f"{'copies':>6} {'binaries':>8} {'separate s':>10} {'batched s':>10} {'ratio':>6}")
    for copies in args.copies:
        times: dict[str, list[float]] = {"separate": [], "batched": []}
        for _ in range(args.repeats):
            for name, build in (("separate", separate), ("batched", batched)):
                began = time.perf_counter()
                m = build(copies)
                times[name].append(time.perf_counter() - began)
        one, many = (statistics.median(times[k]) for k in ("batched", "separate"))
        print(f"{copies:>6} {binaries(m):>8} {many:>10.3f} {one:>10.3f} {one / many:>6.2f}")


if __name__ == "__main__":
    main()
