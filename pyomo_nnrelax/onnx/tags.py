"""The tie tags of a value's coefficients and constant terms, and how they merge in sums and
products.

Tie tags.  Per stored coefficient, ``src`` and ``mult``: ``src == -1`` (:data:`FIXED`) is a
fixed coefficient (structure: selections, skip-path identities, the slopes of a LeakyReLU);
``src == k >= 0`` means ``coef == offset + mult * theta[k]`` for the reader's global
parameter ``k`` (an entry of a graph initializer used as a weight or a bias,
:meth:`~.nodes.ReadState.param_ids`), the offset being the sum of the coefficient's fixed
terms (a skip path's 1 beside a kernel's centre); ``src == -2`` (:data:`FREE`) a coefficient
whose structure was lost (e.g. two weight tensors composed without an activation between
them), its own parameter.  ``src=None`` means all fixed.  The offset is not stored: it is
``coef - mult * theta[k]`` at the values read, worked out when a layer is closed
(:mod:`.closing`).  The constant term of every entry carries the same tags
(``offset_src``, ``offset_mult``, one per entry) and follows the same algebra, as the
coefficient of an input that is always 1: a convolution's bias is its parameter at every
position of its channel.

Merging.  A term is fixed, a multiple of one parameter, or free (a product of two
parameters, or with a free factor).  A sum of terms is free if one of them is free or two
depend on different parameters; parameter ``k`` with the summed factor if every term that
depends on a parameter depends on ``k`` (the fixed terms add to the offset; exact); fixed
if none does, or if the factors of ``k`` cancel.  A closed layer's
:class:`~pyomo_nnrelax.ties.WeightTie` (and its bias's) is made from the tags
(:mod:`.closing`).
"""

from __future__ import annotations

import numpy as np

from .memory import reserve

#: ``src`` of a fixed coefficient.
FIXED = -1


#: ``src`` of a coefficient that is its own parameter (its sharing structure was lost).
FREE = -2


#: Bytes per product or summand term while terms are grouped (keys, order, sorted copies).
TERM_BYTES = 160


def pruned(rows, cols, vals, src, mult) -> tuple:
    """Entries ``(rows, cols, vals, src, mult)`` without fixed zeros; a tagged term that is
    identically zero (factor 0) is a fixed zero."""
    if src is None:
        keep = vals != 0.0
    else:
        tagged = (src == FREE) | ((src >= 0) & (mult != 0.0))
        keep = tagged | (vals != 0.0)
        if not tagged.all():
            src, mult = np.where(tagged, src, FIXED), np.where(tagged, mult, 0.0)
    if keep.all():
        return rows, cols, vals, src, mult
    return tuple(None if a is None else a[keep] for a in (rows, cols, vals, src, mult))


def constant_tags(src, mult) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Tags of constant terms in their normal form: a parameter with factor 0 is fixed, a
    fixed or free term has factor 0 or 1, and all fixed is ``(None, None)``."""
    if src is None:
        return None, None
    src = np.where((src >= 0) & (mult == 0.0), FIXED, src)
    if not np.any(src != FIXED):
        return None, None
    return src, np.where(src == FIXED, 0.0, np.where(src == FREE, 1.0, mult))


def _merged(first: np.ndarray, src: np.ndarray, mult: np.ndarray):
    """Tags of the groups of terms that start at positions ``first`` (the module docstring's
    rule: fixed terms add to the offset of a parameter's multiple)."""
    param = src >= 0
    lo = np.minimum.reduceat(np.where(param, src, np.iinfo(np.int64).max), first)
    hi = np.maximum.reduceat(np.where(param, src, -1), first)
    free = np.maximum.reduceat(src == FREE, first)
    factor = np.add.reduceat(np.where(param, mult, 0.0), first)
    one = (hi >= 0) & (lo == hi) & ~free
    out = np.where(one, hi, np.where(free | (hi >= 0), FREE, FIXED))
    return out, np.where(one, factor, 1.0)


def grouped(n_in: int, rows, cols, vals, src, mult):
    """Terms summed by (row, column), tags merged: sorted distinct ``(rows, cols, vals, src,
    mult)``."""
    reserve(rows.size * TERM_BYTES, f"summing {rows.size:,} terms of coefficients")
    key = rows * n_in + cols
    order = np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    if src is not None:
        src, mult = src[order], mult[order]
        src = np.where((src >= 0) & (mult == 0.0), FIXED, src)  # identically zero
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else key
    if first.size < key.size:
        if src is not None:
            src, mult = _merged(first, src, mult)
        key, vals = key[first], np.add.reduceat(vals, first)
    return key // n_in, key % n_in, vals, src, mult


def product_tags(p, p_mult, a, s, s_mult, d) -> tuple[np.ndarray, np.ndarray]:
    """``(src, mult)`` of product terms ``a * d``: an op entry ``a`` tagged ``(p, p_mult)``
    times a coefficient ``d`` tagged ``(s, s_mult)``; a product of two tagged factors is
    free."""
    src = np.where(p == FIXED, s, np.where(s == FIXED, p, FREE))
    factor = np.where(p == FIXED, a * s_mult, p_mult * d)
    return src, np.where(src == FREE, 1.0, factor)
