"""Build time of T copies of one network: one batched ``NNBlock(inputs=m.x)`` against T
separate blocks (``add_component`` in a loop), each reading the ONNX file (``file``) or
given the network in memory (``separate``), side by side in one run.

The network is a 2-32-32-1 surrogate, each copy over its own box (the variables' bounds of
a plan's periods); both models have the same binaries and rows (tests/test_block_copies.py
checks that they reach the same optimum).  Times are the median of ``--repeats`` builds of
each, interleaved, so that both see the same machine load.

    python benchmarks/copies_build.py [--copies 10 25 50 100 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyomo.environ as pyo

from pyomo_nnrelax import Network, NNBlock, write_onnx

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


def separate(copies: int, source=NET) -> pyo.ConcreteModel:
    """A block per copy, each from ``source`` (the network in memory, or its ONNX file,
    which every block then reads again)."""
    m = variables(copies)
    for t in range(copies):
        m.add_component(f"nn{t}", NNBlock(source, inputs=[m.x[t, 0], m.x[t, 1]]))
    return m


def binaries(m: pyo.ConcreteModel) -> int:
    return sum(1 for v in m.component_data_objects(pyo.Var) if v.is_binary())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.onnx"
        write_onnx(NET, path, dtype="float64")
        builds = {
            "file": lambda copies: separate(copies, path),
            "separate": separate,
            "batched": batched,
        }
        for build in builds.values():
            build(2)  # imports and caches warm
        print(f"{'copies':>6} {'binaries':>8} {'file s':>8} {'separate s':>10} {'batched s':>10}"
              f" {'vs file':>8} {'vs separate':>11}")  # fmt: skip
        for copies in args.copies:
            times: dict[str, list[float]] = {name: [] for name in builds}
            for _ in range(args.repeats):
                for name, build in builds.items():
                    began = time.perf_counter()
                    m = build(copies)
                    times[name].append(time.perf_counter() - began)
            file, many, one = (statistics.median(times[k]) for k in builds)
            print(f"{copies:>6} {binaries(m):>8} {file:>8.3f} {many:>10.3f} {one:>10.3f}"
                  f" {one / file:>8.2f} {one / many:>11.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
