"""Time and memory of reading a CNN from ONNX, by input size and channels.

The CNN is Conv(1->c, 3x3, pad 1) - Relu - Conv(c->c, 3x3, pad 1, stride 2) - Relu - Flatten -
Gemm(->10) on a 1xNxN image, with random float32 weights.  Per row: the median read time of
``--repeats`` reads, the peak of Python's allocations (tracemalloc) during one more read, and
the stored entries (nonzeros and tied zeros) of each folded layer, with ``s`` for a sparse
layer and ``d`` for a dense one.  To measure another version of the reader, run the script
with that version first on ``PYTHONPATH``.

    python benchmarks/read_memory.py [--sizes 8 16 28] [--channels 4 8 16 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pyomo_nnrelax import read_onnx


def write_cnn(path: Path, size: int, channels: int) -> None:
    """The CNN of the module docstring on a 1 x size x size input, saved at ``path``."""
    rng = np.random.default_rng(0)
    n_flat = channels * ((size + 1) // 2) ** 2
    inits = {
        "w1": rng.normal(0, np.sqrt(2 / 9), (channels, 1, 3, 3)),
        "b1": rng.normal(0, 0.1, channels),
        "w2": rng.normal(0, np.sqrt(2 / (9 * channels)), (channels, channels, 3, 3)),
        "b2": rng.normal(0, 0.1, channels),
        "w3": rng.normal(0, np.sqrt(1 / n_flat), (10, n_flat)),
        "b3": np.zeros(10),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def stored(layer) -> str:
    """A layer's stored entries and form: ``12345s`` (sparse) or ``12345d`` (dense nonzeros)."""
    weight = layer.weight
    if hasattr(weight, "nnz"):
        return f"{weight.nnz}s"
    return f"{np.count_nonzero(weight)}d"


def measure(path: Path, repeats: int) -> tuple[float, float, list[str]]:
    """Median read time (s), peak traced memory (MiB) of one read, each layer's entries."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        network = read_onnx(path)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    read_onnx(path)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), peak, [stored(layer) for layer in network.layers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 28])
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3, help="reads timed (median kept)")
    args = parser.parse_args()
    header = f"{'input':>7} {'channels':>8} {'read s':>8} {'peak MiB':>9}  stored entries per layer"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for channels in args.channels:
                path = Path(tmp) / f"cnn_{size}_{channels}.onnx"
                write_cnn(path, size, channels)
                seconds, peak, entries = measure(path, args.repeats)
                print(
                    f"{f'{size}x{size}':>7} {channels:>8} {seconds:>8.3f} {peak:>9.1f}  "
                    + " ".join(entries)
                )


if __name__ == "__main__":
    main()
