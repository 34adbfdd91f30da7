"""Classifiers: the cross-entropy loss, the input gradient of the backward pass, and PGD
adversarial training (Xiao et al. 2019 train verifiable networks this way)."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import InputBox, Network
from pyomo_nnrelax.network import forward_cache
from pyomo_nnrelax.training import PGD, CrossEntropyLoss, Trainer
from pyomo_nnrelax.training.backprop import backward, input_gradient

BOX = InputBox(lower=np.zeros(4), upper=np.ones(4))


def _data(n: int = 300, seed: int = 0):
    X = np.random.default_rng(seed).uniform(0, 1, (n, 4))
    y = (X[:, 0] + X[:, 1] > 1).astype(int) + (X[:, 2] > 0.5).astype(int)
    return X, y


def test_cross_entropy_gradient_passes_central_differences():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(5, 3)), np.array([[0], [2], [1], [1], [0]])
    value, grad = CrossEntropyLoss()(logits, labels)
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(5), labels[:, 0]])
    assert value == pytest.approx(expected, rel=1e-12)
    eps, numeric = 1e-6, np.empty_like(logits)
    for idx in np.ndindex(logits.shape):
        step = np.zeros_like(logits)
        step[idx] = eps
        up, down = (
            CrossEntropyLoss()(logits + step, labels)[0],
            CrossEntropyLoss()(logits - step, labels)[0],
        )
        numeric[idx] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_the_input_gradient_passes_central_differences(storage):
    net = Network.mlp([4, 7, 6, 3], seed=2).in_storage(storage)
    X = np.random.default_rng(3).uniform(0, 1, (5, 4))
    seed = np.random.default_rng(4).normal(size=(5, 3))
    _, inputs, pre = forward_cache(net.layers, X)
    grad = input_gradient(net.layers, inputs, pre, seed)
    eps, numeric = 1e-6, np.empty_like(X)
    for idx in np.ndindex(X.shape):
        step = np.zeros_like(X)
        step[idx] = eps
        numeric[idx] = (
            np.sum(seed * net.forward(X + step)) - np.sum(seed * net.forward(X - step))
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-7)
    assert len(backward(net.layers, inputs, pre, seed)) == len(net.layers)


def test_pgd_stays_in_the_clipped_balls_and_raises_the_loss():
    X, y = _data()
    net = Trainer(Network.mlp([4, 16, 3], seed=0), X, y, loss="cross_entropy", epochs=30,
                  batch_size=32, lr=1e-2).fit().network  # fmt: skip
    attack = PGD(eps=0.08, steps=10, step_size=0.02)
    X_adv = attack.attack(net.layers, X, y[:, None], CrossEntropyLoss(), BOX.lower, BOX.upper,
                          np.random.default_rng(0))  # fmt: skip
    assert np.all(np.abs(X_adv - X) <= 0.08 + 1e-12)
    assert np.all((X_adv >= 0.0) & (X_adv <= 1.0))
    clean = CrossEntropyLoss()(net.forward(X), y[:, None])[0]
    attacked = CrossEntropyLoss()(net.forward(X_adv), y[:, None])[0]
    assert attacked > clean
    accuracy = lambda Z: np.mean(np.argmax(net.forward(Z), axis=1) == y)  # noqa: E731
    assert accuracy(X_adv) < accuracy(X)


def test_adversarial_training_trains_on_the_attacked_points(monkeypatch):
    X, y = _data()
    seen = []
    real = PGD.attack

    def spy(self, layers, Xb, yb, loss, lower, upper, rng):
        out = real(self, layers, Xb, yb, loss, lower, upper, rng)
        seen.append(np.abs(out - Xb).max())
        return out

    monkeypatch.setattr(PGD, "attack", spy)
    trainer = Trainer(Network.mlp([4, 16, 3], seed=0), X, y, loss="cross_entropy", epochs=2,
                      batch_size=50, input_bounds=BOX, adversarial=PGD(0.05, steps=2))  # fmt: skip
    trainer.fit()
    assert len(seen) == 2 * 6 and 0 < max(seen) <= 0.05 + 1e-12


def test_cross_entropy_needs_class_indices_and_a_pgd():
    X, y = _data()
    with pytest.raises(ValueError, match="class indices 0..2"):
        Trainer(Network.mlp([4, 8, 3]), X, y + 0.5, loss="cross_entropy")
    with pytest.raises(ValueError, match="class indices 0..2"):
        Trainer(Network.mlp([4, 8, 3]), X, y + 3, loss="cross_entropy")
    with pytest.raises(ValueError, match="adversarial must be a PGD"):
        Trainer(Network.mlp([4, 8, 3]), X, y, loss="cross_entropy", adversarial=0.1)
    with pytest.raises(ValueError, match="eps must be"):
        PGD(eps=0.0)
