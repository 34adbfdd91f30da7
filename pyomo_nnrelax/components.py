"""A formulation in matrix form, for one copy of a network or many, as Pyomo components.

:func:`add_components` turns the :class:`~pyomo_nnrelax.formulations.matrix_model.MatrixModel`
of every copy into one set of Pyomo Vars and Constraints named after what they are
(``layer[l].z[j]``, ``layer[l].relu_big_m[j]``, ...; with many copies ``layer[l].z[t, j]``),
in one pass over the rows.  The model's own variables stand for the input and output
columns where the user gave them, with ``input_box`` rows where a copy's box is tighter
than their bounds.  Python's cyclic garbage collector is paused meanwhile: a network's rows
create hundreds of thousands of small expression objects, and its collections would
otherwise take most of the time (4.3 s against 0.6 s for the MNIST CNN of docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pyomo.environ as pyo
from pyomo.common.gc_manager import PauseGC
from pyomo.core.expr.numeric_expr import LinearExpression

from .box import InputBox
from .copies import Copies, flat
from .formulations.matrix_model import Key, MatrixModel

Labels = Sequence[Hashable] | None


def add_components(
    block: pyo.Block,
    models: Sequence[MatrixModel],
    labels: Labels,
    n_layers: int,
    user: dict[str, Copies | None],
    boxes: Sequence[InputBox],
) -> None:
    """Add the Vars and Constraints of ``models`` (one per copy; ``labels`` None for one
    copy) to ``block``, with ``user[name]`` (``"inputs"``, ``"outputs"``) standing for those
    groups' columns when given."""
    with PauseGC():
        block.layer = pyo.Block(range(n_layers))
        columns: list[list[Any]] = [[None] * model.n_cols for model in models]
        for key in _keys(model.var_groups for model in models):
            name, layer = key
            if layer is None and user.get(name) is not None:
                _link_user_variables(block, name, user[name], models, labels, columns, boxes)
                continue
            _add_var(_owner(block, layer), name, key, models, labels, columns)
        for key in _keys(model.row_groups for model in models):
            _add_rows(_owner(block, key[1]), key, models, labels, columns)


def index_of(labels: Labels, copy: int, j: int):
    """The index of entry ``j`` of copy ``copy`` in a block's components."""
    if labels is None:
        return j
    label = labels[copy]
    return (*label, j) if isinstance(label, tuple) else (label, j)


def _keys(groups) -> list[Key]:
    """The group keys of every copy, in order of first appearance."""
    seen: dict[Key, None] = {}
    for per_copy in groups:
        seen.update(dict.fromkeys(per_copy))
    return list(seen)


def _owner(block: pyo.Block, layer: int | None) -> pyo.Block:
    return block if layer is None else block.layer[layer]


def _add_var(owner, name: str, key: Key, models, labels: Labels, columns) -> None:
    """One Var holding the group ``key`` of every copy."""
    bounds, integer = {}, False
    for c, model in enumerate(models):
        group = model.var_groups.get(key)
        if group is None:
            continue
        pos = group.positions
        lows, highs = model.col_lower[pos].tolist(), model.col_upper[pos].tolist()
        for j, lo, hi in zip(group.index.tolist(), lows, highs):
            bounds[index_of(labels, c, j)] = (lo, hi)
        integer = integer or bool(model.integer[pos].any())
    var = pyo.Var(
        list(bounds), domain=pyo.Binary if integer else pyo.Reals, bounds=bounds, dense=True
    )
    setattr(owner, name, var)
    for c, model in enumerate(models):
        group = model.var_groups.get(key)
        if group is not None:
            cols = [var[index_of(labels, c, j)] for j in group.index.tolist()]
            columns[c][group.start : group.start + len(cols)] = cols


def _add_rows(owner, key: Key, models, labels: Labels, columns) -> None:
    """One Constraint holding the row group ``key`` of every copy."""
    where: dict[Hashable, tuple[int, int]] = {}
    for c, model in enumerate(models):
        group = model.row_groups.get(key)
        if group is not None:
            for j, i in zip(group.index.tolist(), group.positions.tolist()):
                where[index_of(labels, c, j)] = (c, i)

    def rule(_block, *index):
        c, i = where[_one(index)]
        model = models[c]
        s, e = model.indptr[i], model.indptr[i + 1]
        row_vars = columns[c]
        expr = LinearExpression(
            constant=0.0,
            linear_coefs=model.data[s:e].tolist(),
            linear_vars=[row_vars[k] for k in model.indices[s:e].tolist()],
        )
        lo, hi = float(model.row_lower[i]), float(model.row_upper[i])
        if lo == hi:
            return expr == lo
        return (None if lo == -np.inf else lo, expr, None if hi == np.inf else hi)

    setattr(owner, key[0], pyo.Constraint(list(where), rule=rule))


def _link_user_variables(
    block, name: str, copies: Copies, models, labels: Labels, columns, boxes
) -> None:
    """``block.<name>`` as a Reference to the user's variables, which stand for the group's
    columns; inputs get ``input_box`` rows where a copy's box is tighter than their bounds."""
    setattr(block, name, pyo.Reference(flat(copies, labels)))
    for c, (model, row) in enumerate(zip(models, copies.rows)):
        group = model.var_groups[(name, None)]
        columns[c][group.start : group.start + len(row)] = row
    if name != "inputs":
        return
    looser: dict[Hashable, tuple[float, Any, float]] = {}
    for c, (box, row) in enumerate(zip(boxes, copies.rows)):
        lo, hi = box.lower.tolist(), box.upper.tolist()
        for i, v in enumerate(row):
            if v.lb is None or v.lb < lo[i] or v.ub is None or v.ub > hi[i]:
                looser[index_of(labels, c, i)] = (lo[i], v, hi[i])
    if looser:
        block.input_box = pyo.Constraint(list(looser), rule=lambda b, *k: looser[_one(k)])


def _one(index: tuple):
    return index[0] if len(index) == 1 else index
