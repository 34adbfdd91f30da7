"""PNG figures of a refinement history and of a sweep's accuracy / solve-time trade-off.

matplotlib is imported inside each function with the Agg backend, so the package imports
without it and plots render without a display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write


def _figure(**options):
    """A matplotlib Figure without pyplot, so the caller's backend is left alone."""
    from matplotlib.figure import Figure

    return Figure(**options)


def _column(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """``rows[i][key]`` as floats, NaN where missing or None."""
    values = [row.get(key) for row in rows]
    return np.array([math.nan if v is None or v == "" else float(v) for v in values])


def plot_history(history_rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Losses, unstable neurons, LP gap and (when measured) MILP seconds per round of a
    refinement history, as a PNG.

    ``history_rows`` are :class:`~pyomo_nnrelax.refinement.RefineHistory` rows.  A
    history with an accuracy budget shows the held-out loss relative to the reference, the
    rounds outside the budget hollow, and the chosen round starred in every panel.
    """
    from matplotlib.ticker import MaxNLocator

    rounds = _column(history_rows, "round")
    milp = _column(history_rows, "milp_seconds")
    panels = [
        ("unstable", "unstable neurons", "tab:red"),
        ("lp_gap", "LP gap", "tab:green"),
    ] + ([("milp_seconds", "MILP s", "tab:purple")] if np.isfinite(milp).any() else [])
    fig = _figure(figsize=(6, 2.4 * (len(panels) + 1)))
    axes = fig.subplots(len(panels) + 1, 1, sharex=True)
    budgeted = any("within_budget" in row for row in history_rows[1:])
    outside = np.array([not row.get("within_budget", True) for row in history_rows])
    chosen = np.array([bool(row.get("chosen")) for row in history_rows])
    if budgeted:
        ratio = _column(history_rows, "loss_ratio")
        axes[0].plot(rounds, ratio, marker="o", label="held-out loss / reference")
        axes[0].scatter(
            rounds[outside], ratio[outside], s=60, facecolors="white", edgecolors="tab:red",
            zorder=3, label="outside the budget",
        )  # fmt: skip
        axes[0].set_ylabel("loss ratio")
    else:
        for key, label in (("train_loss", "training loss"), ("val_loss", "validation loss")):
            values = _column(history_rows, key)
            if np.isfinite(values).any():
                axes[0].plot(rounds, values, marker="o", label=label)
        axes[0].set_ylabel("loss (scaled)")
    for ax, (key, label, color) in zip(axes[1:], panels):
        ax.plot(rounds, _column(history_rows, key), marker="o", color=color)
        ax.set_ylabel(label)
    if chosen.any():
        for ax, key in zip(axes, ["loss_ratio"] + [key for key, _, _ in panels]):
            values = _column(history_rows, key)
            ax.scatter(rounds[chosen], values[chosen], marker="*", s=220, color="black", zorder=4)
        axes[0].scatter([], [], marker="*", s=120, color="black", label="chosen round")
    axes[0].legend()
    axes[-1].set_xlabel("round")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_pareto(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    error: str = "test_rmse",
    seconds: str = "milp_seconds",
) -> Path:
    """Test error against MILP solve time per run, coloured by regularizer, front highlighted."""
    e, t = _column(rows, error), _column(rows, seconds)
    front = pareto_mask(e, t)
    fig = _figure(figsize=(6, 4.5))
    ax = fig.subplots()
    names = [str(row.get("regularizer")) for row in rows]
    for name in dict.fromkeys(names):
        chosen = np.array([n == name for n in names])
        ax.scatter(t[chosen], e[chosen], label=name, alpha=0.8)
    order = np.argsort(t[front])
    ax.plot(
        t[front][order],
        e[front][order],
        color="black",
        marker="*",
        markersize=12,
        linestyle="--",
        label="Pareto front",
    )
    ax.set_xlabel(f"MILP solve time, s ({seconds})")
    ax.set_ylabel(f"test error ({error})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    """Write the figure to ``path`` (format from its suffix, PNG by default) atomically."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=kind, dpi=100))


def pareto_mask(errors: Sequence[float], times: Sequence[float]) -> np.ndarray:
    """True for the points no other point beats in both error and time (both minimised).

    Points with a NaN coordinate are never on the front.
    """
    e, t = np.asarray(errors, dtype=np.float64), np.asarray(times, dtype=np.float64)
    finite = np.isfinite(e) & np.isfinite(t)
    mask = finite.copy()
    for i in np.flatnonzero(finite):
        no_worse = finite & (e <= e[i]) & (t <= t[i])
        better = (e < e[i]) | (t < t[i])
        mask[i] = not np.any(no_worse & better)
    return mask
