"""Big-M formulation of ReLU neurons, with each neuron's own bounds as its constants
(``docs/method.md``, section 2).

For a neuron with pre-activation bounds ``L <= z <= U``:

* stable-active (``L >= 0``): ``xh = z``, no binary;
* stable-inactive (``U <= 0``): ``xh = 0``, no binary;
* unstable: binary ``a`` (1 = active) and

  .. math::  xh \\ge z,\\quad xh \\ge 0,\\quad xh \\le z - L(1-a),\\quad xh \\le U a.

Groups added for layer ``l``: variables ``xh`` and ``is_active`` (indexed by the unstable
neurons), rows ``relu_copy`` (stable-active), ``relu_lower``, ``relu_upper``, ``relu_big_m``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bounds import NetworkBounds, unstable_relus
from ..network import Layer, Network
from . import Formulation, ReluSite, network_model, relu_output_vars
from .matrix_model import MatrixModel, MatrixModelBuilder


def bigm_relu(builder: MatrixModelBuilder, site: ReluSite) -> np.ndarray:
    """Write the big-M rows of one ReLU layer; see the module docstring."""
    lo, hi = site.z_bounds
    layer_index = site.index
    xh_cols = relu_output_vars(builder, site)
    unstable = site.unstable
    a_cols = builder.add_vars(
        "is_active", np.zeros(unstable.size), 1.0, layer_index, unstable, integer=not site.relax
    )
    xh, z = xh_cols[unstable], site.z_cols[unstable]
    L, U, ones = lo[unstable], hi[unstable], np.ones(unstable.size)
    builder.add_rows("relu_lower", [(xh, ones), (z, -ones)], 0.0, np.inf, layer_index, unstable)
    builder.add_rows(
        "relu_upper", [(xh, ones), (z, -ones), (a_cols, -L)], -np.inf, -L, layer_index, unstable
    )
    builder.add_rows("relu_big_m", [(xh, ones), (a_cols, -U)], -np.inf, 0.0, layer_index, unstable)
    return xh_cols


def bigm_start_values(
    layer: Layer,
    h: np.ndarray,
    z: np.ndarray,
    h_bounds: tuple[np.ndarray, np.ndarray],
    z_bounds: tuple[np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """The ``is_active`` binaries of the unstable neurons at a point: 1 where ``z > 0``."""
    unstable = unstable_relus(layer, *z_bounds)
    return {"is_active": (z[unstable] > 0.0).astype(np.float64)}


BIGM = Formulation("bigm", bigm_relu, bigm_start_values)


def bigm_model(network: Network, bounds: NetworkBounds, **options: Any) -> MatrixModel:
    """The big-M MILP (or LP relaxation) of ``network``; ``options`` (``relax``, ``stop``,
    ``final_activation``) are those of :func:`network_model`.

    >>> from pyomo_nnrelax import Network, interval_bounds
    >>> net = Network.mlp([2, 3, 1], seed=0)
    >>> model = bigm_model(net, interval_bounds(net, [(-1, 1), (-1, 1)]))
    >>> model.n_cols, model.n_rows, int(model.integer.sum())  # 3 unstable neurons
    (12, 13, 3)
    >>> sorted(name for name, layer in model.row_groups)
    ['affine', 'affine', 'relu_big_m', 'relu_copy', 'relu_lower', 'relu_upper']
    """
    return network_model(network, bounds, BIGM, **options)
