"""The paper's experiment grid: train one network per (regularizer, lambda, seed), measure it.

Every run is a :class:`RunConfig` executed by :func:`run_config`, a top-level function of
picklable arguments, so any ``concurrent.futures.Executor`` can run the grid: a local process
pool or a ``dask.distributed`` cluster (``Client(address).get_executor()``).  Runs read the
data file themselves, so remote workers need the same path.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .box import InputBox, expand_pairs, resolve_box
from .training.regularizers import (
    L1,
    L2,
    BoundWidth,
    LPGap,
    Regularizer,
    ReLUStability,
    StableNeuron,
)

REGULARIZERS: dict[str, Callable[[str], Regularizer]] = {
    "bw": lambda sense: BoundWidth(),
    "lp": lambda sense: LPGap(sense=sense),
    "sn": lambda sense: StableNeuron(),
    "rs": lambda sense: ReLUStability(),
    "l1": lambda sense: L1(),
    "l2": lambda sense: L2(),
}
NO_REGULARIZER = "none"


def parse_regularizer(spec: str, sense: str = "min") -> Regularizer | None:
    """A regularizer from a spec such as ``"bw"``, ``"bw+lp"`` or ``"0.5*bw+lp"``.

    ``"none"`` gives None.  Names: bw (bound width), lp (LP gap, optimisation ``sense``),
    sn (stable neuron), rs (ReLU stability), l1, l2.  Raises ValueError naming the allowed
    names on anything else.
    """
    text = spec.strip().lower()
    if text == NO_REGULARIZER:
        return None
    allowed = ", ".join([*REGULARIZERS, NO_REGULARIZER])
    total: Regularizer | None = None
    for term in text.split("+"):
        weight_text, _, name = term.strip().rpartition("*")
        name = name.strip()
        if name not in REGULARIZERS:
            raise ValueError(f"unknown regularizer {name!r} in {spec!r}; allowed: {allowed}")
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
        except ValueError:
            raise ValueError(
                f"bad weight {weight_text.strip()!r} in regularizer {spec!r}"
            ) from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(
                f"regularizer weights must be positive numbers, got {weight} in {spec!r}"
            )
        part = weight * REGULARIZERS[name](sense)
        total = part if total is None else total + part
    return total


@dataclass(frozen=True)
class RunConfig:
    """One run of the grid.

    Attributes
    ----------
    data : str
        ``.npz`` (arrays X, y) or ``.csv`` file, read by :func:`read_data`.
    regularizer : str
        A spec for :func:`parse_regularizer`.
    lam, seed, epochs :
        Regularizer weight, seed of the initial weights (with ``arch``) and of the trainer.
    model, arch : str or None
        Start from an ONNX file, or from ``Network.mlp(arch, seed)``; exactly one is given.
    input_bounds : tuple of (lo, hi), optional
        The MILP's input box; default the model's stored box, else the data's bounding box.
    targets : int
        Target columns of a CSV file.
    val_fraction, test_fraction : float
        Held-out shares of the data; the split is the same for every run (seed 0).
    milp_time_limit : float or None
        Seconds for the MILP of :func:`~pyomo_nnrelax.measure.difficulty`; None skips it.
    """

    data: str
    regularizer: str
    lam: float
    seed: int
    epochs: int
    model: str | None = None
    arch: tuple[int, ...] | None = None
    input_bounds: tuple[tuple[float, float], ...] | None = None
    targets: int = 1
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    batch_size: int = 64
    lr: float = 1e-3
    sense: str = "min"
    milp_time_limit: float | None = 60.0

    def __post_init__(self) -> None:
        if (self.model is None) == (self.arch is None):
            raise ValueError("a run starts from exactly one of model (ONNX file) and arch")
        parse_regularizer(self.regularizer, self.sense)

    def label(self) -> dict[str, Any]:
        """The columns that identify the run in the results table."""
        row = asdict(self)
        row["arch"] = "-".join(map(str, self.arch)) if self.arch else None
        row["input_bounds"] = None if self.input_bounds is None else str(list(self.input_bounds))
        return row


def grid(
    base: dict[str, Any], regularizers: Sequence[str], lams: Sequence[float], seeds: Sequence[int]
) -> list[RunConfig]:
    """Every (regularizer, lam, seed) combination; the unregularized run once per seed (lam 0).

    ``base`` holds the other :class:`RunConfig` fields.
    """
    configs = []
    for spec in regularizers:
        weights = [0.0] if spec.strip().lower() == NO_REGULARIZER else lams
        for lam in weights:
            for seed in seeds:
                configs.append(RunConfig(regularizer=spec, lam=float(lam), seed=int(seed), **base))
    return configs


def read_data(path: str | os.PathLike, targets: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Inputs X (n, d) and targets y (n, targets) from ``.npz`` (arrays X, y) or ``.csv``.

    In a CSV file the last ``targets`` columns are the targets; a first row that is not
    numeric is taken as a header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {os.fspath(path)} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as archive:
            missing = {"X", "y"} - set(archive.files)
            if missing:
                raise ValueError(
                    f"{path}: arrays {sorted(missing)} missing; it holds {archive.files}"
                )
            X, y = archive["X"].astype(np.float64), archive["y"].astype(np.float64)
        return X, y.reshape(len(y), -1)
    if suffix != ".csv":
        raise ValueError(f"{path}: data must be a .npz or .csv file")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if lines and not _numeric_row(lines[0]):
        lines = lines[1:]
    try:
        table = np.array([[float(v) for v in line.split(",")] for line in lines], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric value in the data ({exc})") from None
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] <= targets:
        raise ValueError(
            f"{path}: need rows of at least {targets + 1} comma-separated numbers "
            f"(inputs, then {targets} target column(s))"
        )
    return table[:, :-targets], table[:, -targets:]


def _numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


def split_data(
    X: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """A shuffled (train, validation, test) split of (X, y); each part keeps at least one row."""
    n = len(X)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n_val < 1 or n_test < 1 or n - n_val - n_test < 1:
        raise ValueError(
            f"{n} samples cannot be split into training, validation ({val_fraction}) and "
            f"test ({test_fraction}) parts"
        )
    order = np.random.default_rng(seed).permutation(n)
    parts = np.split(order, [n - n_val - n_test, n - n_test])
    return tuple((X[rows], y[rows]) for rows in parts)


def input_box(network, pairs, X: np.ndarray | None = None) -> InputBox:
    """The input box: ``pairs`` (--input-bounds, one pair standing for every input), else the
    model's stored box, else the data's (when given); see :func:`~pyomo_nnrelax.box.resolve_box`."""
    given = None if pairs is None else expand_pairs(pairs, network.n_inputs)
    return resolve_box(given, network, X)


def run_config(config: RunConfig) -> dict[str, Any]:
    """Train one network of the grid and measure its test error and MILP difficulty.

    Returns the config's columns plus ``test_mse``, ``test_rmse``, ``val_loss``,
    ``best_epoch``, ``train_seconds`` and the columns of :meth:`Difficulty.as_dict`
    (``unstable``, ``lp_gap``, ``milp_seconds``, ...).
    """
    from .measure import difficulty
    from .network import Network
    from .onnx import read_onnx
    from .training import Trainer

    X, y = read_data(config.data, config.targets)
    train, val, test = split_data(X, y, config.val_fraction, config.test_fraction)
    if config.model is not None:
        network = read_onnx(config.model)
    else:
        network = Network.mlp(config.arch, seed=config.seed)
    box = input_box(network, config.input_bounds, X)
    trainer = Trainer(
        network,
        *train,
        input_bounds=box,
        validation=val,
        regularizer=parse_regularizer(config.regularizer, config.sense),
        lam=config.lam,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
    )
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    mse = float(np.mean((result.network.forward(test[0]) - test[1]) ** 2))
    measured = difficulty(result.network, box, config.sense, milp_time_limit=config.milp_time_limit)
    return {
        **config.label(),
        "test_mse": mse,
        "test_rmse": math.sqrt(mse),
        "val_loss": result.history[-1].val_loss if result.history else None,
        "best_epoch": result.best_epoch,
        "train_seconds": seconds,
        **measured.as_dict(),
    }


def run_sweep(
    configs: Iterable[RunConfig],
    executor: Executor,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every config on ``executor``; rows in config order.

    A run that raises gives a row with its config and an ``error`` column instead of stopping
    the sweep.  ``progress`` is called with each row as its run finishes.
    """
    configs = list(configs)
    futures = {executor.submit(run_config, c): i for i, c in enumerate(configs)}
    rows: list[dict[str, Any]] = [{} for _ in configs]
    for future in as_completed(futures):
        i = futures[future]
        try:
            rows[i] = future.result()
        except Exception as exc:  # a failed run is a result of the sweep, not its end
            rows[i] = {**configs[i].label(), "error": f"{type(exc).__name__}: {exc}"}
        if progress is not None:
            progress(rows[i])
    return rows


def pareto_mask(errors: Sequence[float], times: Sequence[float]) -> np.ndarray:
    """True for the points no other point beats in both error and time (both minimised).

    Points with a NaN coordinate are never on the front.
    """
    e, t = np.asarray(errors, dtype=np.float64), np.asarray(times, dtype=np.float64)
    finite = np.isfinite(e) & np.isfinite(t)
    mask = finite.copy()
    for i in np.flatnonzero(finite):
        no_worse = finite & (e <= e[i]) & (t <= t[i])
        better = (e < e[i]) | (t < t[i])
        mask[i] = not np.any(no_worse & better)
    return mask
