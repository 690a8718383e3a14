"""Objectives from plain arguments: nn.Modules whose forward(batch) returns {loss, logits, components}."""

from spml.objectives.base import OBJECTIVES, Objective
from spml.objectives.mpc import MPCObjective, build_mpc
from spml.objectives.pseudo_labels import (
    BASE_TERMS,
    CONSISTENCY,
    TARGETS,
    THRESHOLDS,
    ClassPriorThresholds,
    GlobalThresholds,
    PseudoLabels,
)
from spml.objectives.supervised import (
    SinglePositiveObjective,
    SupervisedConsistencyObjective,
    SupervisedObjective,
    supervised_consistency,
)

__all__ = [
    "BASE_TERMS",
    "CONSISTENCY",
    "OBJECTIVES",
    "TARGETS",
    "THRESHOLDS",
    "ClassPriorThresholds",
    "GlobalThresholds",
    "MPCObjective",
    "Objective",
    "PseudoLabels",
    "SinglePositiveObjective",
    "SupervisedConsistencyObjective",
    "SupervisedObjective",
    "build_mpc",
    "supervised_consistency",
]
