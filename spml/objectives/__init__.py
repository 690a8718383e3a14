"""Objectives from plain arguments: nn.Modules whose forward(batch) returns {loss, logits, components}."""
from spml.objectives.base import Objective
from spml.objectives.mpc import MPCObjective
from spml.objectives.pseudo_labels import (BASE_TERMS, CONSISTENCY, TARGETS, THRESHOLDS, ClassPriorThresholds,
                                           GlobalThresholds, PseudoLabels, masked_bce)
from spml.objectives.supervised import (SinglePositiveObjective, SupervisedConsistencyObjective,
                                         SupervisedObjective)

__all__ = ["BASE_TERMS", "CONSISTENCY", "ClassPriorThresholds", "GlobalThresholds", "MPCObjective", "Objective",
           "PseudoLabels", "SinglePositiveObjective", "SupervisedConsistencyObjective", "SupervisedObjective",
           "TARGETS", "THRESHOLDS", "masked_bce"]
