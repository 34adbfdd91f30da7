"""Relaxation-informed training: fit ReLU networks whose MILP embedding is easy to solve.

``Trainer`` runs Adam on ``loss + lam * R`` with ``R`` built from the regularizers below
(docs/method.md, section 4), e.g. ``BoundWidth() + LPGap(sense="min")``.
"""

from .ibp import IBPTrace, ibp_backward, ibp_forward
from .losses import MSELoss, PinballLoss
from .optim import Adam
from .regularizers import (
    L1,
    L2,
    BoundWidth,
    Combination,
    LPGap,
    NeuronBoundPenalty,
    RegContext,
    Regularizer,
    ReLUStability,
    StableNeuron,
)
from .scaling import TargetScaling
from .trainer import EpochStats, Trainer, TrainResult

__all__ = [
    "Adam",
    "BoundWidth",
    "Combination",
    "EpochStats",
    "IBPTrace",
    "L1",
    "L2",
    "LPGap",
    "MSELoss",
    "NeuronBoundPenalty",
    "PinballLoss",
    "RegContext",
    "Regularizer",
    "ReLUStability",
    "StableNeuron",
    "TargetScaling",
    "TrainResult",
    "Trainer",
    "ibp_backward",
    "ibp_forward",
]
