"""The network model: construction checks, the forward pass, copies and equality."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, InvalidNetworkError, Layer, Network
from pyomo_nnrelax.network import forward_cache


def hand_network() -> Network:
    """2 inputs -> 2 ReLUs -> 1 linear output, with weights small enough to follow by hand."""
    return Network(
        (
            Layer(np.array([[1.0, -1.0], [2.0, 0.5]]), np.array([0.0, -1.0])),
            Layer(np.array([[1.0, -2.0]]), np.array([0.5]), "linear"),
        )
    )


def test_forward_pass_by_hand():
    # x = (1, 2): z0 = (-1, 2), h0 = (0, 2), out = 0 - 4 + 0.5
    net = hand_network()
    np.testing.assert_allclose(net.forward([[1.0, 2.0]]), [[-3.5]])
    z0, z1 = net.pre_activations([[1.0, 2.0]])
    np.testing.assert_allclose(z0, [[-1.0, 2.0]])
    np.testing.assert_allclose(z1, [[-3.5]])
    out, inputs, pre = forward_cache(net.layers, np.array([[1.0, 2.0]]))
    np.testing.assert_allclose(inputs[1], [[0.0, 2.0]])
    np.testing.assert_allclose(out, z1)


def test_shaped_inputs_are_flattened_row_major():
    net = Network.mlp([6, 4, 1], seed=0)
    shaped = Network(net.layers, input_shape=(2, 3))
    X = np.random.default_rng(0).normal(size=(5, 2, 3))
    np.testing.assert_allclose(shaped.forward(X), net.forward(X.reshape(5, 6)))
    np.testing.assert_allclose(shaped.forward(X[0]), net.forward(X[0].reshape(1, 6)))


def test_copies_keep_names_shapes_and_the_box():
    net = Network(hand_network().layers, input_name="u", output_name="v")
    boxed = net.with_input_bounds([-1, -2], [1, 2])
    assert boxed.input_bounds == InputBox([-1, -2], [1, 2])
    trained = boxed.with_layers([Layer(2 * l.weight, l.bias, l.activation) for l in net.layers])
    assert (trained.input_name, trained.output_name) == ("u", "v")
    assert trained.input_bounds == boxed.input_bounds and trained != boxed
    assert boxed == net  # equality compares layers and shapes, not the box


def test_weights_are_frozen_copies():
    w = np.ones((2, 2))
    layer = Layer(w, np.zeros(2))
    w[0, 0] = 5.0
    assert layer.weight[0, 0] == 1.0
    with pytest.raises(ValueError):
        layer.weight[0, 0] = 3.0


def test_mlp_needs_positive_widths():
    with pytest.raises(InvalidNetworkError, match="at least two positive widths"):
        Network.mlp([2])
    with pytest.raises(InvalidNetworkError, match="at least two positive widths"):
        Network.mlp([2, 0, 1])


def test_unknown_activation_and_bad_shapes_are_named():
    with pytest.raises(InvalidNetworkError, match="unknown activation 'tanh'"):
        Layer(np.ones((1, 2)), np.zeros(1), "tanh")
    with pytest.raises(InvalidNetworkError, match=r"bias has shape \(2,\), expected \(1,\)"):
        Layer(np.ones((1, 2)), np.zeros(2))
    with pytest.raises(InvalidNetworkError, match="input_shape"):
        Network(hand_network().layers, input_shape=(3,))
    with pytest.raises(InvalidNetworkError, match="at least one layer"):
        Network(())


def test_nan_weights_raise_invalid_network_error_naming_the_layer():
    w = np.ones((3, 2))
    w[1, 0] = np.nan
    with pytest.raises(InvalidNetworkError, match="layer 0 weight contains NaN"):
        Network((Layer(w, np.zeros(3)), Layer(np.ones((1, 3)), np.zeros(1), "linear")))


def test_mismatched_layer_shapes_raise_invalid_network_error():
    with pytest.raises(InvalidNetworkError, match="layer 1 takes 4 inputs but layer 0 gives 3"):
        Network((Layer(np.ones((3, 2)), np.zeros(3)), Layer(np.ones((1, 4)), np.zeros(1))))
