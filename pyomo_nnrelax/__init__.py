"""pyomo-nnrelax: embed trained ReLU networks in Pyomo MILPs, and train them to be easy to solve.

Everything a user needs is a name of this module (``docs/api.md`` lists them), plus the
regularizers of :mod:`pyomo_nnrelax.training`.  The names are imported on first use, so that
``import pyomo_nnrelax.training`` (numpy and highspy) does not load Pyomo.
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
    # embedding a network
    "NNBlock": ".block",
    "Network": ".network",
    "Layer": ".network",
    "WeightTie": ".ties",
    "InputBox": ".box",
    # ONNX in and out
    "read_onnx": ".onnx",
    "write_onnx": ".onnx",
    "run_onnxruntime": ".onnx",
    # bounds
    "NetworkBounds": ".bounds",
    "interval_bounds": ".bounds",
    "tighten_bounds": ".lp.tightening",
    # solving and measuring
    "solve_model": ".solve",
    "SolveStats": ".solve",
    "difficulty": ".measure",
    # verification
    "verify": ".verification",
    "clipped_ball": ".verification",
    # training and refinement
    "Trainer": ".training",
    "refine": ".refinement",
    "RefineResult": ".refinement",
    "RefineHistory": ".refinement",
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
    "RefineHistory",
    "RefineResult",
    "SolveStats",
    "SolverError",
    "StaleBoundsError",
    "Trainer",
    "UnsupportedOperationError",
    "WeightTie",
    "clipped_ball",
    "difficulty",
    "interval_bounds",
    "read_onnx",
    "refine",
    "run_onnxruntime",
    "solve_model",
    "tighten_bounds",
    "verify",
    "write_onnx",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
