"""Parallelism is something the caller asks for: an executor of theirs, or ``workers=N``.

Nothing in the package starts processes unless asked: a process pool that spawns workers
re-runs the caller's script in every worker, which breaks plain scripts without an
``if __name__ == "__main__":`` guard, notebooks and ``python -c``.  By default every solve
runs in the calling process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .checks import positive_int
from .errors import ParallelError


def available_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_executor(
    executor: Executor | None, workers: int | None
) -> tuple[Executor | None, Callable[[], None]]:
    """Where to run: the caller's ``executor``, a new pool of ``workers`` spawned processes
    (``-1``: one per CPU), or ``None`` (this process, the default).  Returns the executor and
    a function that releases what was created here.
    """
    if executor is not None and workers is not None:
        raise ValueError("pass executor= or workers=, not both")
    if executor is not None:
        if not isinstance(executor, Executor):
            raise ValueError(
                f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}"
            )
        return executor, _nothing
    if workers is None:
        return None, _nothing
    if workers == -1:
        workers = available_cpus()
    workers = positive_int("workers", workers)
    if workers == 1:
        return None, _nothing
    pool = ProcessPoolExecutor(workers, mp_context=spawn_context(), initializer=worker_setup)
    return pool, pool.shutdown


def gather(futures: Iterable[Future]) -> list:
    """The futures' results in order; a broken process pool raises :class:`ParallelError`
    saying why it usually breaks."""
    try:
        return [future.result() for future in futures]
    except BrokenProcessPool as exc:
        raise ParallelError(
            "a worker process of the pool died before finishing its task. Worker processes "
            "are spawned and import the main script again: a script that starts parallel work "
            'must do so under `if __name__ == "__main__":`, and work defined in a notebook or '
            "with `python -c` cannot be sent to spawned workers (run without workers=/executor=, "
            f"or use a thread pool or dask). ({type(exc).__name__}: {exc})"
        ) from exc


def _nothing() -> None:
    return None


def worker_setup() -> None:
    """Initializer of the worker processes the package starts.

    Ctrl-C (which a terminal sends to the whole process group) ends a worker's task, or the
    worker when it is idle, without a traceback; the parent reports the interrupt.  A worker
    whose parent was killed outright (SIGKILL) ends too: it would otherwise wait forever for
    work on a queue it holds both ends of.  Use with :func:`spawn_context`, whose processes
    ignore Ctrl-C until this runs.
    """
    signal.signal(signal.SIGINT, _exit_on_interrupt)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_on_interrupt(signum, frame) -> None:
    # SystemExit, not os._exit: the worker's semaphores (Pyomo makes one on import) are
    # released, else multiprocessing's resource tracker warns about them on stderr
    raise SystemExit(130)


def _exit_with(sentinel) -> None:
    """Wait for the parent's sentinel (ready when the parent process has ended), then exit."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


class _SpawnProcess(multiprocessing.context.SpawnProcess):
    """A spawned process that starts with Ctrl-C ignored (until :func:`worker_setup`), so
    that an interrupt while its interpreter starts is no fatal-error traceback."""

    def start(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return super().start()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the child
        try:
            return super().start()
        finally:
            signal.signal(signal.SIGINT, previous)


class _SpawnContext(multiprocessing.context.SpawnContext):
    Process = _SpawnProcess


def spawn_context() -> multiprocessing.context.SpawnContext:
    """The ``spawn`` context of the package's process pools (see :func:`worker_setup`)."""
    return _SpawnContext()
