"""MILP formulations of a ReLU network, one module per formulation.

:func:`network_model` walks the layers, writes the affine rows ``z = W h + b`` that every
formulation shares, and asks the chosen formulation for the rows of each ReLU layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..bounds import NetworkBounds, unstable_relus
from ..network import Layer, Network, forward_cache
from .matrix_model import Key, MatrixModel, MatrixModelBuilder


@dataclass(frozen=True)
class ReluSite:
    """One ReLU layer as a formulation sees it: where its input ``h`` and pre-activation ``z``
    live in the builder, their bounds, and what to call its output.

    ``output_name`` is ``"outputs"`` for the network's last layer, else ``"xh"``; ``relax``
    asks for continuous instead of binary variables (the LP relaxation).  Neurons of a mixed
    layer without a ReLU are copied (``xh = z``) like stable-active ones, and only
    :attr:`unstable` neurons get a formulation's rows.
    """

    index: int
    layer: Layer
    h_cols: np.ndarray
    h_bounds: tuple[np.ndarray, np.ndarray]
    z_cols: np.ndarray
    z_bounds: tuple[np.ndarray, np.ndarray]
    output_name: str
    relax: bool

    @property
    def unstable(self) -> np.ndarray:
        """Indices of the neurons that need a formulation's rows (unstable ReLUs)."""
        return np.flatnonzero(unstable_relus(self.layer, *self.z_bounds))


class ReluFormulation(Protocol):
    """Writes ``xh = max(0, z)`` of one layer into the builder and returns the ``xh`` columns."""

    def __call__(self, builder: MatrixModelBuilder, site: ReluSite) -> np.ndarray: ...


class StartValues(Protocol):
    """Values of a formulation's own variable groups of one ReLU layer at a forward pass.

    ``h`` is the layer's input and ``z`` its pre-activation at one point; returns
    ``{group_name: values}`` with one value per label of the group's index (for example the
    big-M ``active`` binaries of the unstable neurons).  ``xh``/``z`` are set by the caller.
    """

    def __call__(
        self,
        layer: Layer,
        h: np.ndarray,
        z: np.ndarray,
        h_bounds: tuple[np.ndarray, np.ndarray],
        z_bounds: tuple[np.ndarray, np.ndarray],
    ) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Formulation:
    """A named way to formulate ReLU layers: its rows, and its variables' values at a point."""

    name: str
    relu: ReluFormulation
    start_values: StartValues


def relu_output_vars(builder: MatrixModelBuilder, site: ReluSite) -> np.ndarray:
    """Add the ``xh`` columns of a ReLU layer and the ``xh = z`` rows of its stable-active
    (and linear) neurons.

    Stable-inactive neurons need nothing more: their ``xh`` column has bounds ``[0, 0]``.
    """
    lo, hi = site.z_bounds
    out_layer = None if site.output_name == "outputs" else site.index
    xh_cols = builder.add_vars(
        site.output_name, site.layer.activate(lo), site.layer.activate(hi), out_layer
    )
    active = np.flatnonzero((lo >= 0.0) | ~site.layer.relu_mask)
    ones = np.ones(active.size)
    builder.add_rows(
        "relu_copy",
        [(xh_cols[active], ones), (site.z_cols[active], -ones)],
        0.0,
        0.0,
        site.index,
        active,
    )
    return xh_cols


def layer_keys(network: Network, l: int) -> tuple[Key, Key | None]:
    """Variable groups of layer ``l``'s pre-activation ``z`` and of its ReLU output ``xh``
    (None without a ReLU) in the full model of :func:`network_model`; the last layer's output
    is the group ``outputs``."""
    last = l == len(network.layers) - 1
    if not network.layers[l].has_relu:
        return (("outputs", None) if last else ("z", l)), None
    return ("z", l), (("outputs", None) if last else ("xh", l))


def network_model(
    network: Network,
    bounds: NetworkBounds,
    formulation: Formulation,
    relax: bool = False,
    stop: int | None = None,
    final_activation: bool = True,
) -> MatrixModel:
    """The MILP (or, with ``relax``, its LP relaxation) of ``network`` over ``bounds``.

    Variable groups: ``inputs``; per layer ``l``: ``z`` and, for ReLU layers, ``xh`` plus
    the formulation's own; ``outputs`` is the last layer's output.  Rows: ``affine`` per layer
    (``z - W h = b``) plus the formulation's.  ``stop`` keeps only the first ``stop`` layers,
    and ``final_activation=False`` leaves the last kept layer's ReLU out (bound tightening
    optimises its ``z``).
    """
    stop = len(network.layers) if stop is None else stop
    builder = MatrixModelBuilder()
    h_cols = builder.add_vars("inputs", bounds.input_lower, bounds.input_upper)
    for l, layer in enumerate(network.layers[:stop]):
        last = l == stop - 1
        apply_relu = layer.has_relu and (final_activation or not last)
        is_output = last and stop == len(network.layers)
        z_name, z_layer = ("outputs", None) if is_output and not apply_relu else ("z", l)
        z_bounds = (bounds.lower[l], bounds.upper[l])
        z_cols = builder.add_vars(z_name, *z_bounds, layer=z_layer)
        builder.add_rows(
            "affine",
            [(z_cols, np.ones(layer.n_out)), (h_cols, -layer.weight)],  # dense or sparse
            layer.bias,
            layer.bias,
            layer=l,
        )
        h_bounds = bounds.post_activation(network, l - 1)
        if apply_relu:
            out_name = "outputs" if is_output else "xh"
            site = ReluSite(l, layer, h_cols, h_bounds, z_cols, z_bounds, out_name, relax)
            h_cols = formulation.relu(builder, site)
        else:
            h_cols = z_cols
    return builder.build()


def start_values(
    network: Network, bounds: NetworkBounds, formulation: Formulation, x: np.ndarray
) -> dict[Key, np.ndarray]:
    """Values of every variable group of the formulation at input ``x`` (one forward pass):
    a feasible point of the MILP, e.g. for a MIP start."""
    _, inputs, pre = forward_cache(network.layers, np.asarray(x, dtype=np.float64)[None, :])
    values: dict[Key, np.ndarray] = {("inputs", None): inputs[0][0]}
    for l, layer in enumerate(network.layers):
        z = pre[l][0]
        z_key, xh_key = layer_keys(network, l)
        values[z_key] = z
        if xh_key is not None:
            values[xh_key] = layer.activate(z)
            z_bounds = (bounds.lower[l], bounds.upper[l])
            h_bounds = bounds.post_activation(network, l - 1)
            extra = formulation.start_values(layer, inputs[l][0], z, h_bounds, z_bounds)
            values.update({(name, l): v for name, v in extra.items()})
    return values
