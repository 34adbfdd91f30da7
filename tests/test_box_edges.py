"""Edges of the input box that the mutation run (``tools/mutation.py``) found unchecked:
equality, the boundary and ``tol`` of ``contains``, the data's bounding box, sampling, one
text pair per input, and numbers given as text."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pyomo_nnrelax import InputBox
from pyomo_nnrelax.box import expand_pairs
from pyomo_nnrelax.errors import InputBoundsError


def test_a_box_has_two_ends_like_the_old_lower_upper_pair():
    box = InputBox([0.0, -1.0, 2.0], [1.0, 1.0, 2.0])
    assert len(box) == 2 and len(list(box)) == 2
    lower, upper = box
    assert lower.tolist() == [0.0, -1.0, 2.0] and upper.tolist() == [1.0, 1.0, 2.0]


def test_boxes_are_equal_only_when_both_ends_agree():
    box = InputBox([0.0, 0.0], [1.0, 1.0])
    assert box == InputBox([0, 0], [1, 1])
    assert box != InputBox([-1.0, 0.0], [1.0, 1.0])  # same upper ends
    assert box != InputBox([0.0, 0.0], [2.0, 1.0])  # same lower ends
    assert box != (box.lower, box.upper)  # the old pair is not a box


def test_the_boundary_belongs_to_the_box_and_tol_widens_it_on_every_side():
    box = InputBox([0.0, -1.0], [1.0, 1.0])
    assert box.contains([[0.0, -1.0], [1.0, 1.0], [0.0, 1.0], [1.0, -1.0]]).all()
    outside = [[-0.05, 0.0], [1.05, 0.0], [0.5, -1.05], [0.5, 1.05]]
    assert not box.contains(outside).any()
    assert box.contains(outside, tol=0.1).all()
    assert not box.contains(outside, tol=0.01).any()


def test_the_bounding_box_of_one_sample_is_that_point():
    assert InputBox.around([[0.5, -2.0]]).pairs() == [(0.5, 0.5), (-2.0, -2.0)]


@pytest.mark.parametrize("X", [np.zeros((0, 2)), np.zeros(3), np.zeros((2, 2, 2))])
def test_data_that_is_not_a_non_empty_table_is_refused_naming_its_shape(X):
    with pytest.raises(InputBoundsError, match=re.escape(f"got shape {X.shape}")):
        InputBox.around(X)


def test_numbers_given_as_text_are_read_as_numbers_by_every_box_method():
    X = np.array([["10", "-1"], ["9", "2.5"]])  # e.g. a CSV read with dtype=str
    box = InputBox.around(X)
    assert box.pairs() == [(9.0, 10.0), (-1.0, 2.5)]  # numeric order: "10" < "9" as text
    assert box.contains(np.array([["9.5", "0"], ["8", "0"]])).tolist() == [True, False]
    assert InputBox.from_pairs([("9", "10"), ("-1", "2.5")]) == box


def test_samples_are_uniform_over_the_box():
    box = InputBox([-2.0, 10.0, 3.0], [2.0, 11.0, 3.0])
    X = box.sample(2000, np.random.default_rng(0))
    assert X.shape == (2000, 3)
    assert box.contains(X).all()
    np.testing.assert_allclose(X.mean(axis=0), box.center, atol=0.1)
    np.testing.assert_allclose(X.min(axis=0), box.lower, atol=0.05)
    np.testing.assert_allclose(X.max(axis=0), box.upper, atol=0.05)


def test_one_text_pair_per_input_gives_each_input_its_own_range():
    assert expand_pairs([(0.0, 1.0), (-3.0, 2.0)], 2) == InputBox([0.0, -3.0], [1.0, 2.0])


def test_a_box_covers_exactly_the_boxes_inside_it():
    box = InputBox([0.0, -1.0], [1.0, 1.0])
    assert box.covers(box)
    assert box.covers(InputBox([0.5, -1.0], [1.0, 0.0]))
    assert not box.covers(InputBox([-0.1, -1.0], [1.0, 1.0]))  # sticks out below
    assert not box.covers(InputBox([0.0, -1.0], [1.0, 1.1]))  # sticks out above
    assert not InputBox([0.5, -1.0], [1.0, 0.0]).covers(box)
