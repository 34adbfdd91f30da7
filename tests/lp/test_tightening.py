"""Bound tightening: validity on samples, never looser, MILP vs LP, executors, ONNX round trip."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Network, NetworkBounds, interval_bounds, tighten_bounds
from pyomo_nnrelax.onnx import read_stored_bounds, write_onnx
from tests.support import reference

NETWORKS = [([2, 10, 10, 1], 0), ([3, 8, 8, 8, 2], 1), ([4, 12, 8, 2], 2)]


def _box(n: int) -> InputBox:
    return InputBox(lower=-np.ones(n), upper=np.ones(n))


def _samples(n_inputs: int, seed: int, n: int = 5000) -> np.ndarray:
    """Uniform points of the box plus its corners (where interval-style bounds are attained)."""
    rng = np.random.default_rng(seed)
    corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * n_inputs)).reshape(n_inputs, -1).T
    return np.vstack([rng.uniform(-1, 1, size=(n, n_inputs)), corners])


def _widths(bounds: NetworkBounds) -> np.ndarray:
    return np.concatenate([u - l for l, u in zip(bounds.lower, bounds.upper)])


def _assert_within(inner: NetworkBounds, outer: NetworkBounds, tol: float = 1e-9) -> None:
    for lo_in, hi_in, lo_out, hi_out in zip(inner.lower, inner.upper, outer.lower, outer.upper):
        assert np.all(lo_in >= lo_out - tol) and np.all(hi_in <= hi_out + tol)


@pytest.fixture(scope="module", params=NETWORKS, ids=lambda p: str(p[0]))
def tightened(request):
    sizes, seed = request.param
    net = Network.mlp(sizes, seed=seed)
    box = _box(sizes[0])
    return (
        net,
        interval_bounds(net, box),
        tighten_bounds(net, input_bounds=box, method="lp", executor="serial"),
        tighten_bounds(net, input_bounds=box, method="milp", executor="serial"),
    )


def test_tightened_bounds_contain_samples_and_are_never_looser(tightened):
    net, ib, lp, milp = tightened
    X = _samples(net.n_inputs, seed=len(net.layers))
    for bounds, method in ((lp, "lp"), (milp, "milp")):
        assert bounds.method == method
        assert bounds.contains(net, X)
        _assert_within(bounds, ib)
        assert bounds.unstable_count(net) <= ib.unstable_count(net)
    _assert_within(milp, lp)
    assert np.all(_widths(milp) <= _widths(lp) + 1e-9)
    assert _widths(lp).sum() < _widths(ib).sum()


@pytest.mark.parametrize("sizes, seed", [([2, 5, 4, 1], 0), ([3, 4, 4, 2], 1)])
def test_milp_bounds_of_layer_1_equal_the_exact_range(sizes, seed):
    """Layer 1's pre-activation is ``W1 relu(W0 x + b0) + b1``; its exact range over the box
    comes from one LP per activation pattern of layer 0 (``reference.exact_one_layer_bounds``,
    scipy's linprog).  MILP bounds equal it to 1e-6 wherever the MILP solved both ends (the
    neurons it leaves unstable; a proof of stability stops a solve early), classify every
    neuron's stability as the exact range does, and interval and LP bounds contain it."""
    net = Network.mlp(sizes, seed=seed)
    box = _box(sizes[0])
    (w0, b0), (w1, b1) = [(layer.weight, layer.bias) for layer in net.layers[:2]]
    lo, hi = reference.exact_one_layer_bounds(w0, b0, w1, b1, *box)
    assert np.all(np.abs(np.r_[lo, hi]) > 1e-6)  # no range ends on 0, where stability is a tie
    methods = {
        "interval": interval_bounds(net, box),
        "lp": tighten_bounds(net, input_bounds=box, method="lp", executor="serial"),
        "milp": tighten_bounds(net, input_bounds=box, method="milp", executor="serial"),
    }
    for bounds in methods.values():
        assert np.all(bounds.lower[1] <= lo + 1e-9) and np.all(bounds.upper[1] >= hi - 1e-9)
    milp = methods["milp"]
    exact_stability = np.where(lo >= 0, 1, np.where(hi <= 0, -1, 0))
    np.testing.assert_array_equal(milp.stability(1), exact_stability)
    solved = milp.stability(1) == 0
    assert solved.sum() >= 2
    np.testing.assert_allclose(milp.lower[1][solved], lo[solved], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(milp.upper[1][solved], hi[solved], rtol=1e-6, atol=1e-6)
    # the bound is exact, not merely valid: the LP bounds of these neurons are looser
    lp = methods["lp"]
    assert np.any(lp.upper[1][solved] - hi[solved] > 1e-3) or np.any(
        lo[solved] - lp.lower[1][solved] > 1e-3
    )


def test_time_limited_milp_stays_valid():
    net = Network.mlp([2, 30, 30, 30, 1], seed=3)
    box = InputBox(lower=-2 * np.ones(2), upper=2 * np.ones(2))
    bounds = tighten_bounds(
        net, input_bounds=box, method="milp", time_limit=0.01, executor="serial"
    )
    rng = np.random.default_rng(0)
    assert bounds.contains(net, rng.uniform(-2, 2, size=(5000, 2)))
    _assert_within(bounds, interval_bounds(net, box))


def test_starting_bounds_and_rounding():
    net = Network.mlp([3, 8, 8, 1], seed=4)
    start = interval_bounds(net, _box(3))
    plain = tighten_bounds(net, start, executor="serial")
    rounded = tighten_bounds(net, start, executor="serial", rounding=1e-3)
    _assert_within(plain, rounded)
    _assert_within(rounded, start)
    assert (_widths(rounded) > _widths(plain) + 1e-4).any()  # rounding= widens some bounds
    again = tighten_bounds(net, plain, executor="serial")
    _assert_within(plain, again)  # tightening is idempotent: nothing left to gain


@pytest.mark.slow
def test_serial_and_process_pool_agree():
    net = Network.mlp([3, 12, 12, 1], seed=5)
    box = _box(3)
    serial = tighten_bounds(net, input_bounds=box, method="milp", executor="serial")
    # a forked child inherits HiGHS's thread pool without its threads and can hang: spawn
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pooled = tighten_bounds(net, input_bounds=box, method="milp", executor=pool)
    default = tighten_bounds(net, input_bounds=box, method="milp")
    for other in (pooled, default):
        for a, b in zip(serial.lower + serial.upper, other.lower + other.upper):
            np.testing.assert_allclose(a, b, atol=1e-7)


@pytest.mark.slow
def test_dask_executor():
    import distributed

    net = Network.mlp([3, 10, 10, 1], seed=6)
    serial = tighten_bounds(net, input_bounds=_box(3), executor="serial")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2) as client:
        dasked = tighten_bounds(net, input_bounds=_box(3), executor=client.get_executor(), chunks=2)
    for a, b in zip(serial.lower + serial.upper, dasked.lower + dasked.upper):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_tightened_bounds_round_trip_through_onnx_metadata(tmp_path):
    net = Network.mlp([2, 6, 6, 1], seed=7).with_input_bounds(*_box(2))
    bounds = tighten_bounds(net, executor="serial")
    path = tmp_path / "net.onnx"
    write_onnx(net, path, bounds=bounds, dtype="float64")
    stored = read_stored_bounds(path)
    assert stored.method == "lp"
    for a, b in zip(bounds.lower + bounds.upper, stored.lower + stored.upper):
        np.testing.assert_array_equal(a, b)


def test_progress_is_reported_per_layer():
    net = Network.mlp([2, 4, 4, 1], seed=8)
    calls = []
    tighten_bounds(
        net, input_bounds=_box(2), executor="serial", progress=lambda *a: calls.append(a)
    )
    assert calls == [(0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"method": "sdp"}, "'lp', 'milp'"),
        ({"executor": "threads"}, "serial"),
        ({"time_limit": 0.0}, "time_limit"),
        ({"rounding": -1.0}, "rounding"),
        ({"chunks": 0}, "chunks"),
    ],
)
def test_tightening_bad_arguments_raise(kwargs, words):
    net = Network.mlp([2, 4, 1], seed=0)
    with pytest.raises(ValueError, match=words):
        tighten_bounds(net, input_bounds=_box(2), **kwargs)
