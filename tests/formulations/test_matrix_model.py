"""The matrix form of a MILP: groups, merged entries, and the same matrix row- and column-wise."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax.formulations.matrix_model import MatrixModelBuilder


def small_model():
    builder = MatrixModelBuilder()
    x = builder.add_vars("x", [0.0, -1.0, 2.0], [1.0, 1.0, 3.0])
    a = builder.add_vars("a", [0.0, 0.0], 1.0, layer=0, index=[4, 7], integer=True)
    # two rows with a per-row column and coefficient, and a shared block of columns
    builder.add_rows(
        "r",
        [(x[[0, 1]], np.array([2.0, 0.0])), (a, np.array([[1.0, 3.0], [0.0, 1.0]]))],
        -1.0,
        [4.0, np.inf],
        layer=0,
        index=[4, 7],
    )
    # the same column twice in one row: the entries are merged
    builder.add_rows("s", [(x[[2]], np.array([1.5])), (x[[2]], np.array([0.5]))], 0.0, 0.0)
    return builder.build()


def test_groups_entries_and_bounds():
    model = small_model()
    assert (model.n_cols, model.n_rows) == (5, 3)
    np.testing.assert_array_equal(model.cols("a", 0), [3, 4])
    np.testing.assert_array_equal(model.var_groups[("a", 0)].index, [4, 7])
    np.testing.assert_array_equal(model.rows("s"), [2])
    np.testing.assert_array_equal(model.integer, [False, False, False, True, True])
    dense = np.array(
        [
            [2.0, 0.0, 0.0, 1.0, 3.0],  # the zero coefficient on x1 is dropped
            [0.0, 0.0, 0.0, 0.0, 1.0],
            [0.0, 0.0, 2.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_array_equal(model.dense(), dense)
    cols, values = model.row(0)
    assert cols.tolist() == [0, 3, 4] and values.tolist() == [2.0, 1.0, 3.0]
    np.testing.assert_array_equal(model.row_lower, [-1.0, -1.0, 0.0])
    np.testing.assert_array_equal(model.row_upper, [4.0, np.inf, 0.0])
    np.testing.assert_array_equal(model.col_upper, [1.0, 1.0, 3.0, 1.0, 1.0])


def test_column_wise_form_is_the_same_matrix():
    model = small_model()
    start, index, value = model.csc()
    rebuilt = np.zeros((model.n_rows, model.n_cols))
    for j in range(model.n_cols):
        rebuilt[index[start[j] : start[j + 1]], j] = value[start[j] : start[j + 1]]
    np.testing.assert_array_equal(rebuilt, model.dense())


def test_a_group_added_twice_is_an_error():
    builder = MatrixModelBuilder()
    builder.add_vars("x", [0.0], [1.0])
    with pytest.raises(ValueError, match=r"group \('x', None\) added twice"):
        builder.add_vars("x", [0.0], [1.0])
