"""Verify a small CNN's robustness on scikit-learn's 8x8 digits, without and with stabilising
regularizers, by MILP.

    python examples/verify_digits.py            # about 15 minutes on 2 cores
    python examples/verify_digits.py --quick    # seconds (what the test suite runs)

1. The digits (1,797 images bundled with scikit-learn, no download; pixels scaled to [0, 1]),
   split 1,437 / 360.  A CNN as a user would export it to ONNX: Conv(1->8, 3x3, stride 2,
   pad 1) - Relu - Conv(8->16, 3x3, stride 2, pad 1) - Relu - Flatten - Gemm(64->10).
2. Train it four times with the package's numpy trainer (squared loss on one-hot labels;
   the convolutions keep their shared kernels): no regularizer; RS, the ReLU stability loss
   of Xiao et al. (2019); BW, the bound width; BW+LP, the bound width plus the LP gap bounded
   by the dual network.  Bounds are interval bounds over the whole pixel box [0, 1]^64.
3. For test images, the MILP verifies robustness in the L-infinity ball of radius eps: for
   every other class k, ``min f_true(x) - f_k(x)`` over the ball; the image is verified when
   every minimum is positive, and falsified when a MILP finds a negative one.  Reported:
   clean accuracy, verified accuracy, unstable neurons per image and verification time per
   image (median over the images), with and without regularization.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pyomo.environ as pyo
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits

from pyomo_nnrelax import (
    InputBox,
    NNBlock,
    Trainer,
    interval_bounds,
    read_onnx,
    solve_model,
    write_onnx,
)
from pyomo_nnrelax.training import BoundWidth, LPGap, ReLUStability

PIXELS = InputBox(lower=np.zeros(64), upper=np.ones(64))


def cnn_onnx(seed: int) -> onnx.ModelProto:
    """The untrained CNN (He-normal weights) as an ONNX graph, as a training script exports it."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv1.weight": rng.normal(0, np.sqrt(2 / 9), (8, 1, 3, 3)),
        "conv1.bias": np.zeros(8),
        "conv2.weight": rng.normal(0, np.sqrt(2 / 72), (16, 8, 3, 3)),
        "conv2.bias": np.zeros(16),
        "fc.weight": rng.normal(0, np.sqrt(1 / 64), (10, 64)),
        "fc.bias": np.zeros(10),
    }
    conv = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def regularizers(lp_samples: int) -> dict[str, tuple[object, float]]:
    """Name -> (regularizer, lambda); the lambdas keep clean accuracy within about 2 points."""
    return {
        "none": (None, 0.0),
        "RS": (ReLUStability(), 0.1),
        "BW": (BoundWidth(), 0.05),
        "BW+LP": (BoundWidth() + LPGap(samples=lp_samples, gap_method="dual_network"), 0.05),
    }


def verify(path: Path, x: np.ndarray, label: int, eps: float, time_limit: float) -> dict:
    """Verify one image by MILP: the margins ``f_label - f_k`` over the eps-ball in [0, 1]^64."""
    ball = InputBox(lower=np.maximum(x - eps, 0.0), upper=np.minimum(x + eps, 1.0))
    start = time.perf_counter()
    m = pyo.ConcreteModel()
    m.nn = NNBlock(str(path), input_bounds=ball)
    unstable = m.nn.bounds.unstable_count(m.nn.network)
    status, error = "verified", 0.0
    for k in range(10):
        if k == label:
            continue
        m.obj = pyo.Objective(expr=m.nn.outputs[label] - m.nn.outputs[k], sense=pyo.minimize)
        stats = solve_model(m, time_limit=time_limit, load=True)
        m.del_component(m.obj)
        if np.isfinite(stats.objective):  # the MILP's point against onnxruntime
            error = max(error, m.nn.check().max_abs_error)
        if stats.objective < 0.0:  # a point of the ball classified as k (or tied)
            status = "falsified"
            break
        if not stats.optimal:
            status = "timeout"
            break
    return {
        "status": status,
        "seconds": time.perf_counter() - start,
        "unstable": unstable,
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--out", type=Path, help="keep the ONNX files here (default: a temp dir)")
    parser.add_argument(
        "--eps", type=float, default=0.05, help="L-infinity radius (pixels in [0,1])"
    )
    parser.add_argument("--images", type=int, default=20, help="test images to verify")
    parser.add_argument("--seed", type=int, default=0, help="split and initial weights")
    args = parser.parse_args()
    epochs, images, time_limit, lp_samples = (
        (3, 2, 10.0, 4) if args.quick else (60, args.images, 60.0, 16)
    )
    eps = min(args.eps, 0.02) if args.quick else args.eps
    digits = load_digits()
    X, labels = digits.data / 16.0, digits.target
    order = np.random.default_rng(args.seed).permutation(len(X))
    train, test = order[:1437], order[1437:]
    Y = np.eye(10)[labels]
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="nnrelax_digits_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    start_path = out_dir / "digits_cnn.onnx"
    onnx.save(cnn_onnx(args.seed), start_path)
    network = read_onnx(start_path).with_input_bounds(PIXELS.lower, PIXELS.upper)
    print(
        f"read {start_path.name}: {network}; convolution kernels shared: "
        f"{[layer.tie is not None for layer in network.layers]}\n"
    )
    rows = []
    for name, (regularizer, lam) in regularizers(lp_samples).items():
        started = time.perf_counter()
        trainer = Trainer(
            network,
            X[train],
            Y[train],
            validation=(X[test], Y[test]),
            epochs=epochs,
            lr=3e-3,
            seed=args.seed,
            regularizer=regularizer,
            lam=lam,
            scale_targets=False,
        )
        trained = trainer.fit().network
        train_seconds = time.perf_counter() - started
        path = out_dir / f"digits_cnn_{name.replace('+', '_').lower()}.onnx"
        write_onnx(trained, path, dtype="float64", overwrite=True)
        accuracy = float((trained.forward(X[test]).argmax(axis=1) == labels[test]).mean())
        results = [verify(path, X[i], int(labels[i]), eps, time_limit) for i in test[:images]]
        correct = trained.forward(X[test[:images]]).argmax(axis=1) == labels[test[:images]]
        verified = [r["status"] == "verified" and ok for r, ok in zip(results, correct)]
        rows.append(
            (
                name,
                lam,
                accuracy,
                np.mean(verified),
                results,
                train_seconds,
                interval_bounds(trained, PIXELS).unstable_count(trained),
            )
        )
    print(
        f"eps = {eps:g}, {images} test images, MILP time limit {time_limit:g} s per class, "
        f"{epochs} epochs (seed {args.seed})"
    )
    print(
        f"{'regularizer':<12}{'lambda':>7}{'clean acc':>10}{'verified':>9}{'falsified':>10}"
        f"{'timeouts':>9}{'unstable/img':>13}{'s/img':>8}{'speed-up':>9}{'train s':>8}"
    )
    base = None
    for name, lam, accuracy, verified, results, train_seconds, _ in rows:
        seconds = float(np.median([r["seconds"] for r in results]))
        base = base or seconds
        counts = {s: sum(r["status"] == s for r in results) for s in ("falsified", "timeout")}
        print(
            f"{name:<12}{lam:>7g}{accuracy:>10.3f}{verified:>9.3f}{counts['falsified']:>10}"
            f"{counts['timeout']:>9}{np.median([r['unstable'] for r in results]):>13.0f}"
            f"{seconds:>8.3f}{base / seconds:>8.1f}x{train_seconds:>8.1f}"
        )
    errors = [r["error"] for row in rows for r in row[4]]
    print(
        f"\ncheck of every MILP's point against onnxruntime: max |difference| = "
        f"{max(errors, default=np.nan):.2e}"
    )


if __name__ == "__main__":
    main()
