"""Optimisation-based bound tightening (OBBT) of pre-activation bounds (``docs/method.md``,
section 1).

Layer by layer, each neuron's pre-activation ``z`` is minimised and maximised over the big-M
LP relaxation ("lp") or the exact big-M MILP ("milp") of the layers before it, built with the
already tightened bounds of those layers.  Tighter bounds mean fewer unstable neurons (fewer
binaries) and smaller big-M constants.  Every bound kept is proven: an LP optimum, or a MILP
dual bound (never an incumbent); a failed or timed-out solve keeps the previous bound.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np

from .. import matrices
from ..bounds import NetworkBounds, interval_bounds, layer_interval, unstable_relus
from ..formulations.bigm import bigm_model
from ..formulations.matrix_model import MatrixModel
from ..network import Layer, Network
from ..options import TIGHTENING_METHODS, TighteningMethod, check_option
from ..parallel import available_cpus, gather, resolve_executor
from .highs import HighsModel

SERIAL = "serial"
MIN_PARALLEL_WORK = 8
"""MILPs a layer must have to solve before a ``workers=`` pool is used for it."""


def tighten_bounds(
    network: Network,
    bounds: NetworkBounds | None = None,
    method: TighteningMethod = "lp",
    *,
    input_bounds=None,
    time_limit: float | None = None,
    executor: Executor | str | None = None,
    workers: int | None = None,
    chunks: int | None = None,
    rounding: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> NetworkBounds:
    """Tighten every layer's pre-activation bounds by solving LPs or MILPs.

    Layer 0 keeps its interval bounds (exact for one affine map over a box).  For each later
    layer, interval bounds from the tightened previous layer are applied first; then stable
    ReLU neurons get no solve, and an unstable one is minimised first, maximised only if the
    minimum did not prove it stable.  Linear layers get both solves.  "milp" first runs the LP
    pass, then MILPs only for the neurons still unstable, with HiGHS's ``objective_bound``
    cut-off at 0 so that a proof of stability ends the solve early.

    Parameters
    ----------
    network : Network
    bounds : NetworkBounds, optional
        Bounds to start from (intersected with interval bounds over their box).  Default:
        interval bounds over ``input_bounds``.
    method : {"lp", "milp"}
    input_bounds : input box, optional
        Only when ``bounds`` is None; defaults to the network's own input bounds.
    time_limit : float, optional
        Seconds per solve.
    executor : concurrent.futures.Executor, optional
        Run every layer's solves on this executor, in ``chunks`` chunks of neurons; each chunk
        loads the layer's model into HiGHS once and warm-starts from solve to solve.  Any
        executor works, e.g. a dask ``Client.get_executor()`` or a ``ProcessPoolExecutor``
        with the "spawn" or "forkserver" context (a forked child inherits HiGHS's thread pool
        without its threads and can hang).  Default (and ``"serial"``): in this process.
    workers : int, optional
        Instead of an executor: a pool of this many spawned processes (-1: one per CPU),
        made here and shut down at the end, for the MILP passes of layers with at least
        :data:`MIN_PARALLEL_WORK` neurons to solve (LPs take milliseconds, less than a
        worker's start-up, and run in this process).  Scripts that use it need an
        ``if __name__ == "__main__":`` guard.
    chunks : int, optional
        Chunks per layer (default: the number of CPUs).
    rounding : float
        Absolute outward rounding of every solved bound (guards against solver tolerances).
    progress : callable, optional
        Called as ``progress(layer, n_layers)`` after each layer.

    Returns
    -------
    NetworkBounds
        With ``method`` set to ``"lp"`` or ``"milp"``; never looser than the starting bounds.
    """
    _check_arguments(method, bounds, input_bounds, time_limit, executor, chunks, rounding)
    box = input_bounds if bounds is None else bounds.input_box
    start = interval_bounds(network, box)
    if bounds is not None:
        start = start.intersect(bounds)
    lower, upper = list(start.lower), list(start.upper)
    dispatch = _Dispatch(None if executor == SERIAL else executor, workers, chunks)
    exact = np.ones(network.layers[0].n_out, dtype=bool)  # one affine map over the box
    try:
        for l, layer in enumerate(network.layers):
            if l > 0:
                h_bounds = _bounds(start, lower, upper, method).post_activation(network, l - 1)
                z_lo, z_hi = layer_interval(layer, *h_bounds)
                lower[l] = np.maximum(lower[l], z_lo)
                upper[l] = np.minimum(upper[l], z_hi)
                copies, solved = _copies(layer, exact), np.zeros(layer.n_out, dtype=bool)
                for relax in (True,) if method == "lp" else (True, False):
                    todo = _to_tighten(layer, lower[l], upper[l], copies)
                    if not todo:
                        break
                    for neurons, _ in todo:
                        solved[neurons] = True
                    model = bigm_model(
                        network,
                        _bounds(start, lower, upper, method),
                        relax=relax,
                        stop=l + 1,
                        final_activation=False,
                    )
                    if not relax and not model.integer.any():
                        break  # no unstable neuron before layer l: the LP pass was this MILP
                    for neurons, relu in todo:
                        work = _Work(
                            model,
                            _objective_cols(model, l)[neurons],
                            lower[l][neurons],
                            upper[l][neurons],
                            relu,
                            not relax,
                            time_limit,
                            rounding,
                        )
                        lower[l][neurons], upper[l][neurons] = dispatch(work)
                exact = copies | solved
            if progress is not None:
                progress(l, len(network.layers))
    finally:
        dispatch.close()
    return _bounds(start, lower, upper, method)


def _check_arguments(method, bounds, input_bounds, time_limit, executor, chunks, rounding) -> None:
    check_option("method", method, TIGHTENING_METHODS)
    if bounds is not None and input_bounds is not None:
        raise ValueError("pass bounds or input_bounds, not both (bounds carry their input box)")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(
            f"time_limit must be a positive number of seconds or None, got {time_limit!r}"
        )
    if isinstance(executor, str) and executor != SERIAL:
        raise ValueError(f"executor must be an Executor, {SERIAL!r} or None, got {executor!r}")
    if chunks is not None and chunks < 1:
        raise ValueError(f"chunks must be a positive integer or None, got {chunks!r}")
    if not (np.isfinite(rounding) and rounding >= 0.0):
        raise ValueError(f"rounding must be a finite number >= 0, got {rounding!r}")


def _bounds(start: NetworkBounds, lower, upper, method: str) -> NetworkBounds:
    return NetworkBounds(start.input_lower, start.input_upper, tuple(lower), tuple(upper), method)


def _copies(layer: Layer, exact: np.ndarray) -> np.ndarray:
    """Neurons of ``layer`` that read at most one input, whose bounds are already as tight as
    the method makes them (``exact``): their interval bounds need no solve (the neurons a
    skip connection is carried by, the copies a LeakyReLU or a clip makes)."""
    single = matrices.row_nonzeros(layer.weight) <= 1
    return single & (matrices.row_nonzeros(layer.weight, columns=~exact) == 0)


def _to_tighten(layer: Layer, lower: np.ndarray, upper: np.ndarray, skip: np.ndarray):
    """The neurons of ``layer`` whose bounds matter, as (indices, has ReLU) pairs: unstable
    ReLUs (a stable one's sign is all a formulation needs) and every linear neuron, except
    the ``skip`` ones."""
    todo = [
        (np.flatnonzero(unstable_relus(layer, lower, upper) & ~skip), True),
        (np.flatnonzero(~layer.relu_mask & ~skip), False),
    ]
    return [(neurons, has_relu) for neurons, has_relu in todo if neurons.size]


def _objective_cols(model: MatrixModel, layer: int) -> np.ndarray:
    """Columns of ``z`` of the model's last layer (named ``outputs`` for the network's last)."""
    key = ("z", layer)
    return model.cols(*key) if key in model.var_groups else model.cols("outputs")


@dataclass(frozen=True)
class _Work:
    """One layer's solves: which columns to bound, their current bounds, and how to solve.

    ``mip`` solves the MILP (with a cut-off at 0 for ReLU neurons); ``relu`` skips the
    maximisation of a neuron whose minimum proved it stable-active.
    """

    model: MatrixModel
    cols: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    relu: bool
    mip: bool
    time_limit: float | None
    rounding: float

    def part(self, index: np.ndarray) -> _Work:
        return replace(
            self, cols=self.cols[index], lower=self.lower[index], upper=self.upper[index]
        )


def solve_work(work: _Work) -> tuple[np.ndarray, np.ndarray]:
    """Tightened (lower, upper) of ``work.cols``: one HiGHS model, one objective per solve."""
    cutoff = 0.0 if work.relu and work.mip else None
    options = {} if work.time_limit is None else {"time_limit": float(work.time_limit)}
    if cutoff is not None:
        options["objective_bound"] = cutoff
    highs = HighsModel(work.model, relax=not work.mip, **options)
    lower, upper = work.lower.copy(), work.upper.copy()
    for i, col in enumerate(work.cols):
        lower[i] = max(lower[i], _min_bound(highs, col, 1.0, cutoff) - work.rounding)
        if work.relu and lower[i] >= 0.0:
            continue
        upper[i] = min(upper[i], -_min_bound(highs, col, -1.0, cutoff) + work.rounding)
    return lower, upper


def _min_bound(highs: HighsModel, col: int, sign: float, cutoff: float | None) -> float:
    """A proven lower bound on ``min sign * x[col]``, or -inf when the solve proved nothing.

    With a cut-off ``c`` HiGHS prunes everything above ``c``, so only ``min(bound, c)`` is
    proven, and "Infeasible" means the minimum is at least ``c``.
    """
    highs.set_objective(np.array([col]), np.array([sign]))
    result = highs.solve()
    if cutoff is not None and result.status == "Infeasible":
        return cutoff
    if not np.isfinite(result.bound):
        return -np.inf
    return result.bound if cutoff is None else min(result.bound, cutoff)


class _Dispatch:
    """Runs a layer's :class:`_Work` in chunks: in this process, on the caller's executor, or
    (MILP passes of large layers only) on a ``workers=`` pool made here."""

    def __init__(self, executor: Executor | None, workers: int | None, chunks: int | None) -> None:
        self.own_pool = executor is None
        self.executor, self.close = resolve_executor(executor, workers)
        self.chunks = chunks or available_cpus()

    def __call__(self, work: _Work) -> tuple[np.ndarray, np.ndarray]:
        small = not work.mip or work.cols.size < MIN_PARALLEL_WORK
        if self.executor is None or (self.own_pool and small):
            return solve_work(work)
        n = min(self.chunks, work.cols.size)
        parts = [np.arange(k, work.cols.size, n) for k in range(n)]
        results = gather(self.executor.submit(solve_work, work.part(p)) for p in parts)
        lower, upper = work.lower.copy(), work.upper.copy()
        for p, (lo, hi) in zip(parts, results):
            lower[p], upper[p] = lo, hi
        return lower, upper
