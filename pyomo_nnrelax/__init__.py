"""pyomo-nnrelax: embed trained ReLU networks in Pyomo MILPs, and train them to be easy to solve."""

from .block import NNBlock
from .bounds import NetworkBounds, interval_bounds
from .box import InputBox
from .errors import (
    InputBoundsError,
    InvalidNetworkError,
    NNRelaxError,
    OnnxImportError,
    ParallelError,
    SolverError,
    UnsupportedOperationError,
)
from .network import Layer, Network

__all__ = [
    "InputBox",
    "InputBoundsError",
    "InvalidNetworkError",
    "Layer",
    "Network",
    "NetworkBounds",
    "NNBlock",
    "NNRelaxError",
    "OnnxImportError",
    "ParallelError",
    "SolverError",
    "UnsupportedOperationError",
    "interval_bounds",
]
__version__ = "0.1.0"
