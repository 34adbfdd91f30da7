"""Defaults run in this process, so a plain script (no ``__main__`` guard), a notebook and
``python -c`` all work; a pool the caller asks for that breaks raises the package's own error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pyomo_nnrelax import Network, NNRelaxError, ParallelError, tighten_bounds
from pyomo_nnrelax.parallel import resolve_executor
from tests.support.arrangements import exact_extremes

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import pyomo.environ as pyo
    from pyomo_nnrelax import NNBlock, Network, tighten_bounds

    net = Network.mlp([2, 16, 16, 1], seed=0)
    box = [(-2, 2), (-2, 2)]
    m = pyo.ConcreteModel()
    m.nn = NNBlock(net, input_bounds=box, bounds="milp"{options})
    bounds = tighten_bounds(net, input_bounds=box, method="milp"{options})
    print("RAN", m.nn.bounds.unstable_count(net), bounds.unstable_count(net))
    """
)


def exact_ranges(net: Network, box) -> list[tuple[np.ndarray, np.ndarray]]:
    """The exact range of every pre-activation of the first two layers of a two-input network
    over the box: the first layer's is its interval (a linear function of the box), the
    second's the extremes over the vertices of the first layer's line arrangement."""
    (lo, hi), (first, second) = np.array(box, dtype=float).T, net.layers[:2]
    w, b = first.weight, first.bias
    ranges = [(np.minimum(w * lo, w * hi).sum(1) + b, np.maximum(w * lo, w * hi).sum(1) + b)]
    ranges.append(exact_extremes(w, b, second.weight, second.bias, lo, hi))
    return ranges


def exact_unstable_count(net: Network, box) -> int:
    """ReLU neurons of the first two layers whose exact range holds zero inside it (none has
    an end within 1e-4 of zero, where MILP-tightened bounds could count it either way)."""
    count = 0
    for low, high in exact_ranges(net, box):
        assert np.all(np.minimum(np.abs(low), np.abs(high)) > 1e-4)
        count += int(np.count_nonzero((low < 0) & (high > 0)))
    return count


def printed_counts(stdout: str) -> list[int]:
    (line,) = [line for line in stdout.splitlines() if line.startswith("RAN")]
    return [int(v) for v in line.split()[1:]]


def run_script(tmp_path, options: str = "") -> subprocess.CompletedProcess:
    script = tmp_path / "plain_script.py"  # no `if __name__ == "__main__":` guard
    script.write_text(SCRIPT.format(options=options))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )


@pytest.mark.slow
def test_milp_tightening_by_default_runs_in_a_plain_script_once(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("RAN") == 1  # the script ran once, not again in workers
    expected = exact_unstable_count(Network.mlp([2, 16, 16, 1], seed=0), [(-2, 2), (-2, 2)])
    assert printed_counts(result.stdout) == [expected, expected]


@pytest.mark.slow
def test_the_same_code_runs_under_python_c():
    code = SCRIPT.format(options="")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    expected = exact_unstable_count(Network.mlp([2, 16, 16, 1], seed=0), [(-2, 2), (-2, 2)])
    assert printed_counts(result.stdout) == [expected, expected]


@pytest.mark.slow
def test_a_pool_asked_for_in_a_script_without_main_guard_raises_a_clear_error(tmp_path):
    result = run_script(tmp_path, options=", workers=2")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pyomo_nnrelax.errors.ParallelError")
    assert 'if __name__ == "__main__":' in last


def test_workers_and_executors_give_the_serial_bounds():
    net = Network.mlp([2, 12, 12, 1], seed=1)
    box = [(-2, 2), (-2, 2)]
    serial = tighten_bounds(net, input_bounds=box, method="milp")
    with ThreadPoolExecutor(2) as pool:
        threaded = tighten_bounds(net, input_bounds=box, method="milp", executor=pool)
    for a, b in zip(serial.lower + serial.upper, threaded.lower + threaded.upper):
        np.testing.assert_allclose(a, b, atol=1e-9)
    for l, (low, high) in enumerate(exact_ranges(net, box)):  # valid, and as decisive
        assert np.all(serial.lower[l] <= low + 1e-9) and np.all(serial.upper[l] >= high - 1e-9)
        exact_unstable = (low < 0) & (high > 0)
        np.testing.assert_array_equal((serial.lower[l] < 0) & (serial.upper[l] > 0), exact_unstable)


def test_executor_and_workers_are_exclusive_and_checked():
    with pytest.raises(ValueError, match="not both"):
        resolve_executor(ThreadPoolExecutor(1), 2)
    with pytest.raises(ValueError, match="workers must be an integer"):
        resolve_executor(None, 0)
    assert resolve_executor(None, None)[0] is None and resolve_executor(None, 1)[0] is None
    assert issubclass(ParallelError, NNRelaxError)


ORPHAN_SCRIPT = """
import multiprocessing, os, signal
from concurrent.futures import ProcessPoolExecutor
from pyomo_nnrelax.parallel import worker_setup
if __name__ == "__main__":
    spawn = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(1, mp_context=spawn, initializer=worker_setup)
    print(pool.submit(os.getpid).result(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_an_idle_worker_ends_when_its_parent_is_killed(tmp_path):
    # regression: a spawned worker waits for work on a queue it holds both ends of, so after
    # `kill -9` of `nnrelax sweep` (or of a script using workers=) it stayed forever
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    worker = int(parent.stdout.readline())
    parent.wait()
    try:
        for _ in range(300):  # up to a minute; it ends within a second
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the worker outlived its killed parent")
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
