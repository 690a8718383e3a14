"""Objectives: nn.Modules whose forward(batch) returns {loss, logits, components}."""
from spml.objectives import mpc, supervised  # noqa: F401  (registration by import)
from spml.objectives.base import Objective
from spml.objectives.registry import OBJECTIVES, DataStats
from spml.config import Config


def build_objective(config: Config, stats: DataStats) -> Objective:
    """supervised mode -> SupervisedObjective; spml mode -> MPC or a single-positive baseline."""
    if config.mode == "supervised":
        return OBJECTIVES.build("supervised", config=config, stats=stats)
    name = "mpc" if config.spml.method == "mpc" else "spml_baseline"
    return OBJECTIVES.build(name, config=config, stats=stats)


__all__ = ["OBJECTIVES", "DataStats", "Objective", "build_objective"]
