"""What a regularizer sees of one training step: the weights, the box, the mini-batch, the
shared forward pass and interval bounds, and where its gradient through the outputs goes
(docs/method.md, section 4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..box import InputBox, ball_ends
from ..network import Layer, Network, forward_cache
from .backprop import Grads, add_grads, backward, zero_grads
from .ibp import IBPTrace, NeuronLayout, ibp_forward


@dataclass
class RegContext:
    """What a regularizer may look at in one training step.

    Attributes
    ----------
    layers : tuple of Layer
        Current weights, in training (scaled-target) units.
    input_lower, input_upper : ndarray or None
        The input box every bound is taken over (None only when no regularizer in use
        needs bounds, see ``Regularizer.uses_bounds``).
    X : ndarray (batch, n_inputs)
        The current mini-batch.
    rng : numpy Generator
        For subsampling and random objectives; seeded by the trainer.
    lp_backend : {"highs", "pyomo"}
        Passed to the LP solves of :class:`LPGap`.
    lp_failures : int
        LP solves that failed in this step (regularizers add to it).
    rows : ndarray of int or None
        Row of each mini-batch sample in the training set (the trainer passes it; per-sample
        state such as the slopes of ``LPGap(gap_method="dual_network")`` is keyed by it).
    forward : (out, inputs, pre) or None
        :func:`~pyomo_nnrelax.network.forward_cache` of ``layers`` at ``X``, when the caller
        has it already (the trainer does); computed on first use otherwise.
    defer_output : bool
        Where a regularizer's gradient goes through the network's outputs ``f(X)``, keep
        that seed in ``output_seed`` instead of backpropagating it, and leave it out of the
        returned gradient: the trainer adds it to the loss's seed and makes one backward
        pass for both.
    output_seed : ndarray (batch, n_outputs) or None
        The deferred seeds, already weighted by the regularizer's weight in a sum.
    output_scale : ndarray (n_outputs,) or float
        User units per training unit of each output (``y = scale * f + offset``): an
        objective stated in user units, ``w' y``, is ``(w * scale)' f`` up to a constant.
    step : int or None
        The trainer's step index (0 first), for regularizers computed at some steps only.
    """

    layers: tuple[Layer, ...]
    input_lower: np.ndarray | None
    input_upper: np.ndarray | None
    X: np.ndarray
    rng: np.random.Generator
    lp_backend: str = "highs"
    lp_failures: int = 0
    rows: np.ndarray | None = None
    forward: tuple[np.ndarray, list[np.ndarray], list[np.ndarray]] | None = None
    defer_output: bool = False
    output_seed: np.ndarray | None = None
    output_scale: np.ndarray | float = 1.0
    step: int | None = None
    _ibp: IBPTrace | None = field(default=None, repr=False)
    _balls: dict[float, IBPTrace] = field(default_factory=dict, repr=False)
    _side_by_side: dict[float | None, np.ndarray] = field(default_factory=dict, repr=False)
    _weight: float = field(default=1.0, repr=False)

    @property
    def ibp(self) -> IBPTrace:
        """IBP bounds of the current layers over the box, computed once per step."""
        if self._ibp is None:
            self._ibp = ibp_forward(self.layers, self.input_lower, self.input_upper)
        return self._ibp

    def ball_ibp(self, eps: float) -> IBPTrace:
        """IBP bounds over each mini-batch sample's L-infinity ball of radius ``eps``, clipped
        to the box: one box per sample, all propagated at once (Xiao et al. 2019), computed
        once per step and radius."""
        if eps not in self._balls:
            lower, upper = ball_ends(self.X, eps, self.input_lower, self.input_upper)
            self._balls[eps] = ibp_forward(self.layers, lower, upper)
        return self._balls[eps]

    @property
    def neurons(self) -> NeuronLayout:
        """Where each layer's neurons sit in :meth:`neuron_bounds`."""
        return NeuronLayout.of(self.layers)

    def neuron_bounds(self, ball: float | None = None) -> np.ndarray:
        """``[L; U]`` of every neuron side by side (:attr:`neurons`): the IBP bounds over the
        box, (2, N), or over each sample's ball of radius ``ball``, (2, batch, N); computed
        once per step and radius, for the regularizers that take every layer at once."""
        if ball not in self._side_by_side:
            trace = self.ibp if ball is None else self.ball_ibp(ball)
            self._side_by_side[ball] = np.concatenate(trace.pre, axis=-1)
        return self._side_by_side[ball]

    def forward_pass(self) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """``(f(X), inputs, pre-activations)`` of the current layers, computed once."""
        if self.forward is None:
            self.forward = forward_cache(self.layers, self.X)
        return self.forward

    def through_outputs(self, grads: Grads | None, seed: np.ndarray) -> Grads:
        """``grads`` plus the gradient of ``sum(seed * f(X))`` (``seed`` (batch, n_outputs)):
        backpropagated here, or kept in ``output_seed`` when ``defer_output``."""
        if self.defer_output:
            weighted = self._weight * seed
            self.output_seed = weighted if self.output_seed is None else self.output_seed + weighted
            return grads if grads is not None else zero_grads(self.layers)
        _, inputs, pre = self.forward_pass()
        through = backward(self.layers, inputs, pre, seed)
        return through if grads is None else add_grads(grads, through)

    @property
    def network(self) -> Network:
        """The current layers as a :class:`Network` carrying the input box."""
        return Network(self.layers, input_bounds=InputBox(self.input_lower, self.input_upper))
