"""Benchmark functions and Latin-hypercube sampling of the experiments."""

from __future__ import annotations

import numpy as np
import pytest

from pyomo_nnrelax.experiments.functions import ackley, box, himmelblau, latin_hypercube, peaks


def test_benchmark_functions_known_values():
    assert himmelblau([[3.0, 2.0]])[0] == pytest.approx(0.0, abs=1e-12)
    assert himmelblau([[-2.805118, 3.131312]])[0] == pytest.approx(0.0, abs=1e-9)
    assert ackley(np.zeros((1, 5)))[0] == pytest.approx(0.0, abs=1e-12)
    assert ackley([[1.0, 1.0]])[0] == pytest.approx(20.0 - 20.0 * np.exp(-0.2), abs=1e-12)
    assert peaks([[0.0, 0.0]])[0] == pytest.approx(3 * np.exp(-1) - np.exp(-1) / 3)
    np.testing.assert_array_equal(box("ackley", 5), np.tile([-3.5, 3.5], (5, 1)))
    np.testing.assert_array_equal(box("himmelblau"), [[-5, 5], [-5, 5]])
    with pytest.raises(ValueError, match="dim"):
        box("peaks", 3)


def test_latin_hypercube_hits_every_stratum_once():
    bounds = np.array([[-2.0, 2.0], [0.0, 10.0], [5.0, 6.0]])
    X = latin_hypercube(50, bounds, seed=4)
    assert X.shape == (50, 3)
    strata = np.floor((X - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0]) * 50).astype(int)
    for column in strata.T:
        assert sorted(column) == list(range(50))
    np.testing.assert_array_equal(X, latin_hypercube(50, bounds, seed=4))
