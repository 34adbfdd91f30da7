"""The partition formulation: exactness at fixed inputs, LP tightness versus big-M, MILP optimum."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Layer, Network, interval_bounds
from pyomo_nnrelax.formulations import network_model
from pyomo_nnrelax.formulations.bigm import BIGM
from pyomo_nnrelax.formulations.partition import partition_formulation, split_inputs
from pyomo_nnrelax.lp.highs import HighsModel
from pyomo_nnrelax.options import SPLIT_STRATEGIES as STRATEGIES

TOL = 1e-6
NETWORKS = [([3, 8, 8, 2], 1), ([4, 10, 6, 2], 2), ([2, 12, 12, 1], 3), ([5, 6, 6, 6, 2], 4)]


def _box(n: int) -> InputBox:
    return InputBox(lower=-np.ones(n), upper=np.ones(n))


def _optimum(model, cols, coefs, sense: str) -> float:
    highs = HighsModel(model, mip_rel_gap=0.0)
    highs.set_objective(cols, coefs, sense)
    result = highs.solve()
    assert result.optimal, result.status
    return result.objective


def _objectives(n_outputs: int, seed: int):
    """(coefs, sense) pairs: min and max of output 0, and random output weightings."""
    rng = np.random.default_rng(seed)
    e0 = np.eye(n_outputs)[0]
    return [(e0, "min"), (e0, "max")] + [(rng.normal(size=n_outputs), "max") for _ in range(3)]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("sizes, seed", NETWORKS[:2])
def test_fixed_inputs_reproduce_forward(sizes, seed, strategy):
    net = Network.mlp(sizes, seed=seed)
    model = network_model(
        net, interval_bounds(net, _box(sizes[0])), partition_formulation(3, strategy)
    )
    highs = HighsModel(model)
    out = model.cols("outputs")
    highs.set_objective(out, np.ones(out.size))
    for x in np.random.default_rng(seed).uniform(-1, 1, size=(5, sizes[0])):
        highs.set_col_bounds(model.cols("inputs"), x, x)
        result = highs.solve()
        assert result.optimal
        np.testing.assert_allclose(result.x[out], net.forward(x)[0], atol=TOL)


@pytest.mark.parametrize("sizes, seed", NETWORKS)
def test_lp_relaxation_tighter_than_bigm_and_monotone_in_partitions(sizes, seed):
    net = Network.mlp(sizes, seed=seed)
    bounds = interval_bounds(net, _box(sizes[0]))
    models = {
        n: network_model(net, bounds, partition_formulation(n), relax=True)
        for n in (1, 2, 4, max(sizes[:-1]))
    }
    bigm = network_model(net, bounds, BIGM, relax=True)
    out = bigm.cols("outputs")
    for coefs, sense in _objectives(net.n_outputs, seed):
        sign = 1.0 if sense == "max" else -1.0
        reference = sign * _optimum(bigm, out, coefs, sense)
        values = [sign * _optimum(m, m.cols("outputs"), coefs, sense) for m in models.values()]
        assert values[0] == pytest.approx(reference, abs=TOL)
        assert all(b <= a + TOL for a, b in zip([reference] + values, values))


def test_all_singleton_partitions_give_the_convex_hull_of_a_neuron():
    """max c_x x + c_h relu(w x + b) over the box is a max of two linear programs over the box."""
    rng = np.random.default_rng(7)
    n = 4
    w, b = rng.normal(size=n), 0.1
    net = Network((Layer(w[None, :], np.array([b]), "relu"),))
    lo, hi = _box(n)
    bounds = interval_bounds(net, (lo, hi))
    hull = network_model(net, bounds, partition_formulation(n), relax=True)
    bigm = network_model(net, bounds, BIGM, relax=True)
    cols = np.concatenate([hull.cols("inputs"), hull.cols("outputs")])
    bigm_gaps = []
    for _ in range(10):
        c_x, c_h = rng.normal(size=n), rng.uniform(0.5, 2.0)
        exact = max(np.abs(c_x).sum(), np.abs(c_x + c_h * w).sum() + c_h * b)
        coefs = np.append(c_x, c_h)
        assert _optimum(hull, cols, coefs, "max") == pytest.approx(exact, abs=TOL)
        bigm_gaps.append(_optimum(bigm, cols, coefs, "max") - exact)
    assert min(bigm_gaps) >= -TOL and max(bigm_gaps) > 1e-3


@pytest.mark.parametrize(
    "n_partitions, strategy",
    [(1, "equal_size"), (2, "equal_size"), (3, "equal_range"), (2, "random")],
)
@pytest.mark.parametrize("sizes, seed", NETWORKS[:2])
def test_milp_optimum_equals_bigm(sizes, seed, n_partitions, strategy):
    net = Network.mlp(sizes, seed=seed)
    bounds = interval_bounds(net, _box(sizes[0]))
    bigm = network_model(net, bounds, BIGM)
    part = network_model(net, bounds, partition_formulation(n_partitions, strategy))
    for coefs, sense in _objectives(net.n_outputs, seed)[:3]:
        expected = _optimum(bigm, bigm.cols("outputs"), coefs, sense)
        assert _optimum(part, part.cols("outputs"), coefs, sense) == pytest.approx(
            expected, abs=1e-5
        )


def test_start_values_are_feasible():
    net = Network.mlp([3, 8, 8, 2], seed=5)
    bounds = interval_bounds(net, _box(3))
    form = partition_formulation(2, "random", seed=3)
    model = network_model(net, bounds, form)
    x = np.array([0.3, -0.7, 0.1])
    values = np.zeros(model.n_cols)
    values[model.cols("inputs")] = x
    h = x
    for l, (layer, z) in enumerate(zip(net.layers, net.pre_activations(x))):
        z = z[0]
        z_name, z_layer = ("outputs", None) if l == len(net.layers) - 1 else ("z", l)
        values[model.cols(z_name, z_layer)] = z
        if layer.activation == "relu":
            values[model.cols("xh", l)] = np.maximum(z, 0.0)
            z_bounds = (bounds.lower[l], bounds.upper[l])
            starts = form.start_values(layer, h, z, bounds.post_activation(net, l - 1), z_bounds)
            for name, value in starts.items():
                values[model.cols(name, l)] = value
            h = np.maximum(z, 0.0)
    activity = model.dense() @ values
    assert np.all(activity >= model.row_lower - TOL) and np.all(activity <= model.row_upper + TOL)
    assert np.all(values >= model.col_lower - TOL) and np.all(values <= model.col_upper + TOL)


def test_labels_decode_to_neuron_and_group():
    net = Network.mlp([5, 6, 1], seed=0)
    bounds = interval_bounds(net, _box(5))
    model = network_model(net, bounds, partition_formulation(3))
    labels = model.var_groups[("partition_p", 0)].index
    neuron, k = np.divmod(labels, 3)
    unstable = model.var_groups[("is_active", 0)].index
    assert set(neuron) == set(unstable) and set(k) == {0, 1, 2}


def test_split_inputs_strategies_and_clamping():
    w = np.array([-1.8, 0.0, -2.0, -1.6, 3.0])
    np.testing.assert_array_equal(split_inputs(w, 2, "equal_size"), [0, -1, 0, 1, 1])
    np.testing.assert_array_equal(split_inputs(w, 10, "equal_size"), [1, -1, 0, 2, 3])
    np.testing.assert_array_equal(split_inputs(w, 3, "equal_range"), [0, -1, 0, 0, 1])
    groups = split_inputs(w, 2, "random", seed=1)
    assert groups[1] == -1 and sorted(np.bincount(groups[groups >= 0])) == [2, 2]


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"n_partitions": 0}, "n_partitions"),
        ({"n_partitions": 1.5}, "n_partitions"),
        ({"strategy": "sorted"}, "equal_size"),
    ],
)
def test_partition_bad_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        partition_formulation(**kwargs)
