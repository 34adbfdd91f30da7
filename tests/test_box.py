"""The input box: one way to say pairs, one way to say lower/upper, and an error (naming both
readings) for anything that could be read two ways, the same in every place a box is taken."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Network, NNBlock, interval_bounds, tighten_bounds
from pyomo_nnrelax.box import as_input_box, expand_pairs, resolve_box
from pyomo_nnrelax.errors import InputBoundsError
from pyomo_nnrelax.training import Trainer

AMBIGUOUS = ([-1.5, -1.0], [1.0, 1.5])
BOTH_READINGS = (
    r"read two ways .* as \(lo, hi\) pairs, the box \[-1.5, -1\] x \[1, 1.5\]; as "
    r"\(lower, upper\) arrays, the box \[-1.5, 1\] x \[-1, 1.5\]"
)


@pytest.fixture(scope="module")
def net() -> Network:
    return Network.mlp([2, 4, 1], seed=0)


@pytest.mark.parametrize("form", [AMBIGUOUS, np.array(AMBIGUOUS), tuple(map(np.array, AMBIGUOUS))])
def test_a_box_readable_two_ways_is_an_error_naming_both(form):
    with pytest.raises(InputBoundsError, match=BOTH_READINGS):
        as_input_box(form, 2)


@pytest.mark.parametrize(
    "take",
    [
        lambda net, box: NNBlock(net, input_bounds=box),
        lambda net, box: interval_bounds(net, box),
        lambda net, box: tighten_bounds(net, input_bounds=box),
        lambda net, box: Trainer(net, np.zeros((4, 2)), np.zeros(4), input_bounds=box),
        lambda net, box: Network(net.layers, input_bounds=box),
    ],
    ids=["block", "interval_bounds", "tighten_bounds", "trainer", "network"],
)
def test_every_place_that_takes_a_box_refuses_the_ambiguous_one(net, take):
    with pytest.raises(InputBoundsError, match="read two ways"):
        take(net, AMBIGUOUS)


def test_named_forms_say_which_reading_is_meant(net):
    pairs = InputBox.from_pairs(AMBIGUOUS)
    arrays = InputBox(lower=AMBIGUOUS[0], upper=AMBIGUOUS[1])
    assert pairs.pairs() == [(-1.5, -1.0), (1.0, 1.5)]
    assert arrays.pairs() == [(-1.5, 1.0), (-1.0, 1.5)]
    block = NNBlock(net, input_bounds=arrays)
    np.testing.assert_array_equal(block.bounds.input_lower, [-1.5, -1.0])
    np.testing.assert_array_equal(block.bounds.input_upper, [1.0, 1.5])


@pytest.mark.parametrize(
    "form, lower, upper",
    [
        ([(-2, 2), (-2, 2)], [-2, -2], [2, 2]),  # the other reading fixes every input
        ([(-5, 5), (0, 1)], [-5, 0], [5, 1]),  # as (lower, upper) input 1 would be inverted
        ([(0, 1), (0, 1), (2, 3)], [0, 0, 2], [1, 1, 3]),  # three inputs: only pairs fit
    ],
)
def test_inputs_with_one_sensible_reading_are_read_that_way(form, lower, upper):
    box = as_input_box(form, len(lower))
    np.testing.assert_array_equal(box.lower, lower)
    np.testing.assert_array_equal(box.upper, upper)


def test_lower_and_upper_arrays_of_other_lengths_have_one_reading():
    box = as_input_box((np.zeros(3), np.ones(3)), 3)
    assert box.pairs() == [(0.0, 1.0)] * 3


def test_an_inverted_pair_is_not_rescued_by_the_other_reading():
    with pytest.raises(InputBoundsError, match=r"inverted .* inputs \[1\].* the box \[-1, 2\]"):
        as_input_box([(-1, 1), (2, 1)], 2)


def test_which_box_applies_given_then_stored_then_data(net):
    given = InputBox.from_pairs([(0, 1), (0, 2)])
    stored = net.with_input_bounds([-1, -1], [1, 1])
    X = np.array([[0.5, -3.0], [2.0, 4.0]])
    assert resolve_box(given, stored, X) == given
    assert resolve_box(None, stored, X) == stored.input_bounds
    assert resolve_box(None, net, X) == InputBox([0.5, -3.0], [2.0, 4.0])
    with pytest.raises(InputBoundsError, match=r"inputs 0\.\.1 lack bounds"):
        resolve_box(None, net)


def test_one_text_pair_stands_for_every_input():
    assert expand_pairs([(-1.0, 1.0)], 3) == InputBox.uniform(-1.0, 1.0, 3)
    with pytest.raises(InputBoundsError, match="2 pairs but the network has 3 inputs"):
        expand_pairs([(0.0, 1.0), (2.0, 3.0)], 3)


def test_a_box_unpacks_like_the_old_lower_upper_pair():
    box = InputBox([0.0, 1.0], [2.0, 3.0])
    lo, hi = box
    np.testing.assert_array_equal(lo, box[0])
    np.testing.assert_array_equal(hi, box[1])
    assert box.contains([[1.0, 2.0], [3.0, 2.0]]).tolist() == [True, False]
    with pytest.raises(ValueError):
        box.lower[0] = 5.0


@pytest.mark.parametrize(
    "form",
    [
        [(-0.25, -0.25), (0.0, 0.0)],  # a point as pairs, a box as arrays (found by hypothesis)
        (np.full(2, -1.0), np.full(2, 1.0)),  # 0.1's (lower, upper) form: a point as pairs
    ],
)
def test_a_valid_pairs_reading_is_never_replaced_by_the_arrays_reading(form):
    with pytest.raises(InputBoundsError, match=r"read two ways .* as \(lo, hi\) pairs, the box"):
        as_input_box(form, 2)
    assert as_input_box(InputBox(lower=form[0], upper=form[1]), 2).lower.tolist() == list(form[0])
