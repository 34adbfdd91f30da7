"""Relaxation-informed training: fit ReLU networks whose MILP embedding is easy to solve.

``Trainer`` runs Adam on ``loss + lam * R`` with ``R`` built from the regularizers below
(docs/method.md, section 4), e.g. ``BoundWidth() + LPGap(sense="min")``.
"""

from .adversarial import PGD
from .context import RegContext
from .ibp import IBPTrace, ibp_backward, ibp_forward
from .losses import CrossEntropyLoss, MSELoss, PinballLoss
from .lp_gap import LPGap
from .optim import Adam
from .pruning import prune
from .regularizers import (
    L1,
    L2,
    BoundWidth,
    Combination,
    NeuronBoundPenalty,
    Regularizer,
    ReLUStability,
    StableNeuron,
)
from .scaling import TargetScaling
from .specs import parse_regularizer
from .trainer import EpochStats, Trainer, TrainResult

__all__ = [
    "Adam",
    "BoundWidth",
    "Combination",
    "CrossEntropyLoss",
    "EpochStats",
    "IBPTrace",
    "L1",
    "L2",
    "LPGap",
    "MSELoss",
    "NeuronBoundPenalty",
    "PGD",
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
    "parse_regularizer",
    "prune",
]
