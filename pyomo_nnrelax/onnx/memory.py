"""The reader's memory check: an allocation that grows with a graph is estimated first, and
one that would not fit in the available memory raises :class:`TooLargeError`, which the
dispatch turns into an error naming the node and its op (:mod:`.registry`).
"""

from __future__ import annotations

import os

from ..errors import OnnxImportError

#: Allocations estimated below this many bytes are not checked.
CHECKED_FROM = 1 << 23


#: The share of the available memory one allocation may take.
MEMORY_SHARE = 0.8


class TooLargeError(OnnxImportError):
    """An allocation of the reader would not fit in the available memory."""


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def reserve(n_bytes: float, what: str) -> None:
    """Raise :class:`TooLargeError` if ``n_bytes`` (an estimate) for ``what`` would take more
    than :data:`MEMORY_SHARE` of the available memory; small allocations are not checked."""
    if n_bytes < CHECKED_FROM:
        return
    available = available_memory()
    if available is not None and n_bytes > MEMORY_SHARE * available:
        raise TooLargeError(
            f"{what} would take about {_in_units(n_bytes)}, more than {MEMORY_SHARE:.0%} of the "
            f"{_in_units(available)} of memory available"
        )


def _in_units(n_bytes: float) -> str:
    """``n_bytes`` in kB, MB or GB (powers of 1000), e.g. ``"12.9 GB"``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes / 1e3:.1f} kB"
