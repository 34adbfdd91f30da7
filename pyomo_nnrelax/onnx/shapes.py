"""Ops that move entries without computing: Flatten, Reshape, Squeeze, Unsqueeze, Transpose
(the batch axis stays first), Identity, Dropout (inference), Cast to a float type, and Shape
of a data tensor (the batch size as the sentinel :data:`BATCH`, which a Reshape accepts only
in position 0).
"""

from __future__ import annotations

from math import prod

import numpy as np

from .load import FLOAT_TYPES
from .nodes import Node, ReadState
from .values import Affine, Value

#: Stands for the (unknown) batch size in the output of ``Shape`` applied to a data tensor.
BATCH = -(2**40) - 7


def read_passthrough(node: Node, state: ReadState) -> list[Value]:
    """Identity, and Dropout in inference mode (its optional mask output is not produced)."""
    if node.proto.op_type == "Dropout":
        training = node.inputs[2] if len(node.inputs) > 2 else None
        if isinstance(training, Affine) or (training is not None and bool(np.asarray(training))):
            raise node.unsupported("Dropout in training mode is random")
    return [node.inputs[0]]


def read_cast(node: Node, state: ReadState) -> list[Value]:
    if node.attr("to") not in FLOAT_TYPES:
        raise node.unsupported("casting a data-dependent tensor to a non-float type is not affine")
    return [node.inputs[0]]


def read_flatten(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    rank = len(data.shape) + 1
    axis = node.attr("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if axis == 0 or prod(data.shape[: axis - 1]) != 1:
        raise node.unsupported(
            f"Flatten with axis={node.attr('axis', 1)} merges the batch dimension"
        )
    return [data.reshaped((prod(data.shape),))]


def _reshape_target(
    node: Node, data_shape: tuple[int, ...], fixed_batch: int | None
) -> tuple[int, ...]:
    """The sample shape a Reshape produces, checking that the batch dimension stays first."""
    target = node.ints(1, "shape")
    allowzero = node.attr("allowzero", 0)
    if not target:
        raise node.unsupported("reshaping to a scalar drops the batch dimension")
    first, rest = target[0], target[1:]
    batch_kept = (
        first == BATCH
        or (first == 0 and not allowzero)
        or (fixed_batch is not None and first == fixed_batch)
    )
    if not batch_kept and first != -1:
        raise node.unsupported(f"reshape target {target} does not keep the batch dimension first")
    full = (None, *data_shape)
    dims = [
        full[i + 1] if d == 0 and not allowzero and i + 1 < len(full) else d
        for i, d in enumerate(rest)
    ]
    if any(d is None or (d < 0 and d != -1) for d in dims) or dims.count(-1) + (first == -1) > 1:
        raise node.unsupported(
            f"reshape target {target} cannot be resolved per sample; only reshapes of the form "
            f"(batch, d1, ..., dk) with at most one -1 are supported"
        )
    size = prod(data_shape)
    known = prod(d for d in dims if d != -1)
    if first == -1 and known != size:
        raise node.unsupported(
            f"reshape target {target} mixes the batch dimension with the features"
        )
    if -1 in dims:
        if known == 0 or size % known:
            raise node.mismatch(f"cannot reshape {size} entries per sample to {target}")
        dims[dims.index(-1)] = size // known
    if prod(dims) != size:
        raise node.mismatch(f"cannot reshape sample shape {data_shape} to {target} per sample")
    return tuple(dims)


def read_reshape(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    return [data.reshaped(_reshape_target(node, data.shape, state.fixed_batch))]


def sample_axes(node: Node, axes: list[int], rank: int) -> list[int]:
    """Axes of the full tensor (rank includes batch) as sample axes; the batch axis is refused."""
    normal = sorted(a + rank if a < 0 else a for a in axes)
    if any(not 0 <= a < rank for a in normal):
        raise node.mismatch(f"axes {axes} are out of range for rank {rank}")
    if 0 in normal:
        raise node.unsupported("operating on the batch axis is not supported")
    return [a - 1 for a in normal]


def read_squeeze(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    axes = node.ints(1, "axes")
    axes = [i + 1 for i, d in enumerate(data.shape) if d == 1] if axes is None else axes
    drop = sample_axes(node, axes, len(data.shape) + 1)
    if any(data.shape[a] != 1 for a in drop):
        raise node.mismatch(f"cannot squeeze axes {axes} of sample shape {data.shape}")
    return [data.reshaped(tuple(d for i, d in enumerate(data.shape) if i not in drop))]


def read_unsqueeze(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    axes = node.ints(1, "axes") or []
    shape = list(data.shape)
    for a in sample_axes(node, axes, len(shape) + 1 + len(axes)):
        shape.insert(a, 1)
    return [data.reshaped(tuple(shape))]


def read_transpose(node: Node, state: ReadState) -> list[Value]:
    data = node.inputs[0]
    rank = len(data.shape) + 1
    perm = node.attr("perm") or list(range(rank))[::-1]
    if perm[0] != 0:
        raise node.unsupported(f"perm {list(perm)} moves the batch axis")
    axes = [p - 1 for p in perm[1:]]
    return [data.rearranged(lambda a: np.transpose(a, axes))]


def read_shape(node: Node, state: ReadState) -> list[Value]:
    """Shape of a data tensor, with :data:`BATCH` standing for the batch size."""
    full = np.array([BATCH, *node.inputs[0].shape], dtype=np.int64)
    start, end = node.attr("start", 0), node.attr("end")
    return [full[start:end]]
