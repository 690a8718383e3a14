"""The one evaluation path: predict a split with or without test-time augmentation, score it, write its files and,
when asked, the diagnosis beside AUROC/AP (operating points, calibration, heatmaps, pointing game). The end of
training (spml.engine.callbacks.FinalEvaluation), tools/evaluate.py and external validation
(spml.evaluation.external) all call `evaluate`, so every file of an evaluation folder has this one writer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from accelerate import Accelerator
from torch.utils.data import DataLoader

from spml.data.table import DataError
from spml.evaluation.diagnostics import DiagnosticSettings, Explainer, diagnose, fit_operating_points, update_metrics
from spml.evaluation.metrics import EvalResult
from spml.evaluation.positive_unlabeled import ClassPriors
from spml.evaluation.scoring import evaluate_split, evaluating, predict_split, write_report
from spml.models.inference import InferenceModel


@dataclass(frozen=True)
class Diagnosis:
    """What the diagnosis of an evaluation needs.

    Args:
        settings: the eval.* settings (DiagnosticSettings).
        thresholds: where the operating points fitted on the val predictions go (thresholds.json).
        checkpoint: the checkpoint folder name recorded with them.
        val_loader: the val split, predicted with the same model and TTA to fit the operating points; None fits
            them on the evaluated split's own predictions (when that split is val).
        explainer: heatmap inputs of the evaluated split (None: no heatmaps, no pointing game).
        priors: class priors of a single-positive val split (data.mask_val): calibration and thresholds are then
            fitted from its observed positives and the priors (spml.evaluation.positive_unlabeled).
        recorded: facts of the run written into metrics.json beside the diagnosis (e.g. the metric that chose
            the best checkpoint).
    """

    settings: DiagnosticSettings
    thresholds: Path
    checkpoint: str = ""
    val_loader: DataLoader | None = None
    explainer: Explainer | None = None
    priors: ClassPriors | None = None
    recorded: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """What `evaluate` found: the scored result (main process; None on the others), the image-level predictions
    (every process: probs, targets, known (N, C), index (N,)), the diagnosis summary and the operating-point
    record (empty without a diagnosis).

    Attributes:
        result: the scored EvalResult (main process; None on the others).
        predictions: the image-level predictions: probs, targets, known (N, C), index (N,).
        diagnosis: the diagnosis summary.
        record: the operating-point record.
    """

    result: EvalResult | None
    predictions: dict[str, np.ndarray]
    diagnosis: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def evaluate(
    model: InferenceModel,
    loader: DataLoader,
    frame: pd.DataFrame,
    classes: Sequence[str],
    out_dir: Path,
    accelerator: Accelerator,
    *,
    tta: bool = False,
    eval_classes: Sequence[str] = (),
    level: str = "",
    bootstrap: int = 0,
    seed: int = 0,
    per_class: Mapping[str, Mapping[str, Any]] | None = None,
    diagnosis: Diagnosis | None = None,
    desc: str = "test",
) -> Evaluation:
    """Predict a split, score it and write metrics.json, per_class.csv, roc.png, pr.png (and the diagnosis) into
    `out_dir`.

    Args:
        model: the InferenceModel to score; it is not changed (TTA is a view of it, `model.with_tta`).
        loader: the split's loader (prepared by `accelerator` to shard it across processes, or plain).
        frame: the split's rows (study_id for study-level scoring), indexed by the batches' `index`.
        classes: the model's C class names (the columns of the loader's targets).
        out_dir: the evaluation folder.
        accelerator: gathers the predictions across processes; the files are written by the main process.
        tta: average over the model's TTA views.
        eval_classes: the classes scored (empty: all); level: "" per image, "max"/"mean" per study.
        bootstrap, seed: bootstrap resamples of the intervals and their seed.
        per_class: extra per_class.csv columns {column: {class: value}}, inserted after "class".
        diagnosis: fit operating points and write calibration, heatmaps and the pointing game (Diagnosis).
        desc: the progress bar's name.

    Returns:
        The Evaluation (result and diagnosis on the main process).
    """
    scored_model = model.with_tta(tta)
    suffix = " TTA" if tta else ""
    predictions = predict_split(scored_model, loader, accelerator, desc + suffix)
    val = predictions
    if diagnosis is not None and diagnosis.val_loader is not None:
        val = predict_split(scored_model, diagnosis.val_loader, accelerator, "val (thresholds)" + suffix)
    if not accelerator.is_main_process:
        return Evaluation(None, predictions)
    if not len(predictions["index"]):
        raise DataError(f"no image of the {desc} split could be decoded")
    result, scored, scored_classes = evaluate_split(predictions, frame, classes, eval_classes, level, bootstrap, seed)
    for position, (column, values) in enumerate((per_class or {}).items(), start=1):
        result.per_class.insert(position, column, [values[name] for name in result.per_class["class"]])
    write_report(result, scored, scored_classes, Path(out_dir))
    if diagnosis is None:
        return Evaluation(result, predictions)
    classes = list(classes)
    views = list(model.tta_views) if tta else []
    record = fit_operating_points(
        val, classes, diagnosis.settings, diagnosis.thresholds, diagnosis.checkpoint, tta=views, priors=diagnosis.priors
    )
    with evaluating(model):  # heatmaps explain the model without TTA; its classifier may be shared with training
        summary = diagnose(
            out_dir,
            predictions,
            classes,
            list(eval_classes or classes),
            record,
            diagnosis.settings,
            diagnosis.explainer,
            seed,
        )
    if diagnosis.recorded:
        summary.update(diagnosis.recorded)
        update_metrics(out_dir, dict(diagnosis.recorded))
    result.summary.update(summary)
    return Evaluation(result, predictions, summary, record)
