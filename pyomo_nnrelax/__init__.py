"""pyomo-nnrelax: embed trained ReLU networks in Pyomo MILPs, and train them to be easy to solve.

The names below are imported on first use, so that ``import pyomo_nnrelax.training`` (numpy
and highspy) does not load Pyomo.
"""

from importlib import import_module

from .errors import (
    InputBoundsError,
    InvalidNetworkError,
    NNRelaxError,
    OnnxImportError,
    ParallelError,
    SolverError,
    StaleBoundsError,
    UnsupportedOperationError,
)

__version__ = "0.1.0"

_LAZY = {
    "NNBlock": ".block",
    "InputBox": ".box",
    "NetworkBounds": ".bounds",
    "interval_bounds": ".bounds",
    "Layer": ".network",
    "Network": ".network",
    "tighten_bounds": ".lp.tightening",
    "WeightTie": ".ties",
}

__all__ = [
    "InputBoundsError",
    "InputBox",
    "InvalidNetworkError",
    "Layer",
    "NNBlock",
    "NNRelaxError",
    "Network",
    "NetworkBounds",
    "OnnxImportError",
    "ParallelError",
    "SolverError",
    "StaleBoundsError",
    "UnsupportedOperationError",
    "WeightTie",
    "interval_bounds",
    "tighten_bounds",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
