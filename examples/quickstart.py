"""Quick start: embed a ReLU network in a Pyomo model and minimise its output on HiGHS.

    python examples/quickstart.py

A 2-16-16-1 network with fixed random weights is written to ONNX, read back into an
``NNBlock``, and its output is minimised over the box [-2, 2]^2.  The optimum is checked
against onnxruntime at the solution.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pyomo.environ as pyo

from pyomo_nnrelax import NNBlock, Network


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        Network.mlp([2, 16, 16, 1], seed=0).to_onnx(path)

        m = pyo.ConcreteModel()
        m.nn = NNBlock(str(path), input_bounds=[(-2, 2), (-2, 2)])
        m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.minimize)
        print(m.nn.summary())

        start = time.perf_counter()
        result = pyo.SolverFactory("highs").solve(m)
        elapsed = time.perf_counter() - start
        print(f"\nHiGHS: {result.solver.termination_condition}, {elapsed:.2f} s")
        print(f"minimum of the network output: {pyo.value(m.obj):.6f}")
        check = m.nn.check()
        print(f"check against onnxruntime: {check}")
        if check.max_abs_error > 1e-5:
            raise SystemExit("the embedded network disagrees with onnxruntime")


if __name__ == "__main__":
    main()
