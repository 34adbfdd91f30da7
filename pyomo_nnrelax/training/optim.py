"""Adam on a list of numpy arrays, keeping its moments between calls, and projected Adam on
the dual network's lower slopes, each sample with its own moments (:class:`Slopes`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

    def state(self) -> dict[str, np.ndarray]:
        """The step count and the moments (``m_0``, ``v_0``, ... per parameter array; none
        before the first step), as arrays that :meth:`load_state` takes back."""
        arrays = {"steps": np.array(self.steps)}
        for i, (m, v) in enumerate(zip(self._m or [], self._v or [])):
            arrays[f"m_{i}"], arrays[f"v_{i}"] = m, v
        return arrays

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from :meth:`state`'s arrays: the next step is the one that would have
        followed."""
        count = sum(1 for key in state if key.startswith("m_"))
        try:
            m = [np.array(state[f"m_{i}"], dtype=np.float64) for i in range(count)]
            v = [np.array(state[f"v_{i}"], dtype=np.float64) for i in range(count)]
            self.steps = int(state["steps"])
        except KeyError as exc:
            raise ValueError(f"Adam state lacks {exc.args[0]!r}") from None
        self._m, self._v = (m, v) if count else (None, None)


class SlopeAdam:
    """Projected Adam ascent on the lower slopes of many samples, each with its own moments
    and step count, kept between calls (the slopes of a training sample are a warm start for
    its next mini-batch).

    Parameters
    ----------
    lr : float
        Step size in slope units (slopes live in ``[0, 1]``).
    betas, eps :
        As in :class:`Adam`.
    """

    def __init__(
        self, lr: float = 0.2, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-12
    ) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps

    def step(
        self, alpha: np.ndarray, descent: np.ndarray, m: np.ndarray, v: np.ndarray, t: np.ndarray
    ) -> None:
        """Move ``alpha`` against ``descent`` (the derivative of what the slopes lower) and
        clip it to ``[0, 1]``, and update the moments ``m`` (of the ascent direction
        ``-descent``) and ``v``, in place: arrays (width, n) with a column per sample.

        ``t`` (n,) is each sample's step count after this step (at least 1).
        """
        b1, b2 = self.betas
        m *= b1
        m -= (1.0 - b1) * descent
        v *= b2
        v += (1.0 - b2) * (descent * descent)
        scale = v / (1.0 - b2**t)
        np.sqrt(scale, out=scale)
        scale += self.eps
        step = m / (1.0 - b1**t)
        step /= scale
        step *= self.lr
        step += alpha
        np.minimum(np.maximum(step, 0.0, out=step), 1.0, out=alpha)


class Slopes:
    """Slopes of some samples with their Adam moments and step counts, packed in one
    ``(3 width + 1, n)`` array with a column per sample (one gather and one scatter per
    training step; each quantity is a contiguous block of rows for the slope steps):
    ``alpha``, ``m`` and ``v`` are (n, width) views in the columns of a
    :class:`~pyomo_nnrelax.training.dual.SlopeLayout`, ``t`` the (n,) step counts."""

    def __init__(self, packed: np.ndarray) -> None:
        self.packed = packed
        width = (packed.shape[0] - 1) // 3
        self.alpha = packed[:width].T
        self.m = packed[width : 2 * width].T
        self.v = packed[2 * width : 3 * width].T
        self.t = packed[3 * width]

    @classmethod
    def fresh(cls, start: np.ndarray, n: int) -> Slopes:
        """``n`` samples at the slopes ``start`` ((width,), or (n, width): one row each) with
        zero moments."""
        slopes = cls(np.zeros((3 * start.shape[-1] + 1, n)))
        slopes.alpha[:] = start
        return slopes

    def reset(self, rows: np.ndarray, start: np.ndarray) -> None:
        """Put ``rows`` (a mask or indices) back at the slopes ``start`` with zero moments."""
        self.packed[:, rows] = 0.0
        self.alpha[rows] = start

    def step(self, optimizer: SlopeAdam, descent: np.ndarray) -> None:
        """One projected Adam step of every sample against ``descent`` (width, n): the
        derivative of what the slopes lower, a row per relaxed neuron and a column per
        sample."""
        self.t += 1.0
        optimizer.step(self.alpha.T, descent, self.m.T, self.v.T, self.t)
