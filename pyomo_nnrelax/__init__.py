"""pyomo-nnrelax: embed trained ReLU networks in Pyomo MILPs, and train them to be easy to solve."""

from .block import NNBlock
from .bounds import NetworkBounds, interval_bounds
from .errors import (
    InputBoundsError,
    InvalidNetworkError,
    NNRelaxError,
    OnnxImportError,
    SolverError,
    UnsupportedOperationError,
)
from .network import Layer, Network

__all__ = [
    "InputBoundsError",
    "InvalidNetworkError",
    "Layer",
    "Network",
    "NetworkBounds",
    "NNBlock",
    "NNRelaxError",
    "OnnxImportError",
    "SolverError",
    "UnsupportedOperationError",
    "interval_bounds",
]
__version__ = "0.1.0"
