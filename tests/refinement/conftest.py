"""Shared by the refinement tests: 256 samples of ``sin(x0) * x1`` over [-2, 2]^2."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (256, 2))
    return X, np.sin(X[:, 0]) * X[:, 1]
