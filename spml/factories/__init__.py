"""The factory layer: the one place that turns a Config into objects (components, objective, trainer, the
exported model). Every other package takes plain arguments and never reads the config schema."""

from spml.factories.artifact import export_run, load_model, model_spec
from spml.factories.components import (
    build_classifier,
    build_objective,
    build_optimizer,
    build_scheduler,
    build_strong,
    build_weak,
    check_choices,
    config_key,
    objective_loss,
)
from spml.factories.data import build_data
from spml.factories.evaluation import check_eval_config
from spml.factories.stats import DataStats, data_stats
from spml.factories.training import build_trainer, check_run_config, check_train_config, claim_run_dir, record_resume

__all__ = [
    "DataStats",
    "build_classifier",
    "build_data",
    "build_objective",
    "build_optimizer",
    "build_scheduler",
    "build_strong",
    "build_trainer",
    "build_weak",
    "check_choices",
    "check_eval_config",
    "check_run_config",
    "check_train_config",
    "claim_run_dir",
    "config_key",
    "data_stats",
    "export_run",
    "load_model",
    "model_spec",
    "objective_loss",
    "record_resume",
]
