"""``WeightTie`` on its own: what it accepts, what it refuses, and that rebuilding, reading back,
the chain rule, scaling, gathering and scattering agree with the rule ``entry = offset + mult *
theta[index]`` (fixed entries: ``fixed``), checked entry by entry on small hand-made ties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from pyomo_nnrelax import WeightTie
from pyomo_nnrelax.errors import InvalidNetworkError

# a 2 x 3 matrix: theta[0] at (0, 0) and, doubled, at (1, 1); theta[1] at (0, 2) plus 0.5;
# a fixed one at (0, 1) and fixed zeros at (1, 0) and (1, 2)
INDEX = np.array([[0, -1, 1], [-1, 0, -1]])
MULT = np.array([[1.0, 7.0, 1.0], [7.0, 2.0, 7.0]])  # 7 where fixed: ignored
FIXED = np.array([[9.0, 1.0, 9.0], [0.0, 9.0, 0.0]])  # 9 where tied: ignored
OFFSET = np.array([[0.0, 9.0, 0.5], [9.0, 0.0, 9.0]])  # 9 where fixed: ignored


def tie() -> WeightTie:
    return WeightTie(INDEX, MULT, FIXED, OFFSET)


def by_the_rule(theta: np.ndarray) -> np.ndarray:
    """The matrix of ``theta`` under :func:`tie`, written out."""
    return np.array([[theta[0], 1.0, theta[1] + 0.5], [0.0, 2.0 * theta[0], 0.0]])


def test_the_matrix_of_the_parameters_follows_the_rule_entry_by_entry():
    theta = np.array([3.0, -2.0])
    np.testing.assert_array_equal(tie().weight(theta), by_the_rule(theta))
    assert tie().shape == (2, 3) and tie().n_params == 2
    assert tie().tied.tolist() == [[True, False, True], [False, True, False]]


def test_values_that_do_not_apply_are_cleared():
    t = tie()
    np.testing.assert_array_equal(t.mult, [[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    np.testing.assert_array_equal(t.fixed, [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(t.offset, [[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])


def test_the_offset_defaults_to_zero_and_a_scalar_one_applies_to_every_tied_entry():
    plain = WeightTie(INDEX, MULT, FIXED)
    np.testing.assert_array_equal(plain.offset, np.zeros((2, 3)))
    np.testing.assert_array_equal(plain.weight(np.array([1.0, 1.0]))[0], [1.0, 1.0, 1.0])
    shifted = WeightTie(INDEX, MULT, FIXED, 0.25)
    np.testing.assert_array_equal(shifted.offset, [[0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])


def test_the_tie_keeps_read_only_copies_of_what_it_was_given():
    index, mult = INDEX.copy(), MULT.copy()
    t = WeightTie(index, mult, FIXED)
    index[0, 0], mult[1, 1] = 1, 5.0
    assert t.index[0, 0] == 0 and t.mult[1, 1] == 2.0
    for array in (t.index, t.mult, t.fixed, t.offset):
        with pytest.raises(ValueError):
            array[0, 0] = 3


def test_the_parameters_are_read_back_from_a_matrix_that_follows_the_tie():
    theta = np.array([3.0, -2.0])
    np.testing.assert_array_equal(tie().parameters(by_the_rule(theta)), theta)
    tie().check(by_the_rule(theta), "layer 0")  # no error


def test_the_gradient_is_the_tied_sum_of_the_matrix_gradient():
    grad = np.array([[1.0, 100.0, 3.0], [100.0, 5.0, 100.0]])  # fixed entries: no parameter
    # d/dtheta0 = 1 * 1 + 2 * 5, d/dtheta1 = 1 * 3
    np.testing.assert_array_equal(tie().gradient(grad), [11.0, 3.0])
    free = WeightTie(np.full((1, 2), -1), np.zeros((1, 2)), np.ones((1, 2)))
    assert free.n_params == 0 and free.gradient(np.ones((1, 2))).shape == (0,)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda w: w.__setitem__((1, 1), w[1, 1] + 0.1), "entries that share a parameter"),
        (lambda w: w.__setitem__((0, 1), 1.5), "a fixed entry changed"),
        (lambda w: w.__setitem__((1, 2), 1e-6), "a fixed entry changed"),
    ],
    ids=["shared-differ", "fixed-changed", "fixed-zero-moved"],
)
def test_a_matrix_that_breaks_the_tie_is_refused_naming_where(change, message):
    weight = by_the_rule(np.array([3.0, -2.0]))
    change(weight)
    with pytest.raises(InvalidNetworkError, match=f"layer 4: .*{message}"):
        tie().check(weight, "layer 4")


def test_the_check_allows_rounding_relative_to_the_weights_size():
    theta = np.array([3e6, -2e6])
    weight = by_the_rule(theta)
    weight[1, 1] *= 1 + 1e-12  # rounding of a float32 round trip is far larger
    tie().check(weight, "big")
    weight[1, 1] *= 1 + 1e-6
    with pytest.raises(InvalidNetworkError, match="does not follow its tie"):
        tie().check(weight, "big")


def test_a_matrix_of_another_shape_is_refused_naming_both_shapes():
    with pytest.raises(InvalidNetworkError, match=r"x: weight tie of shape \(2, 3\) .* \(3, 2\)"):
        tie().check(np.zeros((3, 2)), "x")


@pytest.mark.parametrize(
    "index, mult, fixed, offset, message",
    [
        (INDEX, MULT[:, :2], FIXED, None, r"one shape, got \(2, 3\), \(2, 2\) and \(2, 3\)"),
        (INDEX, MULT, FIXED[0], None, r"one shape, got \(2, 3\), \(2, 3\) and \(3,\)"),
        (np.zeros((1, 1, 1)), np.ones((1, 1, 1)), np.ones((1, 1, 1)), None, "1-D or 2-D"),
        (np.array([0, -2]), np.ones(2), np.ones(2), None, "values below -1"),
        (np.array([0, 1]), np.array([1.0, 0.0]), np.zeros(2), None, "zero or non-finite"),
        (np.array([0, 1]), np.array([1.0, np.inf]), np.zeros(2), None, "zero or non-finite"),
        (np.array([0, 1]), np.array([1.0, np.nan]), np.zeros(2), None, "zero or non-finite"),
        (np.array([0, -1]), np.ones(2), np.array([0.0, np.inf]), None, "not all finite"),
        (np.array([0, -1]), np.ones(2), np.zeros(2), np.array([np.nan, 0.0]), "not all finite"),
        (np.array([0, 2]), np.ones(2), np.zeros(2), None, r"numbered 0, 1, \.\.\., n-1"),
        (np.array([1, -1]), np.ones(2), np.zeros(2), None, r"numbered 0, 1, \.\.\., n-1"),
    ],
)
def test_malformed_ties_are_refused_saying_why(index, mult, fixed, offset, message):
    with pytest.raises(InvalidNetworkError, match=message):
        WeightTie(index, mult, fixed, offset)


def test_non_finite_values_where_they_do_not_apply_are_ignored():
    # nan factors of fixed entries, and inf fixed values or offsets of tied ones, are cleared
    t = WeightTie(
        np.array([0, -1]), np.array([1.0, np.nan]), np.array([np.inf, 2.0]), np.array([0, np.inf])
    )
    np.testing.assert_array_equal(t.weight(np.array([4.0])), [4.0, 2.0])
    assert WeightTie(np.array([-1, 0]), np.array([0.0, -0.5]), np.zeros(2)).n_params == 1


def test_a_scaled_tie_is_the_tie_of_the_scaled_matrix():
    theta = np.array([3.0, -2.0])
    factor = np.array([[2.0], [-1.0]])  # per row, as a folded normalisation
    scaled = tie().scaled(factor, shift=0.25)
    np.testing.assert_allclose(scaled.weight(theta), factor * by_the_rule(theta) + 0.25)
    np.testing.assert_array_equal(scaled.index, INDEX)
    np.testing.assert_allclose(tie().scaled(3.0).weight(theta), 3.0 * by_the_rule(theta))


def test_gathering_and_scattering_move_a_tie_between_dense_and_sparse_layouts():
    theta = np.array([3.0, -2.0])
    dense = by_the_rule(theta)
    rows, cols = np.array([0, 0, 1]), np.array([0, 2, 1])  # the tied entries, row by row
    gathered = tie().gathered(rows, cols)
    np.testing.assert_array_equal(gathered.weight(theta), dense[rows, cols])
    np.testing.assert_array_equal(gathered.offset, [0.0, 0.5, 0.0])
    pattern = sparse.csr_array((gathered.weight(theta), (rows, cols)), shape=(2, 3))
    back = gathered.scattered(pattern, (2, 3))
    expected = dense.copy()
    expected[0, 1] = 0.0  # outside the stored pattern: a fixed zero
    np.testing.assert_array_equal(back.weight(theta), expected)
    np.testing.assert_array_equal(back.index, [[0, -1, 1], [-1, 0, -1]])
    np.testing.assert_array_equal(back.offset, [[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(back.mult, [[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
