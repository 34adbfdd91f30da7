"""Tied biases: a layer whose bias is made of shared parameters (a convolution's bias, one per
channel at every position, with a folded batch normalisation's scale and shift) keeps that
structure through training, and its parameters' gradient is the tied sum."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Layer, Network, WeightTie
from pyomo_nnrelax.training import BoundWidth, Trainer
from pyomo_nnrelax.training.parameters import parameter_grads, parameters, with_parameters

BOX = InputBox(lower=[-1.0] * 4, upper=[1.0] * 4)


def _network() -> Network:
    """6 neurons = 2 channels x 3 positions; bias[c, p] = shift[c] + scale[c] * beta[c]."""
    rng = np.random.default_rng(0)
    channel = np.repeat([0, 1], 3)
    scale, shift = np.array([2.0, -0.5]), np.array([0.1, 0.3])
    bias_tie = WeightTie(channel, scale[channel], np.zeros(6), shift[channel])
    first = Layer(rng.normal(size=(6, 4)), bias_tie.weight(np.array([0.2, -0.4])), "relu",
                  bias_tie=bias_tie)  # fmt: skip
    return Network((first, Layer(rng.normal(size=(1, 6)), [0.0], "linear")))


def test_the_bias_parameters_are_read_back_and_rebuilt():
    layer = _network().layers[0]
    beta = layer.bias_tie.parameters(layer.bias)
    np.testing.assert_allclose(beta, [0.2, -0.4])
    np.testing.assert_allclose(layer.bias, [0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    params = parameters(_network().layers)
    assert params[1].shape == (2,)  # two bias parameters, not six
    rebuilt = with_parameters(_network().layers, params)
    np.testing.assert_array_equal(rebuilt[0].bias, layer.bias)


def test_a_tied_bias_gradient_is_the_tied_sum():
    layers = _network().layers
    d_bias = np.arange(6.0)
    grads = [(np.zeros((6, 4)), d_bias), (np.zeros((1, 6)), np.zeros(1))]
    d_beta = parameter_grads(layers, grads)[1]
    np.testing.assert_allclose(d_beta, [2.0 * (0 + 1 + 2), -0.5 * (3 + 4 + 5)])


def test_training_keeps_the_bias_tied():
    net = _network()
    X = BOX.sample(128, np.random.default_rng(1))
    trainer = Trainer(net, X, X.sum(axis=1), input_bounds=BOX, regularizer=BoundWidth(),
                      lam=1e-2, epochs=3, batch_size=32)  # fmt: skip
    trained = trainer.fit().network.layers[0]
    assert trained.bias_tie is not None
    trained.bias_tie.check(trained.bias, "trained bias")
    beta = trained.bias_tie.parameters(trained.bias)
    assert not np.allclose(beta, [0.2, -0.4])  # it trained
    with pytest.raises(Exception, match="does not follow its tie"):
        Layer(trained.weight, trained.bias + np.arange(6.0), "relu", bias_tie=trained.bias_tie)
