"""The paper's experiment grid: train one network per (regularizer, lambda, seed), measure it.

Every run is a :class:`RunConfig` executed by :func:`run_config`, a top-level function of
picklable arguments, so any ``concurrent.futures.Executor`` can run the grid: a local process
pool or a ``dask.distributed`` cluster (``Client(address).get_executor()``).  Runs read the
data file themselves, so remote workers need the same path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .box import expand_pairs, resolve_box
from .data import read_data, split_data
from .measure import difficulty
from .network import Network
from .onnx import read_onnx
from .options import GapMethod
from .training import Trainer
from .training.specs import NO_REGULARIZER, parse_regularizer


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
    sense : str
        The downstream MILP's sense, for the LP-gap term and the measurement.
    gap_method : {"dual_network", "exact_lp"}
        How an ``lp`` term bounds the LP relaxation (:class:`LPGap` ``gap_method``): the dual
        network, as :func:`refine` does, or the exact LPs.
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
    gap_method: GapMethod = "dual_network"
    milp_time_limit: float | None = 60.0

    def __post_init__(self) -> None:
        if (self.model is None) == (self.arch is None):
            raise ValueError("a run starts from exactly one of model (ONNX file) and arch")
        parse_regularizer(self.regularizer, self.sense, self.gap_method)

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


def run_config(config: RunConfig) -> dict[str, Any]:
    """Train one network of the grid and measure its test error and MILP difficulty.

    Returns the config's columns plus ``test_mse``, ``test_rmse``, ``val_loss``,
    ``best_epoch``, ``train_seconds`` and the columns of :meth:`Difficulty.as_dict`
    (``unstable``, ``lp_gap``, ``milp_seconds``, ...).
    """
    X, y = read_data(config.data, config.targets)
    train, val, test = split_data(X, y, config.val_fraction, config.test_fraction)
    if config.model is not None:
        network = read_onnx(config.model)
    else:
        network = Network.mlp(config.arch, seed=config.seed)
    given = (
        None if config.input_bounds is None else expand_pairs(config.input_bounds, network.n_inputs)
    )
    box = resolve_box(given, network, X)
    trainer = Trainer(
        network,
        *train,
        input_bounds=box,
        validation=val,
        regularizer=parse_regularizer(config.regularizer, config.sense, config.gap_method),
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
