"""Build time and memory of NNBlock (big-M, interval bounds) against OMLT's big-M formulation.

Both read the same ONNX file and build a Pyomo model of the same network in one run, so the
ratio is measured under the same machine load.  Dense ReLU networks, and two small CNNs on a
1x16x16 image in [0, 1]: one without padding (which OMLT 1.2.2 reads) and one with padding
and a max pool (which it does not; the row says why); and the MNIST CNN of Xiao et al.
(4,804 ReLUs, padded) over one image's eps = 0.1 ball.  Memory is the peak of Python's
allocations (tracemalloc) while the block is built.  Needs ``pip install omlt==1.2.2``.

    python benchmarks/build_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pyomo.environ as pyo
from onnx import TensorProto, helper, numpy_helper

from pyomo_nnrelax import Network, NNBlock, write_onnx

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "verify_mnist.py"


def mlp(sizes: list[int]) -> Callable[[Path], list[tuple[float, float]]]:
    def write(path: Path) -> list[tuple[float, float]]:
        write_onnx(Network.mlp(sizes, seed=0), path)
        return [(-2.0, 2.0)] * sizes[0]

    return write


def cnn(padded: bool) -> Callable[[Path], list[tuple[float, float]]]:
    """Conv(1->8, 3x3) - Relu - Conv(8->8, 3x3, stride 2) - Relu [- MaxPool 2x2] - Gemm(->10),
    with He-normal weights; ``padded`` pads both convolutions by 1 and adds the max pool."""

    def write(path: Path) -> list[tuple[float, float]]:
        rng = np.random.default_rng(0)
        # every attribute written out: OMLT 1.2.2 reads no defaults
        pads = {"pads": [1, 1, 1, 1] if padded else [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
        side = 8 if padded else 6
        n_flat = 8 * (side // 2 if padded else side) ** 2
        inits = {
            "w1": rng.normal(0, np.sqrt(2 / 9), (8, 1, 3, 3)),
            "b1": rng.normal(0, 0.1, 8),
            "w2": rng.normal(0, np.sqrt(2 / 72), (8, 8, 3, 3)),
            "b2": rng.normal(0, 0.1, 8),
            "w3": rng.normal(0, np.sqrt(1 / n_flat), (n_flat, 10)),
            "b3": np.zeros(10),
        }
        nodes = [
            helper.make_node(
                "Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[1, 1], **pads
            ),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node(
                "Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2], **pads
            ),
            helper.make_node("Relu", ["c2"], ["r2"]),
        ]
        last = "r2"
        if padded:
            nodes.append(
                helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2])
            )
            last = "p"
        nodes += [
            # OMLT reads no Flatten, and a Reshape's shape only from a Constant node
            helper.make_node(
                "Constant",
                [],
                ["shape"],
                value=numpy_helper.from_array(np.array([-1, n_flat], dtype=np.int64)),
            ),
            helper.make_node("Reshape", [last, "shape"], ["f"]),
            helper.make_node(
                "Gemm", ["f", "w3", "b3"], ["y"], alpha=1.0, beta=1.0, transA=0, transB=0
            ),
        ]
        for i, node in enumerate(nodes):  # OMLT keys nodes by name
            node.name = f"{node.op_type.lower()}{i}"
        graph = helper.make_graph(
            nodes,
            "cnn",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 16, 16])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
            [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, path)
        return [(0.0, 1.0)] * 256

    return write


def mnist_ball(path: Path) -> list[tuple[float, float]]:
    """The MNIST CNN of Xiao et al. (``examples/verify_mnist.py``: 4,804 ReLUs, untrained
    He-normal weights) over the eps = 0.1 ball of a random image, clipped to [0, 1]."""
    spec = importlib.util.spec_from_file_location("verify_mnist_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example  # its dataclasses look their module up
    spec.loader.exec_module(example)
    onnx.save(example.wk17a_onnx(0), path)
    image = np.random.default_rng(0).random(28 * 28)
    return list(zip(np.clip(image - 0.1, 0, 1).tolist(), np.clip(image + 0.1, 0, 1).tolist()))


NETWORKS = {
    "2-50-50-1": mlp([2, 50, 50, 1]),
    "2-200-200-200-1": mlp([2, 200, 200, 200, 1]),
    "2-500-500-1": mlp([2, 500, 500, 1]),
    "cnn 16x16 no pad": cnn(padded=False),
    "cnn 16x16 pad+maxpool": cnn(padded=True),
    "mnist cnn eps-ball": mnist_ball,
}


def build_nnrelax(path: Path, box) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel()
    m.nn = NNBlock(str(path), input_bounds=box)
    return m


def build_omlt(path: Path, box) -> pyo.ConcreteModel:
    from omlt import OmltBlock
    from omlt.io import load_onnx_neural_network
    from omlt.neuralnet import ReluBigMFormulation

    model = onnx.load(str(path))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    index = list(np.ndindex(*dims)) if len(dims) > 1 else range(len(box))  # OMLT's keys
    definition = load_onnx_neural_network(model, input_bounds=dict(zip(index, box)))
    m = pyo.ConcreteModel()
    m.nn = OmltBlock()
    m.nn.build_formulation(ReluBigMFormulation(definition))
    return m


def model_size(m: pyo.ConcreteModel) -> str:
    variables = list(m.component_data_objects(pyo.Var))
    binaries = sum(1 for v in variables if v.is_binary())
    constraints = sum(1 for _ in m.component_data_objects(pyo.Constraint, active=True))
    return f"{len(variables)}/{binaries}/{constraints}"


def measure(build, path: Path, box, repeats: int) -> tuple[float, float, pyo.ConcreteModel]:
    """Best build time over ``repeats``, the peak traced memory (MB) of one build, the model."""
    times, model = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        model = build(path, box)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    build(path, box)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return min(times), peak, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="builds per tool (best is kept)")
    args = parser.parse_args()
    header = (
        f"{'network':<22} {'nnrelax s':>10} {'omlt s':>9} {'speed-up':>9} {'nnrelax MB':>11} "
        f"{'omlt MB':>8} {'nnrelax vars/bin/cons':>22} {'omlt vars/bin/cons':>20}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name, write in NETWORKS.items():
            path = Path(tmp) / f"{name.replace(' ', '_')}.onnx"
            box = write(path)
            t_ours, mb_ours, ours = measure(build_nnrelax, path, box, args.repeats)
            row = f"{name:<22} {t_ours:>10.3f} "
            try:
                t_omlt, mb_omlt, theirs = measure(build_omlt, path, box, args.repeats)
            except Exception as exc:  # OMLT cannot read this network: say why
                why = (str(exc).strip().splitlines() or [""])[-1][:70]
                print(
                    f"{row}{'-':>9} {'-':>9} {mb_ours:>11.1f} {'-':>8} {model_size(ours):>22}"
                    f"   OMLT: {type(exc).__name__}: {why}"
                )
                continue
            print(
                f"{row}{t_omlt:>9.3f} {t_omlt / t_ours:>8.1f}x {mb_ours:>11.1f} {mb_omlt:>8.1f} "
                f"{model_size(ours):>22} {model_size(theirs):>20}"
            )


if __name__ == "__main__":
    main()
