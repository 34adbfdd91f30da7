"""``pyomo_nnrelax.matrices``: the operations of dense and sparse weights agree with their dense
definitions, and a sparse weight's pattern (explicit zeros included) survives every one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from pyomo_nnrelax import matrices
from pyomo_nnrelax.onnx.index_maps import conv_map


def _conv_pattern(in_shape=(2, 7, 7), out_channels=4, pads=(1, 1, 1, 1), seed=0):
    """The folded matrix of a padded, strided convolution (border rows read fewer inputs)."""
    smap = conv_map(in_shape, (out_channels, in_shape[0], 3, 3), [2, 2], list(pads), [1, 1], 1)
    order = np.lexsort((smap.cols, smap.rows))
    values = np.random.default_rng(seed).normal(size=order.size)
    shape = (int(np.prod(smap.out_shape)), int(np.prod(in_shape)))
    return matrices.from_entries(shape, smap.rows[order], smap.cols[order], values)


def _random_sparse(shape=(30, 40), density=0.2, seed=1):
    A = sparse.random(*shape, density=density, random_state=seed, format="csr")
    A.data[::7] = 0.0  # explicit zeros: part of the pattern
    return matrices.as_matrix(A)


def test_canonical_form_keeps_explicit_zeros_and_sums_duplicates():
    coo = sparse.coo_array(([1.0, 0.0, 2.0, 3.0], ([0, 0, 1, 0], [2, 1, 0, 2])), shape=(2, 3))
    W = matrices.as_matrix(coo)
    assert W.nnz == 3 and W.has_canonical_format
    np.testing.assert_array_equal(W.toarray(), [[0.0, 0.0, 4.0], [2.0, 0.0, 0.0]])
    assert 0.0 in W.data  # the stored zero at (0, 1) stays in the pattern


@pytest.mark.parametrize("make", [_conv_pattern, _random_sparse], ids=["conv", "random"])
def test_outer_entries_equal_the_dense_product_at_the_pattern(make):
    W = make()
    rng = np.random.default_rng(2)
    G, H = rng.normal(size=(11, W.shape[0])), rng.normal(size=(11, W.shape[1]))
    plan = matrices.OuterPlan.of(W)
    if make is _conv_pattern:
        assert plan.members is not None  # one batched product over the positions
    got = matrices.outer_entries(G, H, W, plan)
    expected = (G.T @ H)[matrices.entry_rows(W), W.indices]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_products_signs_and_scalings_match_the_dense_definitions():
    W = _random_sparse()
    D = W.toarray()
    rng = np.random.default_rng(3)
    H, G = rng.normal(size=(5, W.shape[1])), rng.normal(size=(5, W.shape[0]))
    np.testing.assert_allclose(matrices.times_transpose(H, W), H @ D.T, atol=1e-12)
    np.testing.assert_allclose(matrices.times(G, W), G @ D, atol=1e-12)
    pos, neg = matrices.signs(W)
    assert pos.nnz == neg.nnz == W.nnz  # the pattern, zeros included
    np.testing.assert_array_equal(pos.toarray(), np.maximum(D, 0.0))
    np.testing.assert_array_equal(neg.toarray(), np.minimum(D, 0.0))
    f_rows, f_cols = rng.normal(size=W.shape[0]), rng.normal(size=W.shape[1])
    np.testing.assert_allclose(matrices.scale_rows(W, f_rows).toarray(), f_rows[:, None] * D)
    np.testing.assert_allclose(matrices.scale_columns(W, f_cols).toarray(), D * f_cols)
    np.testing.assert_array_equal(matrices.row_nonzeros(W), np.count_nonzero(D, axis=1))
    mask = rng.random(W.shape[1]) < 0.5
    np.testing.assert_array_equal(
        matrices.row_nonzeros(W, columns=mask), np.count_nonzero(D[:, mask], axis=1)
    )


def test_row_and_column_selections_keep_the_pattern():
    W = _random_sparse()
    rows = np.array([5, 0, 5, 29])
    picked = matrices.select_rows(W, rows)
    np.testing.assert_array_equal(picked.toarray(), W.toarray()[rows])
    assert picked.nnz == sum(W.indptr[r + 1] - W.indptr[r] for r in rows)
    mask = np.arange(W.shape[1]) % 3 != 0
    kept = matrices.select_columns(W, mask)
    np.testing.assert_array_equal(kept.toarray(), W.toarray()[:, mask])
    assert kept.nnz == int(np.count_nonzero(mask[W.indices]))
    np.testing.assert_array_equal(matrices.dense_row(W, 7), W.toarray()[7])


def test_with_entries_moves_values_on_a_fixed_pattern_and_forms_are_chosen_by_density():
    W = _random_sparse()
    moved = matrices.with_entries(W, np.arange(W.nnz, dtype=float))
    np.testing.assert_array_equal(moved.indices, W.indices)
    np.testing.assert_array_equal(moved.data, np.arange(W.nnz))
    dense = np.ones((4, 4))
    assert not matrices.is_sparse(matrices.choose_form(dense))
    assert matrices.is_sparse(matrices.choose_form(np.eye(8)))  # 1/8 of the entries
    assert matrices.equal(matrices.to_sparse(np.eye(8)), np.eye(8))
