"""Sparse affine maps of ONNX convolutions and pools over flattened sample tensors.

A sample tensor of shape ``(C, *spatial)`` (no batch) is flattened row-major, channels first;
each op becomes the entries ``out[rows] += coef * in[cols]`` of its linear map, from which a
caller builds dense or sparse constraint matrices.  Entries are built with vectorised index
arithmetic, so time and memory grow with the number of nonzeros (kernel size x outputs), not
with outputs x inputs, and a map whose entries would not fit in memory raises before they are
allocated (:func:`~.memory.reserve`).  ONNX attributes come in already resolved, one entry per
spatial dim, with ``pads`` in ONNX order ``[x1_begin, x2_begin, ..., x1_end, ...]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

from .memory import reserve

__all__ = [
    "SparseMap",
    "average_pool_map",
    "channel_of_output",
    "conv_map",
    "conv_transpose_map",
    "global_average_pool_map",
    "pool_windows",
    "resolve_pads",
]

_AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")

#: Bytes per entry of a map while it is built and turned into the op's matrix.
MAP_ENTRY_BYTES = 112


@dataclass(frozen=True)
class SparseMap:
    """Entries of a linear map over flattened sample tensors: out[rows] += coef * in[cols].

    ``param`` is the flat index into the op's weight tensor (``W.reshape(-1)``) whose value
    multiplies ``coef``, or -1 for a fixed coefficient; keeping the weight symbolic lets one map
    serve every value of a trained or varying kernel.
    """

    rows: np.ndarray
    cols: np.ndarray
    param: np.ndarray
    coef: np.ndarray
    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]

    def dense(self, weight: np.ndarray | None = None) -> np.ndarray:
        """The ``(prod(out_shape), prod(in_shape))`` matrix of the map, for a given weight.

        Entries with ``param >= 0`` are ``coef * weight.flat[param]``, the others ``coef``;
        duplicate ``(row, col)`` pairs are summed.  ``weight`` is needed only if some entry
        refers to it.
        """
        values = self.coef.astype(np.float64, copy=True)
        tied = self.param >= 0
        if tied.any():
            if weight is None:
                raise ValueError("weight is required: this map has entries taken from the weight")
            flat = np.asarray(weight, dtype=np.float64).reshape(-1)
            if flat.size <= int(self.param.max()):
                raise ValueError(
                    f"weight has {flat.size} elements, but the map refers to index "
                    f"{int(self.param.max())}"
                )
            values[tied] *= flat[self.param[tied]]
        matrix = np.zeros((prod(self.out_shape), prod(self.in_shape)))
        np.add.at(matrix, (self.rows, self.cols), values)
        return matrix


def _ints(name: str, values: Sequence[int], n: int, minimum: int) -> tuple[int, ...]:
    """``values`` as ``n`` ints, each at least ``minimum``; ValueError naming ``name``."""
    out = tuple(int(v) for v in values)
    if len(out) != n:
        raise ValueError(f"{name} must have {n} entries (one per spatial dim), got {list(out)}")
    if any(v < minimum for v in out):
        raise ValueError(f"{name} must be >= {minimum}, got {list(out)}")
    return out


def _split_pads(pads: Sequence[int] | None, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """ONNX ``pads`` (``None`` or empty for zeros) as (begins, ends); ValueError if malformed."""
    if pads is None or len(pads) == 0:
        return (0,) * n, (0,) * n
    flat = tuple(int(p) for p in pads)
    if len(flat) != 2 * n:
        raise ValueError(
            f"pads must have {2 * n} entries (begin and end per spatial dim), got {list(flat)}"
        )
    if any(p < 0 for p in flat):
        raise ValueError(f"pads must be non-negative, got {list(flat)}")
    return flat[:n], flat[n:]


def _sample_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as ``(C, *spatial)`` with at least one spatial dim and positive sizes."""
    out = tuple(int(s) for s in shape)
    if len(out) < 2 or any(s < 1 for s in out):
        raise ValueError(f"{name} must be (C, *spatial) with positive sizes, got {out}")
    return out


def _windows(
    base: Sequence[int],
    limit: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    offset: Sequence[int],
    dilations: Sequence[int],
) -> np.ndarray:
    """Flat positions ``b * stride - offset + k * dilation`` in a grid of shape ``limit``.

    Returns int64 ``(prod(base), prod(kernel))``, row ``b`` and column ``k`` in row-major
    order, -1 where the position falls outside ``limit`` in some dim.  Convolutions gather
    (``base`` = outputs, ``limit`` = inputs); transposed convolutions scatter (the reverse).
    """
    n = len(base)
    place = np.cumprod((1, *limit[:0:-1]))[::-1]
    flat = np.zeros((1,) * (2 * n), dtype=np.int64)
    inside = np.ones((1,) * (2 * n), dtype=bool)
    for d in range(n):
        shape = [1] * (2 * n)
        shape[d], shape[n + d] = base[d], kernel[d]
        pos = (
            np.arange(base[d], dtype=np.int64)[:, None] * strides[d]
            - offset[d]
            + np.arange(kernel[d], dtype=np.int64)[None, :] * dilations[d]
        ).reshape(shape)
        flat = flat + pos * place[d]
        inside = inside & (pos >= 0) & (pos < limit[d])
    return np.where(inside, flat, -1).reshape(prod(base), prod(kernel))


def _extent(kernel: int, dilation: int) -> int:
    """Span of a dilated kernel along one dim."""
    return (kernel - 1) * dilation + 1


def resolve_pads(
    auto_pad: str,
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int] | None,
) -> list[int]:
    """Explicit ONNX ``pads`` for Conv and the pools, from ``auto_pad``.

    ``"NOTSET"`` returns ``pads`` (zeros if ``None`` or empty), ``"VALID"`` zeros; ``"SAME_UPPER"``
    and ``"SAME_LOWER"`` pad so that ``out = ceil(in / stride)``, an odd total putting the extra
    element at the end (UPPER) or the beginning (LOWER), as the ONNX spec says.
    """
    n = len(in_spatial)
    in_spatial = _ints("in_spatial", in_spatial, n, 1)
    kernel = _ints("kernel", kernel, n, 1)
    strides = _ints("strides", strides, n, 1)
    dilations = _ints("dilations", dilations, n, 1)
    if auto_pad not in _AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {_AUTO_PADS}, got {auto_pad!r}")
    if auto_pad == "NOTSET":
        begins, ends = _split_pads(pads, n)
        return [*begins, *ends]
    if auto_pad == "VALID":
        return [0] * (2 * n)
    totals = [
        max(0, (-(-i // s) - 1) * s + _extent(k, d) - i)
        for i, k, s, d in zip(in_spatial, kernel, strides, dilations)
    ]
    small = [t // 2 for t in totals]
    large = [t - t // 2 for t in totals]
    return small + large if auto_pad == "SAME_UPPER" else large + small


def channel_of_output(out_shape: Sequence[int]) -> np.ndarray:
    """The channel of each flat output position, int64 ``(prod(out_shape),)``.

    Conv and ConvTranspose maps leave out the bias; ``bias[channel_of_output(shape)]`` is the
    constant term of every output.
    """
    return np.repeat(np.arange(out_shape[0], dtype=np.int64), prod(out_shape[1:]))


def _conv_args(
    in_shape: Sequence[int],
    weight_shape: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    layout: str,
) -> tuple[tuple[int, ...], ...]:
    """Checked ``(in_shape, weight_shape, kernel, strides, dilations)`` of a Conv or a
    ConvTranspose, whose weight is ``(layout, *kernel)``."""
    in_shape = _sample_shape("in_shape", in_shape)
    n = len(in_shape) - 1
    weight_shape = tuple(int(w) for w in weight_shape)
    if len(weight_shape) != n + 2:
        raise ValueError(f"weight_shape must be ({layout}, *kernel), got {weight_shape}")
    kernel = _ints("kernel (weight_shape[2:])", weight_shape[2:], n, 1)
    strides = _ints("strides", strides, n, 1)
    dilations = _ints("dilations", dilations, n, 1)
    return in_shape, weight_shape, kernel, strides, dilations


def _group_error(group: int, channels: int, weight_shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"group={group} does not fit {channels} input channels and weight {weight_shape}"
    )


def _kernel_map(
    windows: np.ndarray,
    n_a: int,
    n_b: int,
    group: int,
    gather: bool,
    out_shape: tuple[int, ...],
    in_shape: tuple[int, ...],
) -> SparseMap:
    """The entries of a grouped (transposed) convolution through a weight ``W[a, b, k]``.

    Channel ``a`` (of ``n_a``) at base position ``p`` (a row of ``windows``) meets channel
    ``(a // (n_a / group)) * n_b + b`` of the other side at ``windows[p, k]`` (-1: none).  A
    Conv gathers (``gather``: the base side is the output, ``a`` its channel ``m``, ``b`` the
    input channel within the group); a ConvTranspose scatters (the base side is the input).
    """
    n_pos, n_k = windows.shape
    a = np.arange(n_a, dtype=np.int64)[:, None, None, None]
    b = np.arange(n_b, dtype=np.int64)[None, None, :, None]
    pos = windows[None, :, None, :]
    valid = np.broadcast_to(pos >= 0, (n_a, n_pos, n_b, n_k))
    base = a * n_pos + np.arange(n_pos, dtype=np.int64)[None, :, None, None]
    other_shape = in_shape if gather else out_shape
    other = ((a // (n_a // group)) * n_b + b) * prod(other_shape[1:]) + pos
    rows, cols = (base, other) if gather else (other, base)
    param = (a * n_b + b) * n_k + np.arange(n_k, dtype=np.int64)
    shape = valid.shape
    n_entries = int(valid.sum())
    reserve(MAP_ENTRY_BYTES * n_entries, f"the {n_entries:,} entries of the convolution's map")
    return SparseMap(
        rows=np.broadcast_to(rows, shape)[valid],
        cols=np.broadcast_to(cols, shape)[valid],
        param=np.broadcast_to(param, shape)[valid],
        coef=np.ones(int(valid.sum())),
        out_shape=tuple(out_shape),
        in_shape=tuple(in_shape),
    )


def conv_map(
    in_shape: Sequence[int],
    weight_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int] | None,
    dilations: Sequence[int],
    group: int,
) -> SparseMap:
    """The map of an ONNX Conv (without bias), every entry taken from the weight.

    ``weight_shape = (M, C / group, *k)``; ``out[m, o] = sum W[m, c', k] * in[c, o * stride -
    pad_begin + k * dilation]`` over the channels ``c`` of the group of ``m``, padded positions
    contributing nothing.  Rows are sorted.
    """
    in_shape, weight_shape, kernel, strides, dilations = _conv_args(
        in_shape, weight_shape, strides, dilations, "M, C/group"
    )
    channels, spatial = in_shape[0], in_shape[1:]
    n_out, per_group, n = weight_shape[0], weight_shape[1], len(spatial)
    if group < 1 or channels % group or n_out % group or per_group * group != channels:
        raise _group_error(group, channels, weight_shape)
    begins, ends = _split_pads(pads, n)
    out_spatial = tuple(
        (i + b + e - _extent(k, d)) // s + 1
        for i, k, s, d, b, e in zip(spatial, kernel, strides, dilations, begins, ends)
    )
    if any(o < 1 for o in out_spatial):
        raise ValueError(f"the kernel {kernel} does not fit the padded input {spatial}")
    windows = _windows(out_spatial, spatial, kernel, strides, begins, dilations)
    return _kernel_map(windows, n_out, per_group, group, True, (n_out, *out_spatial), in_shape)


def conv_transpose_map(
    in_shape: Sequence[int],
    weight_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int] | None,
    dilations: Sequence[int],
    group: int,
    output_padding: Sequence[int] | None,
    output_shape: Sequence[int] | None = None,
    auto_pad: str = "NOTSET",
) -> SparseMap:
    """The map of an ONNX ConvTranspose (without bias), every entry taken from the weight.

    ``weight_shape = (C, M / group, *k)``; input ``in[c, i]`` adds ``W[c, m', k] * in[c, i]`` to
    ``out[m, i * stride - pad_begin + k * dilation]``.  Without ``output_shape`` (spatial dims
    only), ``out = stride * (in - 1) + output_padding + (k - 1) * dilation + 1 - pad_begin -
    pad_end``.  With it, or with ``auto_pad`` SAME_UPPER / SAME_LOWER (``out = in * stride``),
    ``pads`` is ignored and the total padding is split as onnxruntime and the spec do: the
    larger half at the end for SAME_UPPER, at the beginning otherwise.
    """
    in_shape, weight_shape, kernel, strides, dilations = _conv_args(
        in_shape, weight_shape, strides, dilations, "C, M/group"
    )
    channels, spatial = in_shape[0], in_shape[1:]
    per_group, n = weight_shape[1], len(spatial)
    if group < 1 or weight_shape[0] != channels or channels % group:
        raise _group_error(group, channels, weight_shape)
    if output_padding is None or len(output_padding) == 0:
        extra = (0,) * n
    else:
        extra = _ints("output_padding", output_padding, n, 0)
    if auto_pad not in _AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {_AUTO_PADS}, got {auto_pad!r}")
    full = [
        s * (i - 1) + a + _extent(k, d)
        for i, k, s, d, a in zip(spatial, kernel, strides, dilations, extra)
    ]
    if output_shape is None and auto_pad.startswith("SAME"):
        output_shape = [i * s for i, s in zip(spatial, strides)]
    if output_shape is not None:
        out_spatial = _ints("output_shape", output_shape, n, 1)
        totals = [f - o for f, o in zip(full, out_spatial)]
        if any(t < 0 for t in totals):
            raise ValueError(f"output_shape {list(out_spatial)} exceeds the unpadded output {full}")
        upper = auto_pad == "SAME_UPPER"
        begins = tuple(t // 2 if upper else t - t // 2 for t in totals)
    elif auto_pad == "VALID":
        out_spatial, begins = tuple(full), (0,) * n
    else:
        begins, ends = _split_pads(pads, n)
        out_spatial = tuple(f - b - e for f, b, e in zip(full, begins, ends))
        if any(o < 1 for o in out_spatial):
            raise ValueError(f"pads {[*begins, *ends]} leave an empty output {out_spatial}")
    windows = _windows(spatial, out_spatial, kernel, strides, begins, dilations)
    out_shape = (per_group * group, *out_spatial)
    return _kernel_map(windows, channels, per_group, group, False, out_shape, in_shape)


def _pool_geometry(
    in_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int] | None,
    dilations: Sequence[int],
    ceil_mode: bool,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Checked (in_shape, kernel, out_spatial, begins, ends) of a pool, as onnxruntime sizes it.

    With ``ceil_mode`` the output size rounds up, but a last window that would start in the
    end padding (or past it) is dropped, as in onnxruntime and PyTorch.
    """
    in_shape = _sample_shape("in_shape", in_shape)
    spatial = in_shape[1:]
    n = len(spatial)
    kernel = _ints("kernel", kernel, n, 1)
    strides = _ints("strides", strides, n, 1)
    dilations = _ints("dilations", dilations, n, 1)
    begins, ends = _split_pads(pads, n)
    out_spatial = []
    for i, k, s, d, b, e in zip(spatial, kernel, strides, dilations, begins, ends):
        span = i + b + e - _extent(k, d)
        size = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (size - 1) * s >= i + b:
            size -= 1
        if size < 1:
            raise ValueError(f"the kernel {kernel} does not fit the padded input {spatial}")
        out_spatial.append(size)
    return in_shape, kernel, tuple(out_spatial), begins, ends


def average_pool_map(
    in_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int] | None,
    dilations: Sequence[int],
    count_include_pad: bool,
    ceil_mode: bool,
) -> SparseMap:
    """The map of an ONNX AveragePool: fixed entries ``1 / count`` per window, channel by channel.

    ``count`` is the number of window elements inside the input (``count_include_pad`` false)
    or inside the padded input (true); a ``ceil_mode`` window running past the end padding thus
    divides by the elements it covers, as onnxruntime does.
    """
    in_shape, kernel, out_spatial, begins, ends = _pool_geometry(
        in_shape, kernel, strides, pads, dilations, ceil_mode
    )
    spatial = in_shape[1:]
    windows = _windows(out_spatial, spatial, kernel, strides, begins, dilations)
    if count_include_pad:
        padded = [i + b + e for i, b, e in zip(spatial, begins, ends)]
        covered = _windows(out_spatial, padded, kernel, strides, (0,) * len(spatial), dilations)
        count = (covered >= 0).sum(axis=1)
    else:
        count = (windows >= 0).sum(axis=1)
    n_pos, n_k = windows.shape
    channels = in_shape[0]
    c = np.arange(channels, dtype=np.int64)[:, None, None]
    valid = np.broadcast_to(windows >= 0, (channels, n_pos, n_k))
    rows = c * n_pos + np.arange(n_pos, dtype=np.int64)[None, :, None]
    cols = c * prod(spatial) + windows[None]
    coef = np.broadcast_to((1.0 / np.maximum(count, 1))[None, :, None], valid.shape)
    n_entries = int(valid.sum())
    reserve(MAP_ENTRY_BYTES * n_entries, f"the {n_entries:,} entries of the pool's map")
    return SparseMap(
        rows=np.broadcast_to(rows, valid.shape)[valid],
        cols=np.broadcast_to(cols, valid.shape)[valid],
        param=np.full(int(valid.sum()), -1, dtype=np.int64),
        coef=coef[valid],
        out_shape=(channels, *out_spatial),
        in_shape=in_shape,
    )


def global_average_pool_map(in_shape: Sequence[int]) -> SparseMap:
    """The map of an ONNX GlobalAveragePool: each channel's mean, output ``(C, 1, ..., 1)``."""
    in_shape = _sample_shape("in_shape", in_shape)
    channels, size = in_shape[0], prod(in_shape[1:])
    return SparseMap(
        rows=np.repeat(np.arange(channels, dtype=np.int64), size),
        cols=np.arange(channels * size, dtype=np.int64),
        param=np.full(channels * size, -1, dtype=np.int64),
        coef=np.full(channels * size, 1.0 / size),
        out_shape=(channels, *(1,) * (len(in_shape) - 1)),
        in_shape=in_shape,
    )


def pool_windows(
    in_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int] | None,
    dilations: Sequence[int],
    ceil_mode: bool,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The windows of an ONNX MaxPool, which is not linear: ``(windows, out_shape)``.

    ``windows`` is int64 ``(prod(out_shape), prod(kernel))``: row ``r`` holds the flat input
    positions whose maximum is flat output ``r``, -1 where the window element falls into
    padding (which MaxPool ignores).  Each window stays in its channel.
    """
    in_shape, kernel, out_spatial, begins, _ = _pool_geometry(
        in_shape, kernel, strides, pads, dilations, ceil_mode
    )
    spatial = in_shape[1:]
    windows = _windows(out_spatial, spatial, kernel, strides, begins, dilations)
    offsets = np.arange(in_shape[0], dtype=np.int64)[:, None, None] * prod(spatial)
    shifted = np.where(windows[None] >= 0, windows[None] + offsets, -1)
    return shifted.reshape(-1, windows.shape[1]), (in_shape[0], *out_spatial)
