"""Central-difference checks of gradients with respect to every weight and bias."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pyomo_nnrelax import InputBox, Layer
from pyomo_nnrelax.matrices import with_entries
from pyomo_nnrelax.training import RegContext


def flat(layers: Sequence[Layer]) -> np.ndarray:
    """Every weight entry (a sparse layer's stored ones) and bias, layer by layer."""
    return np.concatenate([np.concatenate([l.entries.ravel(), l.bias]) for l in layers])


def unflat(layers: Sequence[Layer], theta: np.ndarray) -> tuple[Layer, ...]:
    """The layers with the entries and biases of ``theta`` (:func:`flat`'s order), untied."""
    out, i = [], 0
    for l in layers:
        w = with_entries(l.weight, theta[i : i + l.entries.size])
        i += l.entries.size
        out.append(Layer(w, theta[i : i + l.n_out], l.activation))
        i += l.n_out
    return tuple(out)


def flat_grads(grads) -> np.ndarray:
    """``[(dW, db), ...]`` in :func:`flat`'s order."""
    return np.concatenate([np.concatenate([dw.ravel(), db]) for dw, db in grads])


def assert_gradient(
    func: Callable[[tuple[Layer, ...]], float], layers, analytic, eps=1e-6, rtol=1e-5
) -> None:
    """Central differences of ``func(layers)`` over every weight and bias vs ``analytic``."""
    theta = flat(layers)
    numeric = np.empty_like(theta)
    for k in range(theta.size):
        step = np.zeros_like(theta)
        step[k] = eps
        up, down = func(unflat(layers, theta + step)), func(unflat(layers, theta - step))
        numeric[k] = (up - down) / (2 * eps)
    analytic = flat_grads(analytic)
    scale = max(1.0, np.abs(numeric).max())
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=rtol * scale)
    assert np.abs(numeric).max() > 1e-3, "the check is vacuous: the gradient is zero"


def reg_context(layers, box: InputBox, X=None, seed: int = 0, **kwargs) -> RegContext:
    """A regularizer's context over ``box`` at the mini-batch ``X`` (default: one zero row)."""
    X = np.zeros((1, box.n_inputs)) if X is None else X
    return RegContext(tuple(layers), *box, X, np.random.default_rng(seed), **kwargs)
