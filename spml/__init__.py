"""spml: single-positive and supervised multi-label chest X-ray classification.

The parts a researcher composes, importable from here (loaded on first use, so `import spml` stays cheap):

* models: Backbone, heads (HEADS, build_head), Classifier, BatchTransformer, FeaturePerturbation, ModelEma,
  InferenceModel, load_model (an exported folder or a run folder -> a model ready for inference)
* augmentation: WeakAugment, StrongAugment, TTA_VIEWS, tta_predict
* losses: LOSSES, SPML_LOSSES, build_loss (mode="supervised" | "spml")
* objectives: SupervisedObjective, SinglePositiveObjective, MPCObjective and MPC's strategies
  (GlobalThresholds, ClassPriorThresholds, THRESHOLDS, TARGETS, CONSISTENCY, BASE_TERMS)
* training: Trainer and its callbacks, make_train_loader, make_eval_loader, EpochSampler, predict_split
* data from plain arguments: read_nih, read_chexpert, read_mimic, read_generic_csv, read_synthetic (-> LabelTable),
  assign_splits, ImageSettings, Masking, LabelPolicy (spml.data.build.build_data: a split table -> DataBundle)
* from a config: load_config, build_data (spml.factories.data), build_objective, build_trainer, export_run
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "spml.models": [
        "Backbone",
        "BatchTransformer",
        "Classifier",
        "FeaturePerturbation",
        "HEADS",
        "InferenceModel",
        "ModelEma",
        "build_head",
    ],
    "spml.augment": ["StrongAugment", "TTA_VIEWS", "WeakAugment", "tta_predict"],
    "spml.losses": ["LOSSES", "SPML_LOSSES", "build_loss"],
    "spml.objectives": [
        "BASE_TERMS",
        "CONSISTENCY",
        "ClassPriorThresholds",
        "GlobalThresholds",
        "MPCObjective",
        "SinglePositiveObjective",
        "SupervisedObjective",
        "TARGETS",
        "THRESHOLDS",
    ],
    "spml.engine.trainer": ["Trainer"],
    "spml.engine.callbacks": [
        "Callback",
        "Checkpoint",
        "EarlyStopping",
        "EMA",
        "FinalEvaluation",
        "TrainLog",
        "Validation",
    ],
    "spml.data.loader": ["EpochSampler", "make_eval_loader", "make_train_loader"],
    "spml.evaluation.scoring": ["predict_split"],
    "spml.config": ["load_config"],
    "spml.data.readers.nih": ["read_nih"],
    "spml.data.readers.chexpert": ["read_chexpert"],
    "spml.data.readers.mimic": ["read_mimic"],
    "spml.data.readers.csv": ["CSVLayout", "read_generic_csv"],
    "spml.data.synthetic": ["read_synthetic"],
    "spml.data.splits": ["assign_splits"],
    "spml.data.build": ["ImageSettings", "LabelPolicy", "Masking"],
    "spml.factories.data": ["build_data"],
    "spml.factories": ["build_objective", "build_trainer", "export_run", "load_model"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'spml' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
