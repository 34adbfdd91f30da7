"""Trainer, losses, Adam, target scaling and benchmark functions."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax import Network, interval_bounds, read_onnx, write_onnx
from pyomo_nnrelax.experiments.functions import box, latin_hypercube, peaks
from pyomo_nnrelax.network import forward_cache
from pyomo_nnrelax.onnx import run_onnxruntime
from pyomo_nnrelax.training import L2, Adam, BoundWidth, MSELoss, PinballLoss, Trainer
from pyomo_nnrelax.training.backprop import backward

BOX = box("peaks")


@pytest.fixture(scope="module")
def data():
    X = latin_hypercube(600, BOX, seed=0)
    Xv = latin_hypercube(200, BOX, seed=1)
    return X, peaks(X), Xv, peaks(Xv)


def _trainer(data, **kwargs) -> Trainer:
    X, y, Xv, yv = data
    options = dict(input_bounds=BOX, validation=(Xv, yv), epochs=3, batch_size=32, lr=3e-3, seed=0)
    options.update(kwargs)
    return Trainer(Network.mlp([2, 16, 16, 1], seed=0), X, y, **options)


def _numeric_grad(func, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = eps
        grad[idx] = (func(x + step) - func(x - step)) / (2 * eps)
    return grad


# ---------------------------------------------------------------------- gradients
def test_backprop_gradient_matches_finite_differences():
    net = Network.mlp([3, 6, 5, 2], seed=4)
    X = np.random.default_rng(0).normal(size=(7, 3))
    seed = np.random.default_rng(1).normal(size=(7, 2))
    out, inputs, pre = forward_cache(net.layers, X)
    np.testing.assert_allclose(out, net.forward(X))
    grads = backward(net.layers, inputs, pre, seed)
    for l, layer in enumerate(net.layers):

        def objective(w, b, l=l, layer=layer):
            layers = list(net.layers)
            layers[l] = type(layer)(w, b, layer.activation)
            return float(np.sum(seed * forward_cache(layers, X)[0]))

        d_weight = _numeric_grad(lambda w, layer=layer: objective(w, layer.bias), layer.weight)
        d_bias = _numeric_grad(lambda b, layer=layer: objective(layer.weight, b), layer.bias)
        np.testing.assert_allclose(grads[l][0], d_weight, atol=1e-6)
        np.testing.assert_allclose(grads[l][1], d_bias, atol=1e-6)


@pytest.mark.parametrize(
    "loss, y_cols",
    [(MSELoss(), 3), (PinballLoss([0.1, 0.5, 0.9]), 3), (PinballLoss([0.2, 0.5, 0.8]), 1)],
    ids=["mse", "pinball", "pinball-shared-target"],
)
def test_loss_gradient_matches_finite_differences(loss, y_cols):
    rng = np.random.default_rng(2)
    pred, y = rng.normal(size=(6, 3)), rng.normal(size=(6, y_cols))
    value, grad = loss(pred, y)
    assert value > 0
    numeric = _numeric_grad(lambda p: loss(p, y)[0], pred)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_pinball_loss_values():
    value, _ = PinballLoss([0.9])(np.zeros((2, 1)), np.array([[1.0], [-1.0]]))
    assert value == pytest.approx((0.9 * 1.0 + 0.1 * 1.0) / 2)


def test_adam_first_step_moves_by_lr_against_the_sign():
    (new,) = Adam(lr=0.01).step([np.array([1.0, -2.0, 3.0])], [np.array([5.0, -0.1, 0.0])])
    np.testing.assert_allclose(new, [0.99, -1.99, 3.0], atol=1e-6)


# ---------------------------------------------------------------------- trainer
def test_training_reduces_loss_and_records_history(data):
    trainer = _trainer(data, epochs=4)
    result = trainer.fit()
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]
    assert result.history[-1].train_loss < result.history[0].train_loss
    for h in result.history:
        assert h.val_loss is not None and h.seconds > 0 and h.lp_failures == 0
    assert trainer.history_ == result.history


def test_bound_width_reduces_unstable_neurons(data):
    counts = {}
    for lam in (0.0, 3e-2):
        result = _trainer(data, regularizer=BoundWidth(), lam=lam, epochs=15).fit()
        counts[lam] = interval_bounds(result.network, BOX).unstable_count(result.network)
        assert result.history[-1].regularizer > 0 or lam == 0
    assert counts[3e-2] < 0.75 * counts[0.0]


def test_best_validation_weights_are_restored(data):
    trainer = _trainer(data, epochs=6, lr=0.02)
    result = trainer.fit()
    val = [h.val_loss for h in result.history]
    assert result.best_epoch == int(np.argmin(val)) + 1
    Xv, yv = data[2], data[3]
    scale = trainer.scaling_.scale[0]
    restored = np.mean(((result.network.forward(Xv)[:, 0] - yv) / scale) ** 2)
    assert restored == pytest.approx(min(val))
    assert min(val) < val[-1]  # the restore is not just the last epoch


def test_scaling_is_undone_in_the_exported_network(data):
    trainer = _trainer(data, epochs=2)
    result = trainer.fit()
    X, y = data[0], data[1]
    assert trainer.scaling_.offset[0] == pytest.approx(y.min())
    assert trainer.scaling_.scale[0] == pytest.approx(y.max() - y.min())
    np.testing.assert_allclose(result.network.forward(X), trainer.predict(X), atol=1e-12)
    assert abs(np.mean(result.network.forward(X)[:, 0]) - np.mean(y)) < 0.5 * y.std()


def test_unscaled_training_keeps_user_units(data):
    trainer = _trainer(data, epochs=1, scale_targets=False)
    result = trainer.fit()
    np.testing.assert_array_equal(trainer.scaling_.scale, [1.0])
    np.testing.assert_allclose(result.network.forward(data[0]), trainer.predict(data[0]))
    with pytest.raises(ValueError, match="X has shape"):
        trainer.predict(np.zeros((2, 3)))


def test_zero_epochs_return_the_starting_network(data):
    trainer = _trainer(data, epochs=0)
    result = trainer.fit()
    start = Network.mlp([2, 16, 16, 1], seed=0)
    np.testing.assert_allclose(result.network.forward(data[0]), start.forward(data[0]), atol=1e-12)
    assert result.history == [] and result.best_epoch is None


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("float64", 1e-12)])
def test_a_trained_network_round_trips_through_onnx(data, tmp_path, dtype, atol):
    trainer = _trainer(data, epochs=2, regularizer=BoundWidth(), lam=1e-3)
    result = trainer.fit()
    path = tmp_path / "refined.onnx"
    write_onnx(result.network, path, dtype=dtype)
    X = data[2]
    expected = trainer.predict(X)
    tolerance = atol * max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(run_onnxruntime(path, X), expected, atol=tolerance)
    read = read_onnx(path)
    np.testing.assert_allclose(read.forward(X), expected, atol=atol * 10)
    np.testing.assert_allclose(np.column_stack(read.input_bounds), BOX)


def test_continuing_fit_equals_one_long_fit(data):
    X, y = data[0], data[1]
    one = Trainer(Network.mlp([2, 8, 1], seed=1), X, y, epochs=5, batch_size=50, seed=3)
    two = Trainer(Network.mlp([2, 8, 1], seed=1), X, y, epochs=2, batch_size=50, seed=3)
    two.fit()
    result = two.fit(epochs=3)
    assert [h.epoch for h in result.history] == [3, 4, 5] and len(two.history_) == 5
    assert result.network == one.fit().network


def test_pinball_training_orders_quantiles():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(800, 1))
    y = X[:, 0] + rng.normal(scale=0.5, size=800)
    trainer = Trainer(
        Network.mlp([1, 8, 3], seed=0),
        X,
        y,
        loss="pinball",
        quantiles=[0.1, 0.5, 0.9],
        epochs=15,
        batch_size=32,
        lr=1e-2,
    )
    pred = trainer.fit().network.forward(np.zeros((1, 1)))[0]
    assert pred[0] < pred[1] < pred[2]
    assert pred[2] - pred[0] == pytest.approx(2 * 1.2816 * 0.5, rel=0.35)


def test_regularizer_without_bounds_needs_input_bounds(data):
    X, y = data[0], data[1]
    with pytest.raises(ValueError, match="input_bounds"):
        Trainer(Network.mlp([2, 4, 1]), X, y, regularizer=BoundWidth(), lam=1e-3)
    Trainer(Network.mlp([2, 4, 1]), X, y, regularizer=L2(), lam=1e-3, epochs=1).fit()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"loss": "mae"}, "loss"),
        ({"loss": "pinball"}, "quantiles"),
        ({"loss": "pinball", "quantiles": [1.5]}, "quantiles"),
        ({"quantiles": [0.5]}, "quantiles"),
        ({"lam": -1.0}, "lam"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"regularizer": "bw"}, "regularizer"),
        ({"lp_backend": "gurobi"}, "lp_backend"),
        ({"seed": 1.5}, "seed"),
        ({"validation": (np.zeros((3, 2)), np.zeros(4))}, "validation"),
        ({"input_bounds": [(0, 1)]}, "input_bounds"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(data, kwargs, name):
    X, y = data[0], data[1]
    with pytest.raises(ValueError, match=name):
        Trainer(Network.mlp([2, 4, 1]), X, y, **kwargs)


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.zeros((5, 3)), np.zeros(5), r"X has shape \(5, 3\)"),
        (np.zeros((5, 2)), np.zeros(4), r"y has shape"),
        (np.full((5, 2), np.nan), np.zeros(5), "NaN"),
        (np.zeros((5, 2)), np.array([0, 1, np.nan, 2, 3]), "y contains NaN"),
    ],
)
def test_bad_data_raise(X, y, message):
    with pytest.raises(ValueError, match=message):
        Trainer(Network.mlp([2, 4, 1]), X, y)


def test_predict_before_fit_raises(data):
    with pytest.raises(RuntimeError, match="fit"):
        _trainer(data).predict(data[0])


def test_progress_bar_runs(data, capsys):
    _trainer(data, epochs=1, progress=True).fit()
    assert "training" in capsys.readouterr().err
