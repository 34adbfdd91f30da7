"""The user's own Python code named on the command line: ``MODULE:NAME`` or ``FILE.py:NAME``
(``nnrelax refine --evaluate truth.py:f``; what it returns is checked where it is called)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path


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
    except Exception as exc:  # the user's module failed to load (ImportError, SyntaxError, ...)
        raise ValueError(
            f"{spec!r}: cannot import {module_name} ({type(exc).__name__}: {exc})"
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"{spec!r}: {module_name} has no function {name!r}")
    return function
