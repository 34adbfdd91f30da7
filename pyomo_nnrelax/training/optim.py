"""Adam on a list of numpy arrays, keeping its moments between calls."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Adam:
    """Adam (Kingma and Ba, 2015) with bias correction.

    The first and second moments live on the optimizer, so a trainer that resumes training
    (``fit`` called again) continues the same trajectory.

    Parameters
    ----------
    lr : float
        Step size.
    betas : (float, float)
        Decay rates of the first and second moments.
    eps : float
        Added to the root of the second moment.
    """

    def __init__(
        self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps
        self.steps = 0
        self._m: list[np.ndarray] | None = None
        self._v: list[np.ndarray] | None = None

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        """New parameter arrays after one step against ``grads`` (inputs are not modified)."""
        if self._m is None:
            self._m = [np.zeros_like(p) for p in params]
            self._v = [np.zeros_like(p) for p in params]
        b1, b2 = self.betas
        self.steps += 1
        c1, c2 = 1.0 - b1**self.steps, 1.0 - b2**self.steps
        new = []
        for i, (p, g) in enumerate(zip(params, grads)):
            self._m[i] = b1 * self._m[i] + (1.0 - b1) * g
            self._v[i] = b2 * self._v[i] + (1.0 - b2) * g * g
            new.append(p - self.lr * (self._m[i] / c1) / (np.sqrt(self._v[i] / c2) + self.eps))
        return new
