"""What an evaluation adds to AUROC/AP: operating thresholds chosen on the validation split (stored with the
run), calibration on the test split, the heatmap gallery and, where the images come with finding masks (the
synthetic set), the pointing game. Called by the end of training and by tools/evaluate.py.

Everything here is per image and on the probabilities `tools/predict.py` writes: the calibration
(eval.calibration, spml.evaluation.calibrators) and then the thresholds are fitted on the validation split's image
predictions for every class, on its known labels or, when the split holds single positives (data.mask_val), on its
observed positives and the class priors (spml.evaluation.positive_unlabeled); calibration and operating points are
reported for the evaluated classes (eval.classes), per image even when AUROC/AP are scored per study.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from spml.evaluation.calibration import (
    RULES,
    TEMPERATURE_RANGE,
    choose_thresholds,
    operating_points,
    reliability,
)
from spml.evaluation.calibrators import METHODS, brier, describe, fit_calibrator
from spml.evaluation.heatmaps import HEATMAP_METHODS, gallery_figure, heatmaps
from spml.evaluation.localization import pointing_game, pointing_table
from spml.evaluation.positive_unlabeled import ClassPriors, choose_pu_thresholds, fit_pu_calibrator
from spml.evaluation.thresholds import THRESHOLDS_FILE, read_thresholds, save_thresholds
from spml.reporting.plots import plot_reliability
from spml.utils.io import write_json_atomic

ImagesFn = Callable[[np.ndarray], np.ndarray]  # split rows (k,) -> uint8 images (k, 1, S, S)
MasksFn = Callable[[np.ndarray], np.ndarray]  # split rows (k,) -> bool finding masks (k, C, S, S), C = all classes


@dataclass(frozen=True)
class Explainer:
    """What heatmaps of a split need: the classifier (float images in [0, 1] -> logits, eval mode), the layer
    Grad-CAM explains, the split's images by row, and its finding masks by row (None: no masks known).

    Attributes:
        model: the classifier (float images in [0, 1] -> logits, eval mode).
        layer: the layer Grad-CAM explains.
        images: split rows (k,) -> uint8 images (k, 1, S, S).
        masks: split rows (k,) -> bool finding masks (k, C, S, S), or None.
    """

    model: nn.Module
    layer: nn.Module
    images: ImagesFn
    masks: MasksFn | None = None


@dataclass(frozen=True)
class DiagnosticSettings:
    """Plain settings (the eval.* keys of the same names; see spml/config/schema.py).

    Attributes:
        threshold_rule: how each class's threshold is chosen (youden | sensitivity | f1).
        target_sensitivity: the sensitivity rule's target.
        calibration: the post-hoc calibration method.
        calibration_min_positives: known positives and negatives a class needs for its own calibration map.
        calibration_bins: bins of the reliability diagrams and the ECE.
        bootstrap: bootstrap resamples of the operating points' intervals.
        heatmaps: images per class in the heatmap gallery (0: none).
        heatmap_method: a HEATMAP_METHODS name.
        pointing_game: run the pointing game where finding masks are known.
        pointing_tolerance: pixels outside a region a heatmap maximum may lie and still hit.
    """

    threshold_rule: str = "youden"
    target_sensitivity: float = 0.9
    calibration: str = "platt"
    calibration_min_positives: int = 10
    calibration_bins: int = 10
    bootstrap: int = 0
    heatmaps: int = 0
    heatmap_method: str = "gradcam"
    pointing_game: bool = False
    pointing_tolerance: int = 0

    def check(self) -> DiagnosticSettings:
        """Fail on values no evaluation could use, naming the config key and the valid values (the choices are
        also checked by the config loader; these settings may come from plain code)."""
        for key, value, choices in (
            ("threshold_rule", self.threshold_rule, RULES),
            ("calibration", self.calibration, METHODS),
            ("heatmap_method", self.heatmap_method, HEATMAP_METHODS.names()),
        ):
            if value not in choices:
                raise ValueError(f"eval.{key}={value!r}; choose from {list(choices)}")
        if not 0 < self.target_sensitivity <= 1:
            raise ValueError(f"eval.target_sensitivity={self.target_sensitivity}: must lie in (0, 1]")
        for key, value, least in (
            ("calibration_bins", self.calibration_bins, 2),
            ("heatmaps", self.heatmaps, 0),
            ("calibration_min_positives", self.calibration_min_positives, 1),
            ("pointing_tolerance", self.pointing_tolerance, 0),
            ("bootstrap", self.bootstrap, 0),
        ):
            if value < least:
                raise ValueError(f"eval.{key}={value}: must be at least {least}")
        return self


def settings_from(eval_config, **overrides) -> DiagnosticSettings:
    """DiagnosticSettings from a config's `eval` section (keyword overrides win), checked.

    Args:
        eval_config: the config's `eval` section (spml.config.schema.EvalConfig).
        **overrides: settings that replace the config's.

    Returns:
        The checked DiagnosticSettings.
    """
    fields = {name: getattr(eval_config, name) for name in DiagnosticSettings.__dataclass_fields__}
    return DiagnosticSettings(**{**fields, **overrides}).check()


def fit_operating_points(
    val: dict[str, np.ndarray],
    classes: list[str],
    settings: DiagnosticSettings,
    path: str | Path,
    checkpoint: str,
    tta: tuple[str, ...] = (),
    split: str = "val",
    priors: ClassPriors | None = None,
) -> dict:
    """Fit the calibration (settings.calibration) and then the thresholds (settings.threshold_rule, on the
    calibrated probabilities) on a split's predictions {probs, targets, known (N, C)} for all `classes`, made by
    the weights of `checkpoint` (a checkpoint folder name) with the TTA views `tta`; write them to `path`
    (thresholds.json). With `priors` the split holds single positives (data.mask_val: its targets are the observed
    positives, nothing else is a label): both are fitted from the observed positives and the priors
    (spml.evaluation.positive_unlabeled) instead of reading unobserved entries as negatives. Returns the record as
    read_thresholds gives it.

    Args:
        val: the split's predictions {probs, targets, known (N, C)}.
        classes: the C class names.
        settings: the calibration and threshold settings.
        path: the thresholds.json written.
        checkpoint: the checkpoint folder name of the weights.
        tta: the TTA views of the predictions.
        split: the split's name, recorded as fitted_on.
        priors: the class priors of a single-positive split, or None.

    Returns:
        The record as read_thresholds gives it.
    """
    if priors is None:
        calibrator = fit_calibrator(
            val["probs"],
            val["targets"],
            val["known"],
            classes,
            settings.calibration,
            settings.calibration_min_positives,
        )
        calibrated = calibrator.apply(val["probs"])
        thresholds = choose_thresholds(
            calibrated, val["targets"], val["known"], settings.threshold_rule, settings.target_sensitivity
        )
    else:
        observed = (val["targets"] > 0.5) & val["known"]
        calibrator = fit_pu_calibrator(
            val["probs"], observed, priors.values, classes, settings.calibration, settings.calibration_min_positives
        )
        thresholds = choose_pu_thresholds(
            calibrator.apply(val["probs"]),
            observed,
            priors.values,
            settings.threshold_rule,
            settings.target_sensitivity,
        )
    save_thresholds(
        path,
        classes,
        thresholds,
        calibrator.to_json(),
        settings.threshold_rule,
        settings.target_sensitivity,
        checkpoint,
        split,
        tta,
        None if priors is None else priors.to_json(classes),
    )
    return read_thresholds(path, classes)


def write_calibration(
    test: dict[str, np.ndarray],
    classes: list[str],
    eval_classes: list[str],
    record: dict,
    settings: DiagnosticSettings,
    out_dir: str | Path,
    seed: int = 0,
) -> dict:
    """Calibration and operating points of a split's image predictions {probs, targets, known (N, C)} for
    `eval_classes` (a subset of `classes`, the columns) into out_dir: calibration.csv (ECE and Brier score per
    class of the raw and the calibrated probabilities, the map, the fallback), reliability.csv (the bins of both),
    reliability.png (both diagrams), operating_points.csv (sensitivity, specificity, PPV, F1 at the stored
    thresholds, on the calibrated probabilities, with bootstrap intervals; settings.bootstrap resamples).
    Returns summary numbers for metrics.json (macro ECE and Brier before and after, what the probabilities are,
    the rule, the number of classes with a threshold).

    Args:
        test: the split's image predictions {probs, targets, known (N, C)}.
        classes: all C class names (the columns).
        eval_classes: the classes evaluated (a subset of `classes`).
        record: the operating points (read_thresholds).
        settings: the diagnostic settings.
        out_dir: the evaluation folder.
        seed: the bootstrap seed.

    Returns:
        The summary numbers for metrics.json.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [classes.index(name) for name in eval_classes]
    probs, targets, known = (test[key][:, columns] for key in ("probs", "targets", "known"))
    calibrator, thresholds = record["calibrator"], record["threshold"][columns]
    calibrated = calibrator.apply(test["probs"])[:, columns]
    bins, ece = reliability(probs, targets, known, eval_classes, settings.calibration_bins)
    calibrated_bins, calibrated_ece = reliability(calibrated, targets, known, eval_classes, settings.calibration_bins)
    table = ece.rename(columns={"ece": "ece_raw"})
    table["ece_calibrated"] = calibrated_ece["ece"]
    table["brier_raw"], table["brier_calibrated"] = brier(probs, targets, known), brier(calibrated, targets, known)
    table["map"] = [calibrator.maps[c].kind for c in columns]
    table["fallback"] = [calibrator.fallback.get(name, "") for name in eval_classes]
    table.to_csv(out_dir / "calibration.csv", index=False)
    pd.concat([bins.assign(probabilities="raw"), calibrated_bins.assign(probabilities="calibrated")]).to_csv(
        out_dir / "reliability.csv", index=False
    )
    plot_reliability(
        bins,
        ece,
        out_dir / "reliability.png",
        (calibrated_bins, calibrated_ece),
        scaled_label=f"calibrated ({calibrator.method})",
    )
    points = operating_points(calibrated, targets, known, thresholds, eval_classes, settings.bootstrap, seed)
    points.to_csv(out_dir / "operating_points.csv", index=False)

    def macro(column: str) -> float:
        return float(np.nanmean(table[column])) if table[column].notna().any() else math.nan

    summary = {
        "ece": macro("ece_raw"),
        "ece_calibrated": macro("ece_calibrated"),
        "brier": macro("brier_raw"),
        "brier_calibrated": macro("brier_calibrated"),
        "calibration": calibrator.method,
        "calibration_fitted_on": calibrator.fitted_on,
        "calibration_fallback": sorted(calibrator.fallback),
        "probabilities": describe(calibrator),
        "threshold_rule": record["rule"],
        "classes_with_threshold": int(np.isfinite(thresholds).sum()),
    }
    if record.get("priors"):
        summary["class_priors"] = record["priors"]
    if calibrator.method in ("temperature", "global_temperature"):
        # a temperature at the end of its range: no temperature fits (e.g. every probability on one side of 0.5)
        temperatures = calibrator.temperatures[columns]
        summary["temperatures_at_bound"] = int(
            np.isclose(temperatures[:, None], TEMPERATURE_RANGE, rtol=1e-3).any(1).sum()
        )
    return summary


def _positive_pairs(predictions: dict[str, np.ndarray], columns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the predictions, class columns) of every known positive entry of `columns`."""
    positive = (predictions["targets"][:, columns] > 0.5) & predictions["known"][:, columns]
    rows, which = np.nonzero(positive)
    return rows, np.asarray(columns)[which]


def write_heatmap_gallery(
    model: nn.Module,
    layer: nn.Module,
    images: ImagesFn,
    predictions: dict[str, np.ndarray],
    classes: list[str],
    eval_classes: list[str],
    out_dir: str | Path,
    per_class: int,
    method: str = "gradcam",
    masks: MasksFn | None = None,
    thresholds: np.ndarray | None = None,
) -> list[Path]:
    """For each evaluated class, its first `per_class` known-positive images of the split (in split order, not
    chosen by score) with their heatmaps: out_dir/<class>.png. Titles give the row, the probability and the
    decision at the stored threshold (predictions: calibrated probabilities); with `masks`, the finding's region is
    outlined and the pointing location marked. predictions: predict_split output (index = split rows).

    Args:
        model: the classifier (float images in [0, 1] -> logits, eval mode).
        layer: the layer Grad-CAM explains.
        images: split rows -> uint8 images.
        predictions: predict_split output (index = split rows).
        classes: all C class names (the columns).
        eval_classes: the classes evaluated (a subset of `classes`).
        out_dir: the gallery folder.
        per_class: images per class.
        method: a HEATMAP_METHODS name.
        masks: split rows -> finding masks, or None.
        thresholds: (C,) the stored thresholds, or None.

    Returns:
        The PNG files.
    """
    out_dir = Path(out_dir)
    paths = []
    for name in tqdm(eval_classes, desc="heatmap gallery", unit="class", leave=False):
        c = classes.index(name)
        rows = np.flatnonzero((predictions["targets"][:, c] > 0.5) & predictions["known"][:, c])[:per_class]
        if not rows.size:
            continue
        split_rows = predictions["index"][rows]
        batch = images(split_rows)
        maps = heatmaps(model, layer, batch, np.full(len(rows), c), method)
        region = masks(split_rows)[:, c] if masks is not None else None
        game = pointing_game(maps, region) if region is not None else None
        titles = []
        for k, row in enumerate(rows):
            p = float(predictions["probs"][row, c])
            parts = [f"row {split_rows[k]}", f"p={p:.2f}"]
            if thresholds is not None and np.isfinite(thresholds[c]):
                parts.append("called" if p >= thresholds[c] else "missed")
            if game is not None:
                parts.append("hit" if game["hit"][k] else "miss")
            titles.append(" · ".join(parts))
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        paths.append(
            gallery_figure(
                batch[:, 0],
                maps,
                titles,
                out_dir / f"{safe}.png",
                f"{name}: {method} on known positives (white outline: the finding)"
                if region is not None
                else f"{name}: {method} on known positives",
                region,
                None if game is None else game["points"],
            )
        )
    return paths


def run_pointing_game(
    model: nn.Module,
    layer: nn.Module,
    images: ImagesFn,
    masks: MasksFn,
    predictions: dict[str, np.ndarray],
    classes: list[str],
    eval_classes: list[str],
    method: str = "gradcam",
    tolerance: int = 0,
    chunk: int = 128,
) -> pd.DataFrame:
    """Pointing game over every known-positive (image, class) entry of the split for `eval_classes`: the
    heatmap of `method` for that class against the finding's mask (spml.evaluation.localization). Returns
    pointing_table's rows plus `method` and `tolerance` columns.

    Args:
        model: the classifier (float images in [0, 1] -> logits, eval mode).
        layer: the layer Grad-CAM explains.
        images: split rows -> uint8 images.
        masks: split rows -> finding masks (k, C, S, S).
        predictions: predict_split output (index = split rows).
        classes: all C class names (the columns).
        eval_classes: the classes evaluated (a subset of `classes`).
        method: a HEATMAP_METHODS name.
        tolerance: pixels outside a region a maximum may lie and still hit.
        chunk: images (split rows) loaded at a time.

    Returns:
        The table, one row per class.
    """
    rows, columns = _positive_pairs(predictions, [classes.index(name) for name in eval_classes])
    hits: dict[int, list[dict[str, np.ndarray]]] = {c: [] for c in set(columns.tolist())}
    unique_rows = np.unique(rows)
    bar = tqdm(total=len(rows), desc=f"pointing game ({method})", unit="img", leave=False)
    for start in range(0, len(unique_rows), chunk):
        chunk_rows = unique_rows[start : start + chunk]
        split_rows = predictions["index"][chunk_rows]
        chunk_images, chunk_masks = images(split_rows), masks(split_rows)
        position = np.searchsorted(chunk_rows, rows[np.isin(rows, chunk_rows)])
        targets = columns[np.isin(rows, chunk_rows)]
        maps = heatmaps(model, layer, chunk_images[position], targets, method)
        result = pointing_game(maps, chunk_masks[position, targets], tolerance)
        for c in np.unique(targets):
            hits[int(c)].append({key: value[targets == c] for key, value in result.items()})
        bar.update(len(targets))
    bar.close()
    merged = {
        classes[c]: {key: np.concatenate([part[key] for part in hits[c]]) for key in hits[c][0]} for c in sorted(hits)
    }
    ordered = {name: merged[name] for name in eval_classes if name in merged}
    return pointing_table(ordered).assign(method=method, tolerance=tolerance)


def thresholds_path(run_dir: str | Path) -> Path:
    """Where a run keeps the operating points of its final weights.

    Args:
        run_dir: the run folder.

    Returns:
        run_dir / THRESHOLDS_FILE.
    """
    return Path(run_dir) / THRESHOLDS_FILE


def update_metrics(out_dir: str | Path, values: dict) -> None:
    """Add `values` to out_dir/metrics.json (NaN written as null).

    Args:
        out_dir: the evaluation folder.
        values: the entries added.
    """
    path = Path(out_dir) / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    metrics.update({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()})
    write_json_atomic(path, metrics)


def diagnose(
    out_dir: str | Path,
    predictions: dict[str, np.ndarray],
    classes: list[str],
    eval_classes: list[str],
    record: dict,
    settings: DiagnosticSettings,
    explainer: Explainer | None = None,
    seed: int = 0,
) -> dict:
    """Everything above for one evaluated split (predict_split output, image level) into out_dir: calibration
    and operating points, the heatmap gallery (out_dir/heatmaps/, settings.heatmaps per class) and, with
    finding masks and settings.pointing_game, pointing_game.csv. Adds the summary to out_dir/metrics.json and
    returns it.

    Args:
        out_dir: the evaluation folder.
        predictions: predict_split output (index = split rows).
        classes: all C class names (the columns).
        eval_classes: the classes evaluated (a subset of `classes`).
        record: the operating points (read_thresholds).
        settings: the diagnostic settings.
        explainer: heatmap inputs (None: no heatmaps, no pointing game).
        seed: the bootstrap seed.

    Returns:
        The summary.
    """
    summary = write_calibration(predictions, classes, eval_classes, record, settings, out_dir, seed)
    if explainer is not None and settings.heatmaps:
        calibrated = {**predictions, "probs": record["calibrator"].apply(predictions["probs"])}
        write_heatmap_gallery(
            explainer.model,
            explainer.layer,
            explainer.images,
            calibrated,
            classes,
            eval_classes,
            Path(out_dir) / "heatmaps",
            settings.heatmaps,
            settings.heatmap_method,
            explainer.masks,
            record["threshold"],
        )
    if explainer is not None and explainer.masks is not None and settings.pointing_game:
        table = run_pointing_game(
            explainer.model,
            explainer.layer,
            explainer.images,
            explainer.masks,
            predictions,
            classes,
            eval_classes,
            settings.heatmap_method,
            settings.pointing_tolerance,
        )
        table.to_csv(Path(out_dir) / "pointing_game.csv", index=False)
        summary["pointing_game"] = float(table["hit_rate"].mean()) if len(table) else math.nan
        summary["pointing_baseline"] = float(table["baseline"].mean()) if len(table) else math.nan
    update_metrics(out_dir, summary)
    return summary


def diagnosis_line(summary: dict, record: dict, path: str | Path) -> str:
    """One console line: thresholds, ECE and the pointing game of a diagnose() summary.

    Args:
        summary: diagnose()'s summary.
        record: the operating points.
        path: the thresholds file named in the line.

    Returns:
        The line.
    """
    fitted = int(np.isfinite(record["threshold"]).sum())
    line = (
        f"operating points: {record['rule']} thresholds for {fitted} of {len(record['classes'])} classes, fitted "
        f"on {record['fitted_on']} -> {path}; ECE {summary['ece']:.4f} raw, {summary['ece_calibrated']:.4f} "
        f"calibrated ({summary['probabilities']})"
    )
    if summary.get("temperatures_at_bound"):
        line += (
            f"; {summary['temperatures_at_bound']} temperatures at the end of their range: those probabilities "
            "have a bias that temperature scaling cannot remove (eval.calibration=platt can)"
        )
    if "pointing_game" in summary:
        line += (
            f"; pointing game {summary['pointing_game']:.3f} against {summary['pointing_baseline']:.3f} for a "
            "random point (mean over classes)"
        )
    return line
