"""What ``NNBlock``'s arguments resolve to: the network, the formulation and the bounds of
every copy, each checked before anything is built (docs/formulations.md)."""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Sequence
from typing import Any

import onnx

from .bounds import NetworkBounds, bounds_on, interval_bounds_over
from .box import InputBox
from .errors import InputBoundsError, StaleBoundsError
from .formulations import Formulation
from .formulations.bigm import BIGM
from .formulations.partition import partition_formulation
from .lp.tightening import tighten_bounds
from .network import Network
from .onnx import read_onnx, read_stored_bounds
from .options import BOUND_METHODS, FORMULATIONS, BoundMethod, FormulationName, check_option

PYOMO_KEYWORDS = ("name", "doc")  # a Pyomo block's keywords NNBlock passes on; others raise


def load_network(source: Any) -> tuple[Network, onnx.ModelProto | str | None]:
    """A :class:`Network` from a path, ``onnx.ModelProto`` or Network, plus the ONNX source."""
    if isinstance(source, Network):
        return source, None
    if isinstance(source, (str, os.PathLike, onnx.ModelProto)):
        return read_onnx(source), source
    raise TypeError(
        f"NNBlock needs an ONNX path, an onnx.ModelProto or a Network, got {type(source).__name__}"
    )


def resolve_formulation(
    name: FormulationName, partitions: int | None, split: str | None
) -> Formulation:
    """The :class:`Formulation` called ``name`` with its options (None: the default)."""
    check_option("formulation", name, FORMULATIONS)
    if name == "bigm":
        return BIGM
    return partition_formulation(2 if partitions is None else partitions, split or "equal_size")


def check_arguments(
    kwargs: dict, accepted: list[str], formulation, bounds, partition: dict, tightening: dict
) -> None:
    """Refuse a keyword ``NNBlock`` does not know (a typo; ``accepted`` are its keywords)
    and an option that the chosen formulation or bounds would ignore, naming it, before
    anything is read or attached."""
    for key in set(kwargs) - set(PYOMO_KEYWORDS):
        accepted = [*accepted, *PYOMO_KEYWORDS]
        close = difflib.get_close_matches(key, accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(
            f"NNBlock got an unexpected keyword argument {key!r}{hint}; it takes "
            + ", ".join(accepted)
        )
    for name in (k for k, v in partition.items() if v is not None and formulation == "bigm"):
        raise ValueError(f"{name}= applies to formulation='partition' only, not to 'bigm'")
    tightens = isinstance(bounds, str) and bounds in ("lp", "milp")
    for name in (k for k, v in tightening.items() if v is not None and not tightens):
        raise ValueError(f"{name}= applies to bounds='lp' or 'milp' only, not to {bounds!r}")


def resolve_bounds(
    network: Network,
    box: InputBox,
    bounds: BoundMethod | NetworkBounds | None,
    onnx_source,
    time_limit: float | None,
    executor,
    workers: int | None = None,
) -> NetworkBounds:
    """The pre-activation bounds over ``box`` that ``NNBlock(bounds=...)`` asks for
    (:func:`copy_bounds` of one box)."""
    return copy_bounds(network, [box], bounds, onnx_source, time_limit, executor, workers)[0]


def copy_bounds(
    network: Network,
    boxes: Sequence[InputBox],
    bounds: BoundMethod | NetworkBounds | None,
    onnx_source,
    time_limit: float | None,
    executor,
    workers: int | None = None,
) -> list[NetworkBounds]:
    """The pre-activation bounds over each copy's box that ``NNBlock(bounds=...)`` asks for.

    A method name computes them (``"stored"`` reads them from the ONNX metadata); ``None``
    uses the stored bounds where they were computed over a box covering the copy's, else
    interval bounds; a :class:`NetworkBounds` is used as given where its box covers the
    copy's.  Bounds over a larger box are valid over a smaller one, and are intersected with
    the interval bounds there (:func:`~pyomo_nnrelax.bounds.bounds_on`).  Stored bounds
    whose weight fingerprint is missing or differs from the file's weights are never used:
    ``"stored"`` raises :class:`StaleBoundsError`, ``None`` warns and uses interval bounds.
    Interval bounds of all copies come from one batched propagation.
    """
    if isinstance(bounds, NetworkBounds):
        return [_given(bounds, network, box) for box in boxes]
    if bounds not in (None, *BOUND_METHODS):
        raise ValueError(
            f"bounds must be one of {BOUND_METHODS} or a NetworkBounds, got {bounds!r}"
        )
    if bounds in ("lp", "milp"):
        return [
            tighten_bounds(
                network,
                None,
                bounds,
                input_bounds=box,
                time_limit=time_limit,
                executor=executor,
                workers=workers,
            )  # fmt: skip
            for box in boxes
        ]
    stored = _stored(network, onnx_source, bounds) if bounds != "interval" else None
    found: list[NetworkBounds | None] = []
    for box in boxes:
        if stored is not None and stored.input_box.covers(box):
            found.append(bounds_on(stored, network, box))
        elif bounds == "stored":
            where = "" if stored is None else f" (they are over {stored.input_box})"
            raise InputBoundsError(
                f"bounds='stored' but the ONNX model has no stored bounds covering {box}{where}"
            )
        else:
            found.append(None)
    missing = [box for box, b in zip(boxes, found) if b is None]
    interval = iter(interval_bounds_over(network, missing) if missing else ())
    return [b if b is not None else next(interval) for b in found]


def _given(bounds: NetworkBounds, network: Network, box: InputBox) -> NetworkBounds:
    if not bounds.input_box.covers(box):
        raise InputBoundsError(
            f"the NetworkBounds given were computed over {bounds.input_box}, which does not "
            f"cover the block's box {box}"
        )
    return bounds_on(bounds, network, box)


def _stored(network: Network, onnx_source, bounds) -> NetworkBounds | None:
    """The bounds stored in the ONNX source (None: none, or stale with ``bounds=None``)."""
    if onnx_source is None:
        return None
    try:
        return read_stored_bounds(onnx_source, network)
    except StaleBoundsError as exc:
        if bounds == "stored":
            raise StaleBoundsError(f"bounds='stored' cannot be used: {exc}") from None
        warnings.warn(f"{exc}; using interval bounds instead", UserWarning, stacklevel=4)
        return None
