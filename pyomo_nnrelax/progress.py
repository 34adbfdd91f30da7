"""Progress bars: one tqdm set-up for training epochs, refinement rounds, tightened layers,
sweep runs and data generation, or a silent stand-in when progress is not wanted.

>>> bar = progress_bar(3, "demo", "step", show=False)
>>> bar.update(1); bar.show(loss=0.5, gap=None); bar.close()
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class _Silent:
    """The interface of :class:`_Bar` doing nothing."""

    total: int | None = None
    n: int = 0

    def update(self, steps: int = 1) -> None:
        self.n += steps

    def show(self, **values) -> None:
        return None

    def close(self) -> None:
        return None


class _Bar:
    """A tqdm bar on stderr; :meth:`show` sets the figures after the bar, leaving out those
    not known yet (None) instead of printing ``None``."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr)

    @property
    def n(self) -> int:
        return self._bar.n

    @property
    def total(self) -> int | None:
        return self._bar.total

    @total.setter
    def total(self, value: int) -> None:
        self._bar.total = value
        self._bar.refresh()

    def update(self, steps: int = 1) -> None:
        self._bar.update(steps)

    def show(self, **values) -> None:
        shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items()}
        self._bar.set_postfix({k: v for k, v in shown.items() if v is not None}, refresh=True)

    def close(self) -> None:
        """Close the bar; one closed while Ctrl-C propagates is cleared, so the command's one
        line about the interrupt stands alone."""
        if isinstance(sys.exc_info()[1], KeyboardInterrupt):
            self._bar.leave = False
        self._bar.close()


def progress_bar(total: int | None, desc: str, unit: str, show: bool = True) -> _Bar | _Silent:
    """A progress bar over ``total`` ``unit`` s (unknown total: None), or a silent one."""
    return _Bar(total, desc, unit) if show else _Silent(total)
