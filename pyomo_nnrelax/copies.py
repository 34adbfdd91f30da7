"""How a block's ``inputs=`` and ``outputs=`` are read: one copy of the network, or many.

One copy: a Pyomo Var indexed by one set (``m.x`` over ``[0, 1]``), one of its elements, or
a list of variables.  Many copies (a plan's periods, a stochastic program's scenarios):

- a Var indexed by two or more sets, the last one the network's inputs: ``m.x[t, i]`` is
  input ``i`` of copy ``t`` (``m.x[s, t, i]``: copy ``(s, t)``);
- a list of rows, or a two-dimensional array of variables, one row per copy (copies
  ``0, 1, ...``), or a pandas DataFrame of variables (copies named by its index).

The reading is one rule, never a guess: a Var's last index is always the input, and a list
is of rows exactly when its entries are sequences.  See docs/formulations.md, "Many copies".
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo
from pyomo.core.base.var import VarData


@dataclass(frozen=True)
class Copies:
    """The variables of one or more copies of a network's inputs (or outputs).

    ``labels`` is None for one copy (a block indexed like the network: ``outputs[j]``), else
    the copies' names (``outputs[t, j]``); ``rows[c]`` holds copy ``c``'s variables in order.
    """

    labels: list[Hashable] | None
    rows: list[list[VarData]]

    @property
    def batched(self) -> bool:
        return self.labels is not None

    @property
    def count(self) -> int:
        return len(self.rows)


def read_variables(value, n: int, argument: str) -> Copies | None:
    """The copies ``value`` holds, ``n`` variables each (None: not given).

    Raises TypeError for anything that is not variables, ValueError for a wrong count, naming
    ``argument`` (``"inputs"`` or ``"outputs"``).
    """
    if value is None:
        return None
    if isinstance(value, pyo.Var) and value.is_indexed():
        copies = _from_var(value, argument)
    elif isinstance(value, VarData):
        copies = Copies(None, [[value]])
    elif hasattr(value, "to_numpy") and getattr(value, "ndim", 1) == 2:  # a DataFrame
        copies = Copies(list(value.index), [list(row) for row in value.to_numpy()])
    elif isinstance(value, np.ndarray) and value.ndim == 2:
        copies = Copies(list(range(len(value))), [list(row) for row in value])
    elif isinstance(value, (list, tuple, np.ndarray)) or hasattr(value, "to_numpy"):
        copies = _from_sequence(list(value))
    else:
        raise TypeError(
            f"{argument}= takes a Pyomo Var, one of its elements, a list of them, or one row of "
            f"them per copy (a list of rows, a 2-D array, a DataFrame); got {type(value).__name__}"
        )
    _check(copies, n, argument)
    return copies


def _from_var(var: pyo.Var, argument: str) -> Copies:
    """An indexed Var: one copy over a one-dimensional index, else one copy per value of
    all but the last index."""
    if not var.is_constructed():
        raise ValueError(
            f"{argument}={var.name} is not constructed yet (an AbstractModel?): build the "
            "NNBlock on the instance, e.g. after create_instance()"
        )
    keys = list(var.keys())
    if not keys or not isinstance(keys[0], tuple) or len(keys[0]) < 2:
        return Copies(None, [[var[k] for k in keys]])
    rows: dict[Hashable, list[VarData]] = {}
    for key in keys:
        copy = key[0] if len(key) == 2 else key[:-1]
        rows.setdefault(copy, []).append(var[key])
    return Copies(list(rows), list(rows.values()))


def _from_sequence(items: list) -> Copies:
    """A list of variables (one copy) or of rows of variables (one copy per row)."""
    rows = [isinstance(item, (list, tuple, np.ndarray)) for item in items]
    if items and all(rows):
        return Copies(list(range(len(items))), [list(row) for row in items])
    if any(rows):
        i = rows.index(True)
        raise TypeError(
            f"entry {i} is a row of variables and others are not: give all rows or none"
        )
    return Copies(None, [items])


def _check(copies: Copies, n: int, argument: str) -> None:
    for c, row in enumerate(copies.rows):
        where = "" if not copies.batched else f" of copy {copies.labels[c]!r}"
        wrong = [i for i, v in enumerate(row) if not isinstance(v, VarData)]
        if wrong:
            raise TypeError(
                f"{argument}= must hold Pyomo variables; entry {wrong[0]}{where} is "
                f"{type(row[wrong[0]]).__name__}"
            )
        if len(row) != n:
            raise ValueError(
                f"{argument}= holds {len(row)} variables{where}; the network has {n} {argument}"
            )


def matching_outputs(inputs: Copies | None, outputs: Copies | None) -> None:
    """Outputs given as copies need as many copies of inputs (they are the same copies)."""
    if outputs is None or not outputs.batched:
        if outputs is not None and inputs is not None and inputs.batched:
            raise ValueError(
                f"inputs= holds {inputs.count} copies and outputs= one: give one row of outputs "
                "per copy, or leave outputs= out (the block then has its own)"
            )
        return
    if inputs is None or not inputs.batched or inputs.count != outputs.count:
        have = "one copy" if inputs is None or not inputs.batched else f"{inputs.count} copies"
        raise ValueError(
            f"outputs= holds {outputs.count} copies and inputs= {have}; they must match"
        )


def flat(copies: Copies | None, labels: Sequence[Hashable] | None) -> dict:
    """The variables of ``copies`` keyed as the block indexes them: ``i`` for one copy,
    ``(label, i)`` for many."""
    if copies is None:
        return {}
    if labels is None:
        return dict(enumerate(copies.rows[0]))
    return {
        (*_key(label), i): var
        for label, row in zip(labels, copies.rows)
        for i, var in enumerate(row)
    }


def _key(label: Hashable) -> tuple:
    return label if isinstance(label, tuple) else (label,)
