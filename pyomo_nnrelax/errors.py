"""The package's exception types: every failure a user can cause has its own class."""

from __future__ import annotations


class NNRelaxError(Exception):
    """Base class of every error raised by pyomo-nnrelax."""


class OnnxImportError(NNRelaxError, ValueError):
    """An ONNX file or model could not be read into a :class:`~pyomo_nnrelax.Network`."""


class UnsupportedOperationError(OnnxImportError):
    """An ONNX graph uses an operation (or an operation's attribute) that has no exact MILP form."""


class StaleBoundsError(OnnxImportError):
    """Bounds stored in an ONNX file cannot be shown to belong to the file's weights (the
    weights changed after the bounds were stored, or the file predates the fingerprint)."""


class InvalidNetworkError(NNRelaxError, ValueError):
    """Weights are non-finite, shapes do not chain, or an activation is unknown."""


class InputBoundsError(NNRelaxError, ValueError):
    """Input bounds are missing, of the wrong shape, non-finite or inverted."""


class SolverError(NNRelaxError, RuntimeError):
    """A solve the package ran itself failed (infeasible, numerical trouble, no solution)."""


class ParallelError(NNRelaxError, RuntimeError):
    """A process pool the caller asked for (``workers=`` or ``executor=``) broke down."""
