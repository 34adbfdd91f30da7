"""Edges of ``pyomo_nnrelax.matrices`` that the mutation run (``tools/mutation.py``) found
unchecked: the dense forms of every operation, float64 results from integer input, CSR arrays
that are not canonical, rows or columns without entries, patterns whose entries are zeros,
equality of two sparse forms, and the chunked and batched gradient gathers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from pyomo_nnrelax import matrices

# a 3 x 4 matrix with an explicit zero at (1, 3), an empty row 2 and an empty column 2
DENSE = np.array([[1.5, -2.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
ROWS, COLS, VALUES = [0, 0, 1, 1], [0, 1, 1, 3], [1.5, -2.0, 3.0, 0.0]


def stored() -> sparse.csr_array:
    return matrices.from_entries(DENSE.shape, ROWS, COLS, VALUES)


def both() -> list:
    return [DENSE.copy(), stored()]


def test_a_non_canonical_csr_is_sorted_and_summed_keeping_its_explicit_zeros():
    # row 0: columns 3, 0, 3 (unsorted, a duplicate summing to zero); row 1: an explicit zero;
    # row 2: column 2 twice
    raw = sparse.csr_array(
        (
            np.array([2.0, 1.0, -2.0, 0.0, 0.5, 0.25]),
            np.array([3, 0, 3, 1, 2, 2]),
            np.array([0, 3, 4, 6]),
        ),
        shape=(3, 4),
    )
    assert not raw.has_canonical_format
    W = matrices.as_matrix(raw)
    assert W.has_canonical_format
    np.testing.assert_array_equal(W.indptr, [0, 2, 3, 4])
    np.testing.assert_array_equal(W.indices, [0, 3, 1, 2])
    np.testing.assert_array_equal(W.data, [1.0, 0.0, 0.0, 0.75])  # (0, 3) sums to a stored 0
    assert W.dtype == np.float64


@pytest.mark.parametrize("make", [np.array, sparse.csr_array], ids=["dense", "sparse"])
def test_integer_weights_become_float64(make):
    W = make(np.array([[1, 0], [0, -2]]))
    assert matrices.as_matrix(W).dtype == np.float64
    assert matrices.to_dense(matrices.as_matrix(W)).dtype == np.float64
    assert matrices.to_sparse(W).dtype == np.float64
    if make is np.array:
        assert matrices.to_dense(W).dtype == np.float64


def test_nested_lists_are_dense_matrices():
    assert not matrices.is_sparse([[1.0, 2.0]])
    W = matrices.as_matrix([[1.0, 2.0]])
    assert isinstance(W, np.ndarray) and W.shape == (1, 2)


def test_results_are_flagged_canonical_and_float64():
    for W in (
        stored(),
        matrices.from_entries((2, 2), [0, 1], [1, 0], [1, 2]),  # integer values
        matrices.with_entries(stored(), np.arange(4)),
        matrices.select_rows(stored(), np.array([1, 0])),
        matrices.select_columns(stored(), np.array([True, True, False, True])),
    ):
        assert W.has_canonical_format and W.dtype == np.float64


def test_rows_without_entries_at_the_end_keep_their_place():
    W = matrices.from_entries((4, 3), [0, 1], [2, 0], [1.0, 2.0])
    np.testing.assert_array_equal(W.indptr, [0, 1, 2, 2, 2])
    np.testing.assert_array_equal(matrices.row_nonzeros(W), [1, 1, 0, 0])


def test_new_values_keep_the_pattern_and_the_shape():
    for W in both():
        values = np.arange(matrices.entries(W).size)
        moved = matrices.with_entries(W, values)
        assert moved.shape == (3, 4) and moved.dtype == np.float64
        np.testing.assert_array_equal(matrices.entries(moved).ravel(), values)
    np.testing.assert_array_equal(matrices.entries(stored()), VALUES)
    assert matrices.entries(DENSE) is DENSE
    no_last_column = matrices.from_entries((2, 5), [0, 1], [0, 1], [1.0, 2.0])
    assert matrices.with_entries(no_last_column, np.zeros(2)).shape == (2, 5)


def test_new_values_of_any_shape_with_one_value_per_entry_are_taken_in_order():
    dense = matrices.with_entries(DENSE, np.arange(12.0))  # a flat vector for a matrix
    np.testing.assert_array_equal(dense, np.arange(12.0).reshape(3, 4))
    column = matrices.with_entries(stored(), np.arange(4.0).reshape(4, 1))
    np.testing.assert_array_equal(column.data, np.arange(4.0))


def test_the_form_is_chosen_by_the_share_of_stored_entries():
    tall = np.zeros((8, 2))
    tall[:4, 0] = 1.0  # 4 of 16 entries: exactly the threshold keeps it sparse
    chosen = matrices.choose_form(tall)
    assert matrices.is_sparse(chosen) and matrices.equal(chosen, tall)
    tall[4, 1] = 1.0
    assert not matrices.is_sparse(matrices.choose_form(tall))
    # a sparse matrix counts its stored entries, explicit zeros included: 8 of 16 is dense
    padded = matrices.from_entries((4, 4), [0, 0, 1, 1, 2, 2, 3, 3], [0, 1] * 4, [1, 0] * 4)
    dense = matrices.choose_form(padded)
    assert isinstance(dense, np.ndarray)
    np.testing.assert_array_equal(dense, padded.toarray())
    sparse_enough = matrices.choose_form(matrices.from_entries((4, 4), [0], [0], [2.0]))
    assert matrices.is_sparse(sparse_enough) and sparse_enough.nnz == 1


def test_a_sparse_matrix_made_sparse_again_keeps_its_pattern():
    again = matrices.to_sparse(stored())
    assert again.nnz == 4 and matrices.equal(again, DENSE)
    assert matrices.is_sparse(matrices.to_sparse(DENSE))


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_every_operation_agrees_with_its_dense_definition_in_both_forms(form):
    W = DENSE.copy() if form == "dense" else stored()
    pos, neg = matrices.signs(W)
    np.testing.assert_array_equal(matrices.to_dense(pos), np.maximum(DENSE, 0.0))
    np.testing.assert_array_equal(matrices.to_dense(neg), np.minimum(DENSE, 0.0))
    rows = np.array([2.0, -1.0, 0.5])
    cols = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(
        matrices.to_dense(matrices.scale_rows(W, rows)), DENSE * rows[:, None]
    )
    np.testing.assert_array_equal(matrices.to_dense(matrices.scale_columns(W, cols)), DENSE * cols)
    if form == "sparse":  # scaling keeps the pattern, the stored zero included
        for scaled in (matrices.scale_rows(W, rows), matrices.scale_columns(W, cols)):
            assert matrices.is_sparse(scaled) and scaled.nnz == 4
            np.testing.assert_array_equal(scaled.indices, COLS)
    picked = matrices.select_rows(W, np.array([1, 1, 0]))
    np.testing.assert_array_equal(matrices.to_dense(picked), DENSE[[1, 1, 0]])
    mask = np.array([True, False, True, True])
    kept = matrices.select_columns(W, mask)
    np.testing.assert_array_equal(matrices.to_dense(kept), DENSE[:, mask])
    np.testing.assert_array_equal(matrices.dense_row(W, 0), DENSE[0])
    # reads: nonzero entries only (the stored zero at (1, 3) reads nothing)
    np.testing.assert_array_equal(matrices.row_nonzeros(W), [2, 1, 0])
    only = np.array([False, True, False, True])
    np.testing.assert_array_equal(matrices.row_nonzeros(W, columns=only), [1, 1, 0])
    factor = matrices.per_entry(W, rows)
    expected = np.broadcast_to(rows[:, None], DENSE.shape) if form == "dense" else rows[ROWS]
    np.testing.assert_array_equal(factor, expected)
    assert matrices.max_abs(W) == 3.0
    assert matrices.all_finite(W)


def test_the_largest_entry_of_small_and_empty_matrices():
    assert matrices.max_abs(np.array([[0.25, -0.5]])) == 0.5
    assert matrices.max_abs(matrices.from_entries((2, 2), [1], [0], [-0.125])) == 0.125
    assert matrices.max_abs(np.zeros((0, 3))) == 0.0
    assert matrices.max_abs(matrices.from_entries((2, 2), [], [], [])) == 0.0


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_entry_is_found_in_either_form(bad):
    W = stored()
    W.data[2] = bad
    assert not matrices.all_finite(W)
    assert not matrices.all_finite(W.toarray())


def test_equality_compares_values_at_every_position():
    A = stored()
    assert matrices.equal(A, stored())
    assert matrices.equal(A, DENSE) and matrices.equal(DENSE, A)
    assert not matrices.equal(A, DENSE[:, :3])  # another shape
    other = matrices.with_entries(A, np.array([1.5, -2.0, 3.5, 0.0]))
    assert not matrices.equal(A, other)  # same pattern, one value differs
    # same row pointers and values, one entry in another column
    moved = matrices.from_entries(DENSE.shape, ROWS, [0, 1, 2, 3], VALUES)
    assert not matrices.equal(A, moved)
    # different patterns, the same values (a stored zero against no entry)
    assert matrices.equal(A, matrices.from_entries(DENSE.shape, ROWS[:3], COLS[:3], VALUES[:3]))


def _gathered(W, plan):
    rng = np.random.default_rng(0)
    G, H = rng.normal(size=(5, W.shape[0])), rng.normal(size=(5, W.shape[1]))
    got = matrices.outer_entries(G, H, W, plan)
    if matrices.is_sparse(W):
        return got, (G.T @ H)[matrices.entry_rows(W), W.indices]
    return got, G.T @ H


def test_the_gradient_gather_works_without_a_plan_and_for_dense_matrices():
    for W in both():
        got, expected = _gathered(W, None)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_the_gradient_gather_of_more_entries_than_two_chunks():
    rng = np.random.default_rng(1)
    n_rows, per_row = 3000, 50  # 150,000 entries: three chunks of 65,536 or fewer
    cols = np.sort(rng.random((n_rows, 200)).argsort(axis=1)[:, :per_row], axis=1)
    W = matrices.from_entries(
        (n_rows, 200), np.repeat(np.arange(n_rows), per_row), cols.ravel(), np.ones(cols.size)
    )
    plan = matrices.OuterPlan.of(W)
    assert plan.members is None  # rows read different columns: entry by entry, in chunks
    got, expected = _gathered(W, plan)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "rows, cols, shape",
    [
        # 8 rows in two groups of unequal size (6 read columns 0 and 1, 2 read column 2)
        ([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7], [0, 1] * 6 + [2, 2], (8, 3)),
        # one input; rows 0-3 read it, rows 4-7 read nothing: two groups of four, padded
        ([0, 1, 2, 3], [0, 0, 0, 0], (8, 1)),
        # a pattern with no entries at all
        ([], [], (4, 3)),
    ],
    ids=["unequal-groups", "one-input-empty-rows", "no-entries"],
)
def test_the_gradient_gather_at_patterns_of_awkward_shapes(rows, cols, shape):
    W = matrices.from_entries(shape, rows, cols, np.arange(1.0, len(rows) + 1))
    got, expected = _gathered(W, matrices.OuterPlan.of(W))
    assert got.shape == (W.nnz,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
