"""The CFLP of the second case study: the recourse MILP against enumeration, the cached and
resumable data generation, and the first-stage MILP with a quantile network embedded."""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import Network, NNBlock
from pyomo_nnrelax.experiments.cflp import (
    CFLPInstance,
    assignment_cost,
    evaluation_scenarios,
    expected_cost,
    make_instance,
    recourse_cost,
)
from pyomo_nnrelax.experiments.scenarios import cache_folder, cache_key, generate_samples
from pyomo_nnrelax.experiments.twostage import (
    first_stage_model,
    objective_weights,
    predicted_objective,
    quantile_levels,
    solve_first_stage,
)
from pyomo_nnrelax.network import Layer


def cost_by_definition(instance: CFLPInstance, demand, served) -> float:
    """``sum_j c_ij d_j`` over the customers served by ``i = served[j]``, plus ``p d_j`` for
    each unserved one (``served[j] = -1``): the recourse objective, written out here."""
    total = 0.0
    for j, i in enumerate(served):
        rate = instance.penalty if i < 0 else instance.unit_costs[i, j]
        total += rate * demand[j]
    return total


def brute_force(instance: CFLPInstance, y, demand) -> float:
    """``Q(y, d)`` by trying every assignment of each customer to an open facility or none."""
    open_ = [i for i in range(instance.n_facilities) if y[i] == 1]
    best = np.inf
    for choice in itertools.product([-1, *open_], repeat=instance.n_customers):
        load = np.zeros(instance.n_facilities)
        for j, i in enumerate(choice):
            if i >= 0:
                load[i] += demand[j]
        if np.all(load <= instance.capacities + 1e-9):
            best = min(best, cost_by_definition(instance, demand, choice))
    return best


def scipy_recourse(instance: CFLPInstance, y, demand) -> float:
    """``Q(y, d)`` from the formulation of ``cflp``'s docstring, written for scipy's ``milp``:
    ``x_ij`` binary for every facility (0 where closed), ``u_j`` in [0, 1]."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n_f, n_c = instance.n_facilities, instance.n_customers
    d = np.asarray(demand, dtype=float)
    cost = np.concatenate([(instance.unit_costs * d).ravel(), instance.penalty * d])
    serve = np.hstack([np.tile(np.eye(n_c), n_f), np.eye(n_c)])  # sum_i x_ij + u_j = 1
    capacity = np.hstack([np.kron(np.eye(n_f), d[None, :]), np.zeros((n_f, n_c))])
    upper = np.concatenate([np.repeat(np.asarray(y, dtype=float), n_c), np.ones(n_c)])
    result = milp(
        cost,
        constraints=[
            LinearConstraint(serve, 1.0, 1.0),
            LinearConstraint(capacity, -np.inf, instance.capacities * np.asarray(y)),
        ],
        integrality=np.concatenate([np.ones(n_f * n_c), np.zeros(n_c)]),
        bounds=Bounds(0.0, upper),
        options={"mip_rel_gap": 1e-9},
    )
    assert result.success, result.message
    return float(result.fun)


@pytest.mark.parametrize("seed", range(6))
def test_the_recourse_optimum_equals_enumerating_every_assignment(seed):
    instance = make_instance(3, 5, ratio=1.2, seed=seed)  # tight capacities: they bind
    rng = np.random.default_rng(seed)
    for _ in range(3):
        y = (rng.random(3) < 0.6).astype(float)
        demand = instance.sample_demands(1, rng)[0]
        result = recourse_cost(instance, y, demand)
        assert result.optimal
        assert result.cost == pytest.approx(brute_force(instance, y, demand), rel=1e-7)
        reference = cost_by_definition(instance, demand, result.served)
        assert reference == pytest.approx(result.cost, rel=1e-9)
        assert assignment_cost(instance, demand, result.served) == pytest.approx(reference)
        assert set(result.served[result.served >= 0]) <= set(np.flatnonzero(y))


@pytest.mark.parametrize("seed", range(3))
def test_the_recourse_optimum_equals_scipys_milp_on_a_larger_instance(seed):
    instance = make_instance(5, 12, ratio=1.1, seed=seed)
    rng = np.random.default_rng(seed)
    y = np.array([1.0, 0.0, 1.0, 1.0, float(seed % 2)])
    for demand in instance.sample_demands(2, rng):
        result = recourse_cost(instance, y, demand)
        assert result.optimal
        assert result.cost == pytest.approx(scipy_recourse(instance, y, demand), rel=1e-6)
        assert cost_by_definition(instance, demand, result.served) == pytest.approx(result.cost)


def test_a_solve_stopped_with_no_assignment_reports_every_customer_unserved(monkeypatch):
    """A time limit of 1e-12 s stops HiGHS before it has any assignment (on any machine: the
    limit has passed at its first check): the cost is then the all-unserved assignment's,
    ``p sum_j d_j``, with a valid bound, and not optimal."""
    from pyomo_nnrelax.experiments import cflp

    results, solve = [], cflp.HighsModel.solve

    def spy(highs):  # keeps what HiGHS returned, to tell that it had no assignment
        results.append(solve(highs))
        return results[-1]

    monkeypatch.setattr(cflp.HighsModel, "solve", spy)
    instance = make_instance(3, 5, seed=0)
    demand = np.array([5.0, 12.0, 35.0, 20.0, 7.0])
    result = recourse_cost(instance, [1, 1, 0], demand, time_limit=1e-12)
    assert results[-1].x is None, "HiGHS found an assignment: the branch was not run"
    assert "time limit" in results[-1].status.lower()
    assert result.cost == pytest.approx(instance.penalty * 79.0, rel=1e-12) and result.cost > 0
    assert result.cost == pytest.approx(cost_by_definition(instance, demand, [-1] * 5))
    assert not result.optimal and result.served.tolist() == [-1] * 5
    assert result.bound <= brute_force(instance, [1, 1, 0], demand) <= result.cost


def test_unserved_demand_pays_the_penalty_per_unit():
    # one facility of capacity 10, two customers of demand 6 and 8: only one can be served
    instance = CFLPInstance(
        fixed_costs=[5.0], capacities=[10.0], unit_costs=[[1.0, 2.0]], penalty=7.0
    )
    result = recourse_cost(instance, [1], [6.0, 8.0])
    # serve customer 1 (8 x 2 = 16) and leave 6 units unserved (6 x 7 = 42): 58 < 6 + 56
    assert result.cost == pytest.approx(16.0 + 42.0)
    assert result.served.tolist() == [-1, 0]
    assert recourse_cost(instance, [0], [6.0, 8.0]).cost == pytest.approx(7.0 * 14.0)


def test_make_instance_scales_capacities_to_the_ratio():
    instance = make_instance(7, 9, ratio=3.0, penalty_factor=2.0, seed=4)
    assert instance.capacities.sum() == pytest.approx(3.0 * 9 * 20.0)
    assert instance.penalty == pytest.approx(2.0 * instance.unit_costs.max())
    assert make_instance(7, 9, seed=4).fingerprint() == make_instance(7, 9, seed=4).fingerprint()
    assert make_instance(7, 9, seed=4).fingerprint() != make_instance(7, 9, seed=5).fingerprint()


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: CFLPInstance([1.0, 2.0], [3.0, -1.0], np.ones((2, 2)), 1.0), r"capacities must"),
        (lambda: CFLPInstance([1.0], [3.0], np.ones((2, 2)), 1.0), r"same n_f"),
        (lambda: CFLPInstance([1.0], [3.0], np.ones((1, 2)), 0.0), r"penalty must"),
        (lambda: CFLPInstance([np.nan], [3.0], np.ones((1, 2)), 1.0), r"fixed_costs must be"),
        (lambda: make_instance(0, 3), r"n_facilities must"),
        (lambda: recourse_cost(make_instance(3, 2), [1, 0], [5, 5]), r"y must be a vector of 3"),
        (lambda: recourse_cost(make_instance(3, 2), [1, 0, 0.5], [5, 5]), r"y must hold 0 or 1"),
        (lambda: recourse_cost(make_instance(3, 2), [1, 0, 1], [5]), r"demand must be a vector"),
        (lambda: recourse_cost(make_instance(3, 2), [1, 0, 1], [5, -1]), r"demand must be fin"),
        (lambda: recourse_cost(make_instance(3, 2), [1, 0, 1], [5, 5], 0), r"time_limit must"),
    ],
)
def test_bad_arguments_raise_errors_naming_them(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_expected_cost_is_the_mean_over_the_scenarios_plus_the_fixed_cost():
    instance = make_instance(4, 5, ratio=1.2, seed=1)
    y = np.array([1.0, 0.0, 1.0, 1.0])
    scenarios = evaluation_scenarios(instance, 6)
    fixed = sum(f for f, open_ in zip(instance.fixed_costs, y) if open_)
    costs = [brute_force(instance, y, d) + fixed for d in scenarios]
    estimate = expected_cost(instance, y, scenarios)
    assert estimate.mean == pytest.approx(np.mean(costs))
    assert estimate.stderr == pytest.approx(np.std(costs, ddof=1) / np.sqrt(6))
    assert (estimate.scenarios, estimate.limit_hits) == (6, 0)
    assert np.array_equal(scenarios, evaluation_scenarios(instance, 6))  # the same for all y


# ---------------------------------------------------------------------- data generation
def test_the_cache_is_reused_and_extended(tmp_path):
    instance = make_instance(4, 4, seed=0)
    first = generate_samples(instance, 60, cache_dir=tmp_path, chunk_size=20, progress=False)
    assert first.solved == 60 and len(first) == 60
    again = generate_samples(instance, 60, cache_dir=tmp_path, chunk_size=20, progress=False)
    assert again.solved == 0
    for name in ("X", "demands", "costs", "optimal"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    more = generate_samples(instance, 100, cache_dir=tmp_path, chunk_size=20, progress=False)
    assert more.solved == 40 and np.array_equal(more.costs[:60], first.costs)
    (folder,) = tmp_path.iterdir()
    assert json.loads((folder / "parameters.json").read_text())["chunk_size"] == 20
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_a_partial_run_resumes_with_the_missing_chunks_only(tmp_path):
    instance = make_instance(4, 4, seed=0)
    full = generate_samples(instance, 80, cache_dir=tmp_path, chunk_size=20, progress=False)
    (folder,) = tmp_path.iterdir()
    (folder / "chunk-00002.npz").unlink()  # as if the run had been interrupted there
    resumed = generate_samples(instance, 80, cache_dir=tmp_path, chunk_size=20, progress=False)
    assert resumed.solved == 20
    assert np.array_equal(resumed.costs, full.costs) and np.array_equal(resumed.X, full.X)


def test_a_damaged_chunk_is_solved_again_with_a_warning(tmp_path):
    instance = make_instance(3, 3, seed=0)
    full = generate_samples(instance, 20, cache_dir=tmp_path, chunk_size=10, progress=False)
    (folder,) = tmp_path.iterdir()
    (folder / "chunk-00001.npz").write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable"):
        again = generate_samples(instance, 20, cache_dir=tmp_path, chunk_size=10, progress=False)
    assert again.solved == 10 and np.array_equal(again.costs, full.costs)


def test_different_parameters_get_a_different_cache(tmp_path):
    instance = make_instance(4, 4, seed=0)
    keys = {
        cache_folder(tmp_path, cache_key(instance, 0, 20, 60.0)),
        cache_folder(tmp_path, cache_key(instance, 1, 20, 60.0)),
        cache_folder(tmp_path, cache_key(instance, 0, 20, 30.0)),
        cache_folder(tmp_path, cache_key(instance, 0, 10, 60.0)),
        cache_folder(tmp_path, cache_key(make_instance(4, 4, penalty_factor=2.0), 0, 20, 60.0)),
    }
    assert len(keys) == 5
    generate_samples(instance, 20, cache_dir=tmp_path, chunk_size=20, progress=False)
    other = make_instance(4, 4, seed=1)
    assert generate_samples(other, 20, cache_dir=tmp_path, chunk_size=20, progress=False).solved
    assert len(list(tmp_path.iterdir())) == 2


def test_samples_do_not_depend_on_chunking_or_the_executor():
    instance = make_instance(4, 4, seed=2)
    serial = generate_samples(instance, 30, chunk_size=30, progress=False)
    with ThreadPoolExecutor(2) as pool:
        threaded = generate_samples(instance, 30, chunk_size=7, executor=pool, progress=False)
    assert np.array_equal(serial.X, threaded.X) and np.array_equal(serial.costs, threaded.costs)
    assert serial.X.min() == 0 and serial.X.max() == 1
    assert np.all(serial.optimal) and serial.limit_hits == 0


@pytest.mark.slow
def test_a_spawned_pool_gives_the_serial_samples(tmp_path):
    instance = make_instance(4, 4, seed=2)
    serial = generate_samples(instance, 20, chunk_size=10, progress=False)
    pooled = generate_samples(instance, 20, chunk_size=10, workers=2, progress=False)
    assert np.array_equal(serial.costs, pooled.costs)


def test_bad_generation_arguments_raise_errors_naming_them():
    instance = make_instance(3, 3)
    with pytest.raises(ValueError, match="n must be"):
        generate_samples(instance, 0, progress=False)
    with pytest.raises(ValueError, match="chunk_size must"):
        generate_samples(instance, 5, chunk_size=0, progress=False)
    with pytest.raises(TypeError, match="instance must be a CFLPInstance"):
        generate_samples("cflp", 5, progress=False)


# ---------------------------------------------------------------------- first stage
def test_objective_weights_are_the_mean_plus_the_weighted_tail_mean():
    levels = quantile_levels(50)
    w = objective_weights(levels, risk=0.1, alpha=0.9)
    tail = levels >= 0.9
    assert tail.sum() == 5 and w.sum() == pytest.approx(1.1)
    assert np.allclose(w[~tail], 1 / 50) and np.allclose(w[tail], 1 / 50 + 0.1 / 5)
    with pytest.raises(ValueError, match="at least one level >= alpha"):
        objective_weights([0.1, 0.5], alpha=0.9)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_2sp_milp_reproduces_the_network_and_beats_every_decision(seed):
    instance = make_instance(5, 4, seed=seed)
    levels = quantile_levels(6)
    net = Network.mlp([5, 10, 10, 6], seed=seed)
    last = net.layers[-1]  # outputs on the fixed costs' scale, so y is a real trade-off
    scaled = Layer(last.weight * 3000.0, last.bias + 2000.0, "linear")
    net = net.with_layers((*net.layers[:-1], scaled))
    result = solve_first_stage(instance.fixed_costs, net, levels, time_limit=60)
    assert result.milp.optimal and result.check < 1e-6
    assert 0 < result.y.sum() < 5  # neither all closed nor all open
    every = np.array(list(itertools.product([0.0, 1.0], repeat=5)))
    values = predicted_objective(instance.fixed_costs, net, every, levels)
    assert result.milp.objective == pytest.approx(values.min(), abs=1e-6)
    assert result.milp.objective <= values.min() + 1e-6
    assert result.predicted == pytest.approx(result.milp.objective, abs=1e-6)
    assert result.lp_value <= result.milp.objective + 1e-6 and result.lp_gap >= -1e-6


def test_the_model_takes_the_decisions_as_the_network_inputs():
    net = Network.mlp([3, 4, 2], seed=0)
    m = first_stage_model([1.0, 1.0, 1.0], net, [0.5, 0.95])
    assert all(m.nn.inputs[i] is m.y[i] for i in range(3))
    assert all(m.nn.outputs[k] is m.q[k] for k in range(2))
    assert m.nn.bounds.input_lower.tolist() == [0, 0, 0]
    assert m.nn.bounds.input_upper.tolist() == [1, 1, 1]
    relaxed = first_stage_model([1.0, 1.0, 1.0], net, [0.5, 0.95], relax=True)
    assert not relaxed.y[0].is_integer() and (relaxed.y[0].lb, relaxed.y[0].ub) == (0, 1)
    for args, pattern in (
        (([1.0, 1.0], net, [0.5, 0.95]), r"fixed_costs must have one entry per network input"),
        (([1.0] * 3, net, [0.5, 0.9, 0.95]), r"levels must have one quantile level"),
    ):
        with pytest.raises(ValueError, match=pattern):
            first_stage_model(*args)


def test_warm_start_of_binary_inputs_is_integral():
    net = Network.mlp([4, 6, 3], seed=0)
    m = first_stage_model([1.0, 2.0, 3.0, 4.0], net, [0.1, 0.5, 0.95])
    x = m.nn.warm_start()
    assert set(x.tolist()) <= {0.0, 1.0}
    assert all(pyo.value(m.y[i]) in (0.0, 1.0) for i in m.y)


@pytest.mark.slow
def test_a_dask_executor_gives_the_serial_samples_and_fills_the_cache(tmp_path):
    distributed = pytest.importorskip("distributed")
    instance = make_instance(4, 4, seed=3)
    serial = generate_samples(instance, 20, chunk_size=10, progress=False)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2) as client:
        remote = generate_samples(
            instance, 20, chunk_size=10, cache_dir=tmp_path, executor=client.get_executor(),
            progress=False,
        )  # fmt: skip
    assert np.array_equal(serial.costs, remote.costs)
    cached = generate_samples(instance, 20, chunk_size=10, cache_dir=tmp_path, progress=False)
    assert cached.solved == 0


def test_the_recourse_solves_after_a_multithreaded_highs_solve_in_the_same_process():
    """A time-limited MILP through Pyomo starts HiGHS's thread pool; recourse solves after it
    (judging that MILP's decision) must still solve, not come back empty."""
    from pyomo_nnrelax.solve import solve_model

    instance = make_instance(3, 5, ratio=1.2, seed=0)
    y, demand = np.array([1.0, 1.0, 0.0]), instance.mean_demand()
    net = Network.mlp([8, 40, 40, 40, 1], seed=0)
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(8), within=pyo.Binary)
    m.nn = NNBlock(net, inputs=m.x)
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    solve_model(m, time_limit=0.5)
    result = recourse_cost(instance, y, demand)
    assert result.optimal
    assert result.cost == pytest.approx(brute_force(instance, y, demand), rel=1e-7)
