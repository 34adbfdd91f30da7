"""Build time of NNBlock (big-M, interval bounds) against OMLT's big-M formulation.

Both read the same ONNX file and build a Pyomo model of the same network in one run, so the
ratio is measured under the same machine load.  Needs ``pip install omlt==1.2.2``.

    python benchmarks/build_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx
import pyomo.environ as pyo

from pyomo_nnrelax import Network
from pyomo_nnrelax.block import NNBlock

ARCHITECTURES = ([2, 50, 50, 1], [2, 200, 200, 200, 1], [2, 500, 500, 1])
BOX = [(-2.0, 2.0), (-2.0, 2.0)]


def build_nnrelax(path: Path) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel()
    m.nn = NNBlock(str(path), input_bounds=BOX)
    return m


def build_omlt(path: Path) -> pyo.ConcreteModel:
    from omlt import OmltBlock
    from omlt.io import load_onnx_neural_network
    from omlt.neuralnet import ReluBigMFormulation

    definition = load_onnx_neural_network(
        onnx.load(str(path)), input_bounds={i: b for i, b in enumerate(BOX)}
    )
    m = pyo.ConcreteModel()
    m.nn = OmltBlock()
    m.nn.build_formulation(ReluBigMFormulation(definition))
    return m


def model_size(m: pyo.ConcreteModel) -> tuple[int, int, int]:
    variables = list(m.component_data_objects(pyo.Var))
    binaries = sum(1 for v in variables if v.is_binary())
    constraints = sum(1 for _ in m.component_data_objects(pyo.Constraint, active=True))
    return len(variables), binaries, constraints


def best_time(build, path: Path, repeats: int) -> tuple[float, pyo.ConcreteModel]:
    times, model = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        model = build(path)
        times.append(time.perf_counter() - start)
    return min(times), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="builds per tool (best is kept)")
    args = parser.parse_args()
    header = (
        f"{'network':<22} {'nnrelax s':>10} {'omlt s':>9} {'speed-up':>9} "
        f"{'nnrelax vars/bin/cons':>24} {'omlt vars/bin/cons':>22}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for sizes in ARCHITECTURES:
            path = Path(tmp) / ("-".join(map(str, sizes)) + ".onnx")
            Network.mlp(sizes, seed=0).to_onnx(path)
            t_ours, ours = best_time(build_nnrelax, path, args.repeats)
            t_omlt, theirs = best_time(build_omlt, path, args.repeats)
            size_ours = "/".join(map(str, model_size(ours)))
            size_omlt = "/".join(map(str, model_size(theirs)))
            print(
                f"{'-'.join(map(str, sizes)):<22} {t_ours:>10.3f} {t_omlt:>9.3f} "
                f"{t_omlt / t_ours:>8.1f}x {size_ours:>24} {size_omlt:>22}"
            )


if __name__ == "__main__":
    main()
