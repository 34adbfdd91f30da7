"""The user's own Python code named on the command line: ``MODULE:NAME`` or ``FILE.py:NAME``
(``nnrelax refine --evaluate truth.py:f``)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np


def load_callable(spec: str) -> Callable:
    """The callable named ``module:name`` or ``path/to/file.py:name``.

    >>> load_callable("math:hypot")(3.0, 4.0)
    5.0
    >>> load_callable("math")
    Traceback (most recent call last):
    ...
    ValueError: 'math': expected MODULE:NAME or FILE.py:NAME
    """
    module_name, sep, name = spec.rpartition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"{spec!r}: expected MODULE:NAME or FILE.py:NAME")
    try:
        if module_name.endswith(".py"):
            loader = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if loader is None or not Path(module_name).is_file():
                raise ImportError(f"no file {module_name}")
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{spec!r}: cannot import {module_name} ({exc})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"{spec!r}: {module_name} has no function {name!r}")
    return function


def load_true_function(spec: str) -> Callable[[np.ndarray], float]:
    """The user's true function ``f(x)`` named by ``spec`` (:func:`load_callable`), as a
    callable that returns one float at one input point (``--evaluate``).

    >>> f = load_true_function("pyomo_nnrelax.experiments.functions:himmelblau")
    >>> f(np.array([3.0, 2.0]))
    0.0
    """
    function = load_callable(spec)

    def at_point(x: np.ndarray) -> float:
        value = np.asarray(function(np.asarray(x, dtype=np.float64)), dtype=np.float64)
        if value.size != 1:
            raise ValueError(f"{spec} returned {value.size} values at one point, not one number")
        return float(value.reshape(-1)[0])

    return at_point
