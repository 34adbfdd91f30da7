"""The refinement loop: train a network round after round toward an easier MILP, within an
accuracy budget (``docs/training.md``).

:func:`refine` runs it (:mod:`.loop`); each round is measured and judged in :mod:`.rounds`,
kept as a checkpoint and a history row in :mod:`.history`, and the accuracy budget that
chooses the regularizer's weight and the round returned is :mod:`.budget`.
"""

from .budget import AccuracyBudget
from .history import RefineHistory
from .loop import RefineResult, refine

__all__ = ["AccuracyBudget", "RefineHistory", "RefineResult", "refine"]
