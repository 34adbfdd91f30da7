"""Training data for a two-stage network: random first-stage decisions, each with one random
demand scenario and its realised second-stage cost, cached on disk and resumable.

    data = generate_samples(instance, 10000, cache_dir="cache")              # serial
    data = generate_samples(instance, 10000, cache_dir="cache", workers=2)    # a spawned pool
    data = generate_samples(instance, 10000, cache_dir="cache",
                            executor=Client(address).get_executor())          # dask

Sample ``k`` draws its decision and scenario from ``default_rng([seed, k])``: it is the same
whatever the chunking, the order of the work or the executor.  A decision opens each facility
with a probability ``p ~ U(0, 1)`` drawn per sample, so every number of open facilities is
about equally frequent (docs/method.md, section 6).

Samples are solved in chunks of ``chunk_size``; each finished chunk is written atomically
(:mod:`pyomo_nnrelax.files`) to ``<cache_dir>/cflp-<key>/chunk-<k>.npz``, ``<key>`` a hash
of the instance's numbers, the seed, the chunk size, the time limit and the sampling scheme.
A later call reads the chunks there and solves only the missing ones, so an interrupted run
resumes, and a call that asks for more samples extends the cache.  Workers only solve; the
calling process writes, so remote workers need no shared disk.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checks import positive_float, positive_int
from ..files import atomic_write, atomic_write_text
from ..parallel import gather, resolve_executor
from ..progress import progress_bar
from .cflp import CFLPInstance, recourse_cost

SAMPLING_VERSION = 1
"""Changes whenever the sampling scheme does, so that old caches are not read as new ones."""
DEFAULT_TIME_LIMIT = 60.0
"""Seconds per recourse MILP."""


@dataclass(frozen=True)
class Samples:
    """Decisions ``X`` (n, n_f), demands (n, n_c), realised second-stage costs (n,).

    ``optimal[k]`` is False where sample ``k``'s recourse MILP stopped at its time limit (its
    cost is then the incumbent's); ``seconds`` are solve times; ``solved`` counts the samples
    solved by this call (the rest came from the cache).
    """

    X: np.ndarray
    demands: np.ndarray
    costs: np.ndarray
    optimal: np.ndarray
    seconds: np.ndarray
    solved: int = 0

    @property
    def limit_hits(self) -> int:
        """Recourse solves stopped by their time limit."""
        return int(np.count_nonzero(~self.optimal))

    def __len__(self) -> int:
        return self.costs.size


def sample_decision(instance: CFLPInstance, seed: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``k``'s first-stage decision (n_f,) and demand scenario (n_c,)."""
    rng = np.random.default_rng([seed, k])
    y = (rng.random(instance.n_facilities) < rng.random()).astype(np.float64)
    return y, instance.sample_demands(1, rng)[0]


def solve_chunk(
    instance: CFLPInstance, seed: int, start: int, count: int, time_limit: float | None
) -> dict[str, np.ndarray]:
    """Samples ``start .. start + count - 1``, solved: what a worker runs."""
    X, D, costs, optimal, seconds = [], [], [], [], []
    for k in range(start, start + count):
        y, d = sample_decision(instance, seed, k)
        result = recourse_cost(instance, y, d, time_limit)
        X.append(y)
        D.append(d)
        costs.append(result.cost)
        optimal.append(result.optimal)
        seconds.append(result.seconds)
    return {
        "X": np.array(X).reshape(count, instance.n_facilities),
        "demands": np.array(D).reshape(count, instance.n_customers),
        "costs": np.array(costs, dtype=np.float64),
        "optimal": np.array(optimal, dtype=bool),
        "seconds": np.array(seconds, dtype=np.float64),
    }


def cache_key(instance: CFLPInstance, seed: int, chunk_size: int, time_limit: float | None) -> dict:
    """What the cached samples depend on (written beside them as ``parameters.json``)."""
    return {
        "instance": instance.describe(),
        "seed": int(seed),
        "chunk_size": int(chunk_size),
        "time_limit": time_limit,
        "sampling_version": SAMPLING_VERSION,
    }


def cache_folder(cache_dir: str | os.PathLike, key: dict) -> Path:
    """``<cache_dir>/cflp-<hash of key>``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"cflp-{digest}"


def generate_samples(
    instance: CFLPInstance,
    n: int,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    chunk_size: int = 250,
    executor: Executor | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Samples:
    """``n`` (decision, scenario, second-stage cost) samples of ``instance``.

    Parameters
    ----------
    instance : CFLPInstance
    n : int
        Samples wanted; with a cache, the first ``n`` of the cached sequence.
    seed : int
        Seed of the sample sequence (sample ``k`` uses ``default_rng([seed, k])``).
    cache_dir : path, optional
        Where chunks are kept (created if missing); None keeps nothing.
    time_limit : float or None
        Seconds per recourse MILP; hits are counted in ``Samples.limit_hits``.
    chunk_size : int
        Samples per task and per cache file.
    executor, workers :
        Where chunks are solved: any ``concurrent.futures.Executor`` (e.g. dask's
        ``Client.get_executor()``), or a spawned pool of ``workers`` processes (then the
        calling script needs an ``if __name__ == "__main__":`` guard); default: this process.
    progress : bool
        A progress bar over samples on stderr.
    """
    n = positive_int("n", n)
    chunk_size = positive_int("chunk_size", chunk_size)
    if not isinstance(instance, CFLPInstance):
        raise TypeError(f"instance must be a CFLPInstance, got {type(instance).__name__}")
    if time_limit is not None:
        time_limit = positive_float("time_limit", time_limit)
    folder = None
    if cache_dir is not None:
        key = cache_key(instance, seed, chunk_size, time_limit)
        folder = cache_folder(cache_dir, key)
        folder.mkdir(parents=True, exist_ok=True)
        parameters = folder / "parameters.json"
        if not parameters.exists():
            atomic_write_text(parameters, json.dumps(key, indent=2) + "\n")
    n_chunks = math.ceil(n / chunk_size)
    sizes = [min(chunk_size, n - c * chunk_size) for c in range(n_chunks)]
    chunks: dict[int, dict[str, np.ndarray]] = {}
    for c, size in enumerate(sizes):
        found = _read_chunk(folder, c, size) if folder is not None else None
        if found is not None:
            chunks[c] = found
    missing = [c for c in range(n_chunks) if c not in chunks]
    bar = progress_bar(n, "recourse MILPs", "sample", show=progress)
    bar.update(sum(sizes[c] for c in chunks))
    run, release = resolve_executor(executor, workers)
    try:
        # a chunk is solved whole (chunk_size samples) so that a later, larger n reuses it
        tasks = [(c, c * chunk_size, chunk_size) for c in missing]
        for c, values in _solve_all(run, instance, seed, tasks, time_limit):
            if folder is not None:
                _write_chunk(folder, c, values)
            chunks[c] = {k: v[: sizes[c]] for k, v in values.items()}
            bar.update(sizes[c])
            bar.show(limit_hits=int(sum(np.count_nonzero(~v["optimal"]) for v in chunks.values())))
    finally:
        release()
        bar.close()
    parts = [chunks[c] for c in range(n_chunks)]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Samples(**merged, solved=len(missing) * chunk_size)


def _solve_all(run: Executor | None, instance, seed, tasks, time_limit):
    """``(chunk, values)`` for every task, in the order they finish."""
    if run is None:
        for c, start, count in tasks:
            yield c, solve_chunk(instance, seed, start, count, time_limit)
        return
    futures = {
        run.submit(solve_chunk, instance, seed, start, count, time_limit): c
        for c, start, count in tasks
    }
    try:
        for future in as_completed(futures):
            yield futures[future], gather([future])[0]
    finally:
        for future in futures:
            future.cancel()


def _chunk_path(folder: Path, c: int) -> Path:
    return folder / f"chunk-{c:05d}.npz"


def _write_chunk(folder: Path, c: int, values: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **values)

    atomic_write(_chunk_path(folder, c), write)


def _read_chunk(folder: Path, c: int, size: int) -> dict[str, np.ndarray] | None:
    """Chunk ``c``'s first ``size`` samples from the cache, or None (missing or unreadable:
    an unreadable file is solved again, with a warning)."""
    path = _chunk_path(folder, c)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            values = {k: archive[k] for k in ("X", "demands", "costs", "optimal", "seconds")}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        warnings.warn(f"{path} is unreadable ({exc}); solving its samples again", stacklevel=3)
        return None
    if len(values["costs"]) < size:
        return None
    return {k: v[:size] for k, v in values.items()}
