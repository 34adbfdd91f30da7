"""Test functions of the paper's experiments, their input boxes, and Latin-hypercube sampling.

Each function takes a batch ``X`` (n, d) and returns (n,) values; :func:`box` gives the
standard domain of docs/method.md, section 5, as an (d, 2) array of ``(lo, hi)`` rows.
"""

from __future__ import annotations

import numpy as np

from ..checks import positive_int

_BOXES = {"peaks": (-2.0, 2.0, 2), "himmelblau": (-5.0, 5.0, 2), "ackley": (-3.5, 3.5, None)}


def _batch(X, dims: int | None = None) -> np.ndarray:
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    if dims is not None and X.shape[1] != dims:
        raise ValueError(f"X has {X.shape[1]} columns, this function takes {dims}")
    return X


def peaks(X) -> np.ndarray:
    """MATLAB's ``peaks``: a sum of three Gaussians and a polynomial-times-Gaussian in 2-D."""
    x, y = _batch(X, 2).T
    return (
        3.0 * (1.0 - x) ** 2 * np.exp(-(x**2) - (y + 1.0) ** 2)
        - 10.0 * (x / 5.0 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1.0) ** 2) - y**2) / 3.0
    )


def himmelblau(X) -> np.ndarray:
    """Himmelblau's function ``(x^2 + y - 11)^2 + (x + y^2 - 7)^2``; four zeros, e.g. (3, 2)."""
    x, y = _batch(X, 2).T
    return (x**2 + y - 11.0) ** 2 + (x + y**2 - 7.0) ** 2


def ackley(X) -> np.ndarray:
    """Ackley's function in any dimension (a = 20, b = 0.2, c = 2 pi); minimum 0 at the origin."""
    X = _batch(X)
    return (
        -20.0 * np.exp(-0.2 * np.sqrt(np.mean(X**2, axis=1)))
        - np.exp(np.mean(np.cos(2.0 * np.pi * X), axis=1))
        + 20.0
        + np.e
    )


def box(name: str, dim: int = 2) -> np.ndarray:
    """Standard input box of a benchmark: (dim, 2) rows of ``(lo, hi)``.

    peaks [-2, 2]^2, himmelblau [-5, 5]^2, ackley [-3.5, 3.5]^dim.
    """
    if name not in _BOXES:
        raise ValueError(f"name must be one of {sorted(_BOXES)}, got {name!r}")
    lo, hi, fixed = _BOXES[name]
    if fixed is not None and dim != fixed:
        raise ValueError(f"dim: {name} is {fixed}-dimensional, got dim={dim}")
    return np.tile([lo, hi], (dim, 1))


def latin_hypercube(n: int, bounds, seed: int | None = 0) -> np.ndarray:
    """``n`` Latin-hypercube samples in a box: each coordinate hits each of n strata once.

    Parameters
    ----------
    n : int
    bounds : array-like (d, 2)
        Rows of ``(lo, hi)``, e.g. ``box("peaks")``.
    seed : int, optional
    """
    bounds = np.asarray(bounds, dtype=np.float64)
    if bounds.ndim != 2 or bounds.shape[1] != 2 or np.any(bounds[:, 0] > bounds[:, 1]):
        raise ValueError(
            f"bounds must be (d, 2) rows of (lo, hi) with lo <= hi, got shape {bounds.shape}"
        )
    n = positive_int("n", n)
    rng = np.random.default_rng(seed)
    d = bounds.shape[0]
    strata = np.stack([rng.permutation(n) for _ in range(d)], axis=1)
    unit = (strata + rng.random((n, d))) / n
    return bounds[:, 0] + unit * (bounds[:, 1] - bounds[:, 0])
