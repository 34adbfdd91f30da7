"""The accuracy budget of the refinement loop: how much accuracy the user gives for an easier MILP.

A round is *within budget* when its held-out loss is at most ``loss_budget`` times the
reference loss and, when the user's true function is given, the true value at the round's
MILP argmin is worse than the reference's by at most ``decision_budget``.  Inside the budget
the regularizer weight grows round by round (continuation); a round that breaks the budget is
set back to the last round within it and the weight shrinks.  The result is the round within
budget whose MILP is easiest (see :func:`choose_round`).  These are pure functions of the
history rows, so a resumed run takes up exactly where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..checks import positive_float


@dataclass(frozen=True)
class AccuracyBudget:
    """What the refinement may spend.

    Parameters
    ----------
    loss_budget : float, optional
        Largest allowed ratio of held-out loss to the reference loss (>= 1), e.g. 1.25.
    decision_budget : float, optional
        Largest allowed worsening of the true value at the MILP argmin, in the units of the
        user's ``evaluate`` function (needs ``evaluate``).
    growth : float
        Factor by which lambda grows after a round within budget, and shrinks after one that
        is not (> 1).
    """

    loss_budget: float | None = None
    decision_budget: float | None = None
    growth: float = 2.0

    def __post_init__(self) -> None:
        if self.loss_budget is not None:
            if not positive_float("loss_budget", self.loss_budget) >= 1:
                raise ValueError(f"loss_budget must be >= 1, got {self.loss_budget}")
        if self.decision_budget is not None:
            positive_float("decision_budget", self.decision_budget, allow_zero=True)
        if not positive_float("lam_growth", self.growth) > 1:
            raise ValueError(f"lam_growth must be > 1, got {self.growth}")

    @property
    def active(self) -> bool:
        return self.loss_budget is not None or self.decision_budget is not None

    def judge(self, row: dict[str, Any]) -> tuple[bool, str]:
        """Whether ``row`` (with ``loss_ratio`` and, if evaluated, ``decision_change``) is
        within budget, and why not."""
        ratio = row.get("loss_ratio")
        if self.loss_budget is not None and not (ratio is not None and ratio <= self.loss_budget):
            return False, f"loss {_fmt(ratio)}x the reference > {self.loss_budget:g}x"
        change = row.get("decision_change")
        if self.decision_budget is not None and not (
            change is not None and change <= self.decision_budget
        ):
            limit = self.decision_budget
            return False, f"true value at the argmin worse by {_fmt(change)} > {limit:g}"
        return True, "within budget"

    def next_lam(
        self,
        lam: float,
        within: bool,
        ratio: float | None = None,
        rows: Sequence[dict[str, Any]] = (),
    ) -> float:
        """Continuation: grow lambda by ``growth`` while the budget holds, back off when it
        breaks, and once both are known search between them.

        ``rows`` are the history's rounds so far: the largest lambda of a round within
        budget and the smallest of a round over it (above that) bracket the search, and the
        next lambda is their geometric mean, so no lambda that just broke the budget is tried
        again.  Before a bracket: near a minimum of the loss, a regularizer that moves the
        weights by O(lambda) raises the loss by O(lambda^2), so a loss ``ratio`` over the
        loss budget shrinks lambda by ``sqrt((loss_budget - 1) / (ratio - 1))``: by
        ``growth`` at least and ``growth**4`` at most (a decision over its budget: by
        ``growth``).
        """
        good, bad = lam_bracket(rows)
        if within:
            good = max(good or lam, lam)
            return math.sqrt(good * bad) if bad is not None and bad > good else lam * self.growth
        if good is not None and good < lam:
            return math.sqrt(good * lam)
        shrink = 1.0 / self.growth
        if ratio is not None and self.loss_budget is not None and ratio > self.loss_budget:
            quadratic = math.sqrt((self.loss_budget - 1.0) / (ratio - 1.0))
            shrink = min(shrink, max(quadratic, self.growth**-4))
        return lam * shrink


def lam_bracket(rows: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """The largest lambda of a regularized round the schedule counts as good
    (:func:`on_pace`) and the smallest lambda above it of a round it counts as bad."""
    tried = [(float(r["lam"]), on_pace(r)) for r in rows if float(r.get("lam") or 0.0) > 0.0]
    good = max((lam for lam, ok in tried if ok), default=None)
    above = [lam for lam, ok in tried if not ok and (good is None or lam > good)]
    return good, min(above, default=None)


def difficulty_key(row: dict[str, Any], by_milp: bool) -> tuple[float, ...]:
    """Smaller is easier, by figures that do not jitter from run to run.  With a measured
    MILP: a proven optimum before a time-limited solve; among proven ones, fewer
    branch-and-bound nodes (HiGHS's search is the same for the same model), then the smaller
    LP gap, then fewer unstable neurons, MILP seconds only to break a tie of all three; among
    time-limited ones, the smaller gap left at the limit, then fewer unstable neurons.
    Without: unstable neurons, then mean big-M."""
    if not by_milp:
        return (float(row["unstable"]), float(row["mean_big_m"]))
    if row.get("milp_optimal"):
        gap = row.get("lp_gap")
        gap = float(gap) if _finite(gap) else math.inf
        nodes = float(row.get("milp_nodes") or 0)
        return (0.0, nodes, gap, float(row["unstable"]), float(row["milp_seconds"]))
    left = abs(float(row.get("milp_objective", math.nan)) - float(row.get("milp_bound", math.nan)))
    return (1.0, left if math.isfinite(left) else math.inf, float(row["unstable"]))


def choose_round(rows: list[dict[str, Any]]) -> tuple[int, str]:
    """The round within budget whose MILP is easiest, and why it was chosen.

    Round 0 (the starting network) is within budget unless the budget is relative to
    something else (an unregularized training); when no round is within budget, the round
    with the lowest held-out loss is chosen, and the reason says so.
    """
    within = [r for r in rows if r.get("within_budget", True)]
    if not within:
        best = fallback_round(rows)
        return int(best["round"]), (
            f"round {best['round']}: no round was within budget; the lowest held-out loss"
        )
    if len(within) == 1:
        return int(within[0]["round"]), f"round {within[0]['round']}: the only round within budget"
    by_milp = all(_finite(r.get("milp_seconds")) for r in within)
    best = min(within, key=lambda r: difficulty_key(r, by_milp))
    if not by_milp:
        measure = "unstable neurons and mean big-M"
    elif best.get("milp_optimal"):
        measure = "branch-and-bound nodes (then LP gap, unstable neurons)"
    else:
        measure = "the gap left at the MILP time limit (none solved to optimality)"
    return int(best["round"]), (
        f"round {best['round']}: the easiest by {measure} of the {len(within)} rounds within budget"
    )


def schedule_ratio(row: dict[str, Any]) -> float | None:
    """The loss ratio the lambda schedule judged ``row`` by (``paced_ratio`` where the
    reference is paced, else ``loss_ratio``)."""
    return row.get("paced_ratio", row.get("loss_ratio"))


def on_pace(row: dict[str, Any]) -> bool:
    """Whether the lambda schedule counts ``row`` as good: within budget against the
    reference after as many epochs where the history has one (``on_pace``), else within
    budget."""
    return bool(row.get("on_pace", row.get("within_budget", True)))


def last_good_round(rows: list[dict[str, Any]]) -> int:
    """The round training goes back to after one that broke the budget: the last good round
    (:func:`on_pace`), else the one with the lowest held-out loss."""
    within = [int(r["round"]) for r in rows if on_pace(r)]
    return max(within) if within else int(fallback_round(rows)["round"])


def fallback_round(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the lowest held-out loss."""
    return min(rows, key=lambda r: float(r["held_out_loss"]))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"
