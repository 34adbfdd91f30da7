"""``NNBlock(..., inputs=m.y, outputs=m.q)``: the user's own variables as the network's inputs
and outputs, with no copies and no linking rows."""

from __future__ import annotations

import itertools

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import InputBoundsError, InputBox, Network, NNBlock
from tests.support.solving import solve_optimal


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_decisions_as_inputs_give_the_enumerated_optimum(seed):
    """min c'y + mean of the outputs over binary y: the MILP's optimum is the best of all 2^n
    binary vectors evaluated by the network's own forward pass."""
    net = Network.mlp([4, 8, 8, 3], seed=seed)
    c = np.random.default_rng(seed).normal(size=4)
    m = pyo.ConcreteModel()
    m.y = pyo.Var(range(4), within=pyo.Binary)
    m.q = pyo.Var(range(3))
    m.nn = NNBlock(net, inputs=m.y, outputs=m.q)
    m.obj = pyo.Objective(expr=sum(c[i] * m.y[i] for i in m.y) + sum(m.q.values()) / 3)
    solve_optimal(m)
    points = np.array(list(itertools.product([0.0, 1.0], repeat=4)))
    values = points @ c + net.forward(points).mean(axis=1)
    assert pyo.value(m.obj) == pytest.approx(values.min(), abs=1e-6)
    y = np.array([pyo.value(m.y[i]) for i in m.y])
    assert set(y.round(9)) <= {0.0, 1.0}
    assert y @ c + net.forward(y[None])[0].mean() == pytest.approx(values.min(), abs=1e-6)
    assert m.nn.check().max_abs_error < 1e-6


def test_no_copy_variables_and_no_linking_rows():
    net = Network.mlp([3, 5, 2], seed=0)
    m = pyo.ConcreteModel()
    m.y = pyo.Var(range(3), bounds=(-1, 1))
    m.q = pyo.Var(range(2))
    m.nn = NNBlock(net, inputs=m.y, outputs=m.q)
    assert m.nn.inputs[0] is m.y[0] and m.nn.outputs[1] is m.q[1]
    own_vars = list(m.nn.component_data_objects(pyo.Var, descend_into=True))
    n_block_cols = m.nn.matrix_model.n_cols - 3 - 2  # the inputs and outputs are the user's
    assert len({id(v) for v in own_vars} - {id(v) for v in (*m.y.values(), *m.q.values())}) == (
        n_block_cols
    )
    rows = list(m.nn.component_data_objects(pyo.Constraint, descend_into=True))
    assert len(rows) == m.nn.matrix_model.n_rows  # the variables' bounds are the box: no rows
    assert (m.y[0].lb, m.y[0].ub, m.q[0].lb, m.q[0].ub) == (-1, 1, None, None)


def test_the_box_is_the_given_one_within_the_variables_bounds():
    """Given bounds tighter than a variable's add an input_box row that holds the solve inside
    the box; the variable's own bounds are left as they were."""
    net = Network.mlp([2, 6, 1], seed=3)
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(2), bounds=(-5, 5))
    m.nn = NNBlock(net, inputs=m.x, input_bounds=[(-1, 0.5), (-6, 6)])
    assert m.nn.bounds.input_lower.tolist() == [-1.0, -5.0]
    assert m.nn.bounds.input_upper.tolist() == [0.5, 5.0]
    assert list(m.nn.input_box.keys()) == [0]
    assert (m.x[0].lb, m.x[0].ub) == (-5, 5)
    for sense in (pyo.minimize, pyo.maximize):
        m.obj = pyo.Objective(expr=m.x[0], sense=sense)
        solve_optimal(m)
        assert pyo.value(m.x[0]) == pytest.approx(-1.0 if sense == pyo.minimize else 0.5)
        m.del_component(m.obj)


def test_a_scalar_variable_and_a_list_of_elements_are_taken_in_order():
    net = Network.mlp([2, 4, 1], seed=0)
    m = pyo.ConcreteModel()
    m.a = pyo.Var(bounds=(0, 1))
    m.b = pyo.Var(["u", "v"], bounds=(-1, 1))
    m.out = pyo.Var()
    m.nn = NNBlock(net, inputs=[m.b["v"], m.a], outputs=m.out)
    assert m.nn.inputs[0] is m.b["v"] and m.nn.inputs[1] is m.a and m.nn.outputs[0] is m.out
    assert m.nn.bounds.input_lower.tolist() == [-1.0, 0.0]
    m.nn.warm_start([0.25, 0.5])
    assert (m.b["v"].value, m.a.value) == (0.25, 0.5)
    assert m.out.value == pytest.approx(net.forward(np.array([[0.25, 0.5]]))[0, 0])


def test_the_stored_box_is_used_when_the_variables_are_unbounded():
    net = Network.mlp([2, 4, 1], seed=0).with_input_bounds([-2, -2], [2, 2])
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(2))
    m.nn = NNBlock(net, inputs=m.x)
    assert m.nn.bounds.input_upper.tolist() == [2.0, 2.0]
    assert list(m.nn.input_box.keys()) == [0, 1]


def test_the_model_clones_with_the_links():
    net = Network.mlp([2, 4, 1], seed=0)
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(2), bounds=(-1, 1))
    m.nn = NNBlock(net, inputs=m.x)
    c = m.clone()
    assert c.nn.inputs[0] is c.x[0]
    c.obj = pyo.Objective(expr=c.nn.outputs[0])
    solve_optimal(c)
    assert c.nn.check().max_abs_error < 1e-6


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda m: {"inputs": m.x3}, ValueError, r"inputs= holds 3 variables; the network has 2"),
        (lambda m: {"outputs": [m.x3[0], m.x3[1]]}, ValueError, r"outputs= holds 2 variables"),
        (lambda m: {"inputs": [m.x3[0], 1.0]}, TypeError, r"entry 1 is float"),
        (lambda m: {"inputs": m.c}, TypeError, r"inputs= takes a Pyomo Var"),
        (lambda m: {"inputs": [m.free, m.x3[0]]}, InputBoundsError, r"free\) has no lower"),
        (
            lambda m: {"inputs": [m.x3[0], m.x3[1]], "input_bounds": InputBox([5, 0], [6, 1])},
            InputBoundsError,
            r"input 0 \(variable x3\[0\]\): its bounds \[0, 1\] and the box \[5, 6\] do not",
        ),
    ],
)
def test_bad_variables_raise_errors_naming_them(make, error, pattern):
    m = pyo.ConcreteModel()
    m.x3 = pyo.Var(range(3), bounds=(0, 1))
    m.free = pyo.Var()
    m.c = pyo.Param(initialize=1.0)
    with pytest.raises(error, match=pattern):
        m.nn = NNBlock(Network.mlp([2, 3, 1], seed=0), **make(m))


def test_warm_start_samples_binary_inputs_at_binary_points_and_picks_the_best():
    """Without ``x``, the sampled starts of binary inputs are 0/1 points (a fractional start
    breaks the variables' domains), and the best one under the objective is used."""
    net = Network.mlp([3, 6, 2], seed=1)
    c = np.array([0.3, -0.2, 0.1])
    m = pyo.ConcreteModel()
    m.y = pyo.Var(range(3), within=pyo.Binary)
    m.nn = NNBlock(net, inputs=m.y)
    m.obj = pyo.Objective(expr=sum(c[i] * m.y[i] for i in m.y) + m.nn.outputs[0])
    x = m.nn.warm_start()
    assert set(x.tolist()) <= {0.0, 1.0}
    points = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    values = points @ c + net.forward(points)[:, 0]
    assert pyo.value(m.obj) == pytest.approx(values.min())


def test_warm_start_keeps_to_the_models_own_rows_and_the_best_sample_under_them():
    """Without ``x``, a single copy's start is the best sample that satisfies the user's
    constraints on the inputs and outputs (here only the corner x0 - x1 >= 2.5 of the box,
    away from the network's minimum);
    a row that also holds a variable outside the block cannot be evaluated and is left out."""
    net = Network.mlp([2, 8, 1], seed=3)
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(2), bounds=(-2, 2))
    m.other = pyo.Var(bounds=(0, 1))
    m.nn = NNBlock(net, inputs=m.x)
    m.corner = pyo.Constraint(expr=m.x[0] - m.x[1] >= 2.5)
    m.coupled = pyo.Constraint(expr=m.x[0] + m.other >= 100)  # not the block's to check
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    x = m.nn.warm_start(samples=256, seed=0)
    assert x[0] - x[1] >= 2.5 - 1e-9 and np.all(np.abs(x) <= 2)
    box = InputBox.uniform(-2.0, 2.0, 2)
    X = np.vstack([box.center, box.sample(256, np.random.default_rng(0))])
    allowed = X[X[:, 0] - X[:, 1] >= 2.5]
    assert len(allowed) > 0 and net.forward(X).min() < net.forward(allowed).min()
    assert net.forward(x[None])[0, 0] == pytest.approx(net.forward(allowed)[:, 0].min())


# ---------------------------------------------------------------------- the input box row
#: name: (variable keywords, fixed value, the given pair of input 0, the box, whether a row)
BOX_CASES = {
    "lower looser": (dict(bounds=(-5, 1)), None, (0.0, 1.0), (0.0, 1.0), True),
    "upper looser": (dict(bounds=(0, 5)), None, (0.0, 1.0), (0.0, 1.0), True),
    "both looser": (dict(bounds=(-5, 5)), None, (0.0, 1.0), (0.0, 1.0), True),
    "neither: the same": (dict(bounds=(0, 1)), None, (0.0, 1.0), (0.0, 1.0), False),
    "neither: the variable tighter": (dict(bounds=(0.2, 0.7)), None, (0, 1), (0.2, 0.7), False),
    "one side tighter each": (dict(bounds=(0.3, 5)), None, (0.0, 1.0), (0.3, 1.0), True),
    "no lower bound": (dict(bounds=(None, 1)), None, (0.0, 1.0), (0.0, 1.0), True),
    "no upper bound": (dict(bounds=(0, None)), None, (0.0, 1.0), (0.0, 1.0), True),
    "unbounded": ({}, None, (0.0, 1.0), (0.0, 1.0), True),
    "non-negative domain": (dict(within=pyo.NonNegativeReals), None, (-1, 1), (0, 1), True),
    "integer": (dict(within=pyo.Integers, bounds=(-3, 3)), None, (-1.5, 1.5), (-1.5, 1.5), True),
    "binary, box [0, 0.5]": (dict(within=pyo.Binary), None, (0.0, 0.5), (0.0, 0.5), True),
    "binary, box [0.5, 1]": (dict(within=pyo.Binary), None, (0.5, 1.0), (0.5, 1.0), True),
    "binary, box [0, 1]": (dict(within=pyo.Binary), None, (0.0, 1.0), (0.0, 1.0), False),
    "fixed inside the box": (dict(bounds=(-5, 5)), 0.25, (0.0, 1.0), (0.0, 1.0), True),
}


def _box_model(keywords: dict, fixed: float | None, pair) -> pyo.ConcreteModel:
    """Input 0 a variable of the case, input 1 one bounded like the box ([0, 1])."""
    m = pyo.ConcreteModel()
    m.x0 = pyo.Var(**keywords)
    m.x1 = pyo.Var(bounds=(0, 1))
    if fixed is not None:
        m.x0.fix(fixed)
    box = InputBox.from_pairs([pair, (0, 1)])
    m.nn = NNBlock(Network.mlp([2, 6, 1], seed=3), inputs=[m.x0, m.x1], input_bounds=box)
    return m


@pytest.mark.parametrize("case", sorted(BOX_CASES))
def test_an_input_variable_stays_in_the_box_for_every_kind_of_bounds(case):
    """Minimising and maximising input 0 (plus a little of the network's output, so the block
    is part of the solve) reach exactly the ends of the box: where the box is tighter than the
    variable on either side the ``input_box`` row holds it (without the row the solve would
    leave the box); where it is not, there is no row and the variable's bounds do it."""
    keywords, fixed, pair, (lo, hi), row = BOX_CASES[case]
    m = _box_model(keywords, fixed, pair)
    own = (m.x0.lb, m.x0.ub)
    assert (m.nn.bounds.input_lower[0], m.nn.bounds.input_upper[0]) == pytest.approx((lo, hi))
    assert (0 in getattr(m.nn, "input_box", {})) == row
    ends = (np.ceil(lo), np.floor(hi)) if m.x0.is_integer() else (lo, hi)
    for sense, end in zip((pyo.minimize, pyo.maximize), (fixed, fixed) if fixed else ends):
        m.obj = pyo.Objective(expr=m.x0 + 1e-3 * m.nn.outputs[0], sense=sense)
        solve_optimal(m)
        assert m.x0.value == pytest.approx(end, abs=1e-9), sense
        assert m.nn.check().max_abs_error < 1e-6
        m.del_component(m.obj)
    assert (m.x0.lb, m.x0.ub) == own  # the variable's own bounds are untouched


def test_a_fixed_input_outside_the_box_makes_the_model_infeasible_not_wrong():
    """A variable fixed at 3 with a box of [0, 1]: the block's rows (its box row, and the
    first layer's bounds) leave no point, so the solve reports none instead of a wrong one
    (the network's formulation is only valid in the box)."""
    from pyomo_nnrelax import SolverError
    from pyomo_nnrelax.solve import solve_model

    m = _box_model(dict(bounds=(-5, 5)), 3.0, (0.0, 1.0))
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    with pytest.raises(SolverError, match="no solution"):
        solve_model(m)


def test_the_network_optimum_stays_in_a_box_tighter_than_the_variables_upper_bounds():
    """x in [0, 5] with input_bounds [0, 1]^2: the minimum of the network over the box, which
    a grid of the box brackets, and not the minimum outside it (x0 = 1.648 without the rows)."""
    from tests.support.reference import grid, grid_tolerance

    net = Network.mlp([2, 6, 1], seed=3)
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(2), bounds=(0, 5))
    m.nn = NNBlock(net, inputs=m.x, input_bounds=[(0, 1), (0, 1)])
    m.obj = pyo.Objective(expr=m.nn.outputs[0])
    solve_optimal(m)
    x = np.array([m.x[0].value, m.x[1].value])
    assert np.all((x >= -1e-9) & (x <= 1 + 1e-9))
    lo, hi = np.zeros(2), np.ones(2)
    values = net.forward(grid(lo, hi, 401))[:, 0]
    tolerance = grid_tolerance([(la.weight, la.bias) for la in net.layers], lo, hi, 401)[0]
    assert values.min() - tolerance - 1e-9 <= pyo.value(m.obj) <= values.min() + 1e-9
    outside = net.forward(grid(lo, np.full(2, 5.0), 401))[:, 0].min()
    assert outside < values.min() - 1e-2  # the box matters: the optimum outside it is lower
