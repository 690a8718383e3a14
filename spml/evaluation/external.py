"""External validation: score a trained model on another labelled set that any reader reads (csv, nih, chexpert,
mimic, synthetic), with the run's classes paired to the set's classes (spml.data.class_mapping); the classes without
a counterpart are left out and reported, never scored as negatives.

Plain objects in: an InferenceModel (its classes name the outputs), the set's LabelTable, how its labels and images
are read (LabelPolicy, ImageSettings: the run's size and intensity policy) and the loader settings.
spml.factories.evaluation reads the external set's data config (`--data` of tools/evaluate.py) into them.
The scoring itself is the one evaluation path (spml.evaluation.evaluate.evaluate).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator

from spml.data.build import ImageSettings, LabelPolicy, SplitLabels, full_labels, make_dataset
from spml.data.class_mapping import ClassMapping, map_classes
from spml.data.loader import make_eval_loader
from spml.data.table import DataError, LabelTable
from spml.evaluation.evaluate import evaluate
from spml.evaluation.metrics import EvalResult
from spml.models.inference import InferenceModel


@dataclass
class ExternalResult:
    """What evaluate_external found and wrote.

    Attributes:
        name: the set's name.
        result: metrics of the scored classes (per_class adds external_class and match).
        mapping: the class mapping used.
        images: images scored (before study-level aggregation).
        out: the report folder.
    """

    name: str
    result: EvalResult  # metrics of the scored classes (per_class adds external_class and match)
    mapping: ClassMapping
    images: int  # images scored (before study-level aggregation)
    out: Path


def evaluate_external(
    model: InferenceModel,
    table: LabelTable,
    out: Path,
    accelerator: Accelerator,
    *,
    name: str,
    images: ImageSettings,
    labels: LabelPolicy = LabelPolicy(),
    mapping: Mapping[str, str | None] | None = None,
    mapping_source: str = "",
    tta: bool = False,
    eval_classes: tuple[str, ...] = (),
    level: str = "",
    bootstrap: int = 0,
    seed: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
    worker_start: str = "default",
    info: Mapping[str, Any] | None = None,
    described: Mapping[str, Any] | None = None,
) -> ExternalResult:
    """Score `model` on the rows of `table` and write the report into `out`.

    Args:
        model: the InferenceModel (its `classes` are the run's classes, in output order).
        table: the external set's rows to score (a reader's LabelTable after the image check, or one split).
        out: folder for metrics.json, per_class.csv (+ external_class, match), roc.png, pr.png,
            class_mapping.csv, report.md and external.json.
        accelerator: the one process's accelerator (its device is the model's).
        name: the set's name (report title).
        images: how its images are decoded (the run's size and intensity policy).
        labels: its uncertainty policy.
        mapping: the user's class mapping (run class -> external class or None); None: names and synonyms only
            (spml.data.class_mapping). mapping_source: where it came from (its file), for the messages.
        tta: average over the model's TTA views.
        eval_classes: run class names to score, among those paired (empty: every paired class).
        level, bootstrap, seed: as a run's evaluation (study level, intervals).
        batch_size, num_workers, worker_start: the loader's (spml.data.loader.make_eval_loader).
        info: run, checkpoint, TTA, ... for external.json and report.md.
        described: the set's settings for external.json (its data config) and report.md (dataset, labels, root).

    Returns:
        The ExternalResult.
    """
    classes = list(model.classes)
    pairing = map_classes(classes, table.classes, mapping, mapping_source or "the class mapping")
    run_names = [pair.run for pair in pairing.pairs]
    unpaired = [name for name in eval_classes if name not in run_names]
    if unpaired:
        reasons = {name: pairing.run_left_out.get(name, "not a run class") for name in unpaired}
        raise DataError(
            f"eval.classes / --classes: {unpaired} are not scored on the external set ({reasons}); "
            f"the paired run classes are {run_names}"
        )
    targets, known, _ = full_labels(table, labels)
    # one column per run class; a class without a counterpart is unknown everywhere (and not scored)
    run_targets = np.zeros((len(table.frame), len(classes)), np.float32)
    run_known = np.zeros_like(run_targets, dtype=bool)
    for pair in pairing.pairs:
        column = table.classes.index(pair.external)
        run_targets[:, classes.index(pair.run)] = targets[:, column]
        run_known[:, classes.index(pair.run)] = known[:, column]
    dataset = make_dataset(images, table, SplitLabels(np.arange(len(table.frame)), run_targets, run_known))
    if images.bad_images == "skip":
        dataset.log_skips_to(Path(out) / "skipped_images.csv", "external")
    pair_of = {pair.run: pair for pair in pairing.pairs}
    per_class = {
        "external_class": {run: pair.external for run, pair in pair_of.items()},
        "match": {run: pair.match for run, pair in pair_of.items()},
    }
    evaluation = evaluate(
        model,
        make_eval_loader(dataset, batch_size, num_workers, worker_start),
        table.frame,
        classes,
        Path(out),
        accelerator,
        tta=tta,
        eval_classes=eval_classes or tuple(run_names),
        level=level,
        bootstrap=bootstrap,
        seed=seed,
        per_class=per_class,
        desc="external",
    )
    outcome = ExternalResult(name, evaluation.result, pairing, len(evaluation.predictions["index"]), Path(out))
    write_external_report(outcome, dict(described or {}), images, dict(info or {}))
    return outcome


# ------------------------------------------------------------------------------------ report
def write_external_report(
    outcome: ExternalResult, described: dict[str, Any], images: ImageSettings, info: dict[str, Any]
) -> None:
    """class_mapping.csv, external.json and report.md into outcome.out (beside the evaluation's files).

    Args:
        outcome: the evaluation's result.
        described: the set's settings (dataset, labels, root).
        images: how its images were decoded.
        info: run, checkpoint, TTA, ...
    """
    out, summary = outcome.out, outcome.result.summary
    outcome.mapping.table().to_csv(out / "class_mapping.csv", index=False)
    decoded = {
        "size": images.size,
        "intensity": images.intensity.policy,
        "intensity_percentiles": list(images.intensity.percentiles),
    }
    record = {
        "name": outcome.name,
        **info,
        "images": outcome.images,
        "level": summary["level"],
        "decoded_as_run": decoded,
        "data": described,
        "pairs": [vars(pair) for pair in outcome.mapping.pairs],
        "run_left_out": outcome.mapping.run_left_out,
        "external_left_out": outcome.mapping.external_left_out,
        "not_scorable": summary["skipped"],
    }
    (out / "external.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(report_markdown(outcome, described, info), encoding="utf-8")


def number(value: float) -> str:
    """A metric for the report: 4 decimals, "n/a" for None or NaN.

    Args:
        value: the metric.

    Returns:
        The text.
    """
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def report_markdown(outcome: ExternalResult, described: dict[str, Any], info: dict[str, Any]) -> str:
    """A human-readable report: what was scored against what, the metrics, and what was left out and why.

    Args:
        outcome: the evaluation's result.
        described: the set's settings (dataset, labels, root).
        info: run, checkpoint, TTA, ...

    Returns:
        The Markdown text.
    """
    summary, per_class = outcome.result.summary, outcome.result.per_class
    where = described.get("labels") or described.get("root") or f"seed {described.get('synthetic', {}).get('seed', '')}"
    lines = [f"# External validation: {outcome.name}", ""]
    lines += [f"* {key}: {value}" for key, value in info.items()]
    lines += [
        f"* external set: data.dataset={described.get('dataset', '')} ({where}), split "
        f"{info.get('split', 'all')}, {outcome.images} images "
        f"scored at {summary['level']} level ({summary['n_images']} rows)",
        f"* mAP {number(summary['mAP'])}, mean AUROC {number(summary['mean_auroc'])} over "
        f"{len(summary['classes_used'])} classes",
        "",
        "| run class | external class | match | n_pos | n_neg | AUROC | AP |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row['class']} | {row['external_class']} | {row['match']} | {row['n_pos']} | {row['n_neg']} | "
        f"{number(row['auroc'])} | {number(row['ap'])} |"
        for row in per_class.to_dict("records")
    ]
    lines += ["", "Left out (not scored, not counted as negatives):", ""]
    lines += [f"* run class {name}: {why}" for name, why in outcome.mapping.run_left_out.items()]
    lines += [f"* external class {name}: {why}" for name, why in outcome.mapping.external_left_out.items()]
    lines += [f"* paired class {name}: {why}" for name, why in summary["skipped"].items()]
    if lines[-1] == "":
        lines.append("* nothing")
    return "\n".join(lines) + "\n"
