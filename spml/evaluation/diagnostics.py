"""What an evaluation adds to AUROC/AP: operating thresholds chosen on the validation split (stored with the
run), calibration on the test split, the heatmap gallery and, where the images come with finding masks (the
synthetic set), the pointing game. Called by the end of training and by tools/evaluate.py.

Everything here is per image and on the probabilities `tools/predict.py` writes: thresholds and temperatures
are fitted on the validation split's image predictions for every class; calibration and operating points are
reported for the evaluated classes (eval.classes), per image even when AUROC/AP are scored per study.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from spml.evaluation.calibration import (RULES, TEMPERATURE_RANGE, TEMPERATURES, THRESHOLDS_FILE, apply_temperature,
                              choose_thresholds, fit_temperature, operating_points, read_thresholds, reliability,
                              save_thresholds)
from spml.evaluation.heatmaps import HEATMAP_METHODS, gallery_figure, heatmaps
from spml.utils.io import write_json_atomic
from spml.evaluation.localization import pointing_game, pointing_table
from spml.reporting.plots import plot_reliability

ImagesFn = Callable[[np.ndarray], np.ndarray]  # split rows (k,) -> uint8 images (k, 1, S, S)
MasksFn = Callable[[np.ndarray], np.ndarray]  # split rows (k,) -> bool finding masks (k, C, S, S), C = all classes


@dataclass(frozen=True)
class Explainer:
    """What heatmaps of a split need: the classifier (float images in [0, 1] -> logits, eval mode), the layer
    Grad-CAM explains, the split's images by row, and its finding masks by row (None: no masks known)."""

    model: nn.Module
    layer: nn.Module
    images: ImagesFn
    masks: MasksFn | None = None


@dataclass(frozen=True)
class DiagnosticSettings:
    """Plain settings (the eval.* keys of the same names; see spml/config/schema.py)."""

    threshold_rule: str = "youden"
    target_sensitivity: float = 0.9
    temperature: str = "none"
    calibration_bins: int = 10
    bootstrap: int = 0
    heatmaps: int = 0
    heatmap_method: str = "gradcam"
    pointing_game: bool = False
    pointing_tolerance: int = 0

    def check(self) -> "DiagnosticSettings":
        """Fail on values no evaluation could use, naming the config key and the valid values (the choices are
        also checked by the config loader; these settings may come from plain code)."""
        for key, value, choices in (("threshold_rule", self.threshold_rule, RULES),
                                    ("temperature", self.temperature, TEMPERATURES),
                                    ("heatmap_method", self.heatmap_method, HEATMAP_METHODS.names())):
            if value not in choices:
                raise ValueError(f"eval.{key}={value!r}; choose from {list(choices)}")
        if not 0 < self.target_sensitivity <= 1:
            raise ValueError(f"eval.target_sensitivity={self.target_sensitivity}: must lie in (0, 1]")
        for key, value, least in (("calibration_bins", self.calibration_bins, 2), ("heatmaps", self.heatmaps, 0),
                                  ("pointing_tolerance", self.pointing_tolerance, 0), ("bootstrap", self.bootstrap, 0)):
            if value < least:
                raise ValueError(f"eval.{key}={value}: must be at least {least}")
        return self


def settings_from(eval_config, **overrides) -> DiagnosticSettings:
    """DiagnosticSettings from a config's `eval` section (keyword overrides win), checked."""
    fields = {name: getattr(eval_config, name) for name in DiagnosticSettings.__dataclass_fields__}
    return DiagnosticSettings(**{**fields, **overrides}).check()


def fit_operating_points(val: dict[str, np.ndarray], classes: list[str], settings: DiagnosticSettings,
                         path: str | Path, checkpoint: str, tta: tuple[str, ...] = (), split: str = "val") -> dict:
    """Fit temperatures (settings.temperature) and then thresholds (settings.threshold_rule) on a split's
    predictions {probs, targets, known (N, C)} for all `classes`, made by the weights of `checkpoint` (a
    checkpoint folder name) with the TTA views `tta`; write them to `path` (thresholds.json). Returns the
    record as read_thresholds gives it."""
    temperatures = fit_temperature(val["probs"], val["targets"], val["known"], settings.temperature)
    scaled = apply_temperature(val["probs"], temperatures)
    thresholds = choose_thresholds(scaled, val["targets"], val["known"], settings.threshold_rule,
                                   settings.target_sensitivity)
    save_thresholds(path, classes, thresholds, temperatures, settings.threshold_rule, settings.target_sensitivity,
                    settings.temperature, checkpoint, split, tta)
    return read_thresholds(path, classes)


def write_calibration(test: dict[str, np.ndarray], classes: list[str], eval_classes: list[str], record: dict,
                      settings: DiagnosticSettings, out_dir: str | Path, seed: int = 0) -> dict:
    """Calibration and operating points of a split's image predictions {probs, targets, known (N, C)} for
    `eval_classes` (a subset of `classes`, the columns) into out_dir: calibration.csv (ECE per class, raw and
    temperature-scaled), reliability.csv (the bins), reliability.png, operating_points.csv (sensitivity,
    specificity, PPV, F1 at the stored thresholds with bootstrap intervals; settings.bootstrap resamples).
    Returns summary numbers for metrics.json (macro ECE, the rule, the number of classes with a threshold)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [classes.index(name) for name in eval_classes]
    probs, targets, known = (test[key][:, columns] for key in ("probs", "targets", "known"))
    temperatures, thresholds = record["temperature"][columns], record["threshold"][columns]
    scaled = apply_temperature(probs, temperatures)
    bins, ece = reliability(probs, targets, known, eval_classes, settings.calibration_bins)
    table = ece.rename(columns={"ece": "ece_raw"})
    all_bins = bins.assign(probabilities="raw")
    scaled_tables = None
    if settings.temperature != "none":
        scaled_tables = reliability(scaled, targets, known, eval_classes, settings.calibration_bins)
        table["ece_scaled"] = scaled_tables[1]["ece"]
        all_bins = pd.concat([all_bins, scaled_tables[0].assign(probabilities="scaled")])
    table["temperature"] = temperatures
    table.to_csv(out_dir / "calibration.csv", index=False)
    all_bins.to_csv(out_dir / "reliability.csv", index=False)
    plot_reliability(bins, ece, out_dir / "reliability.png", scaled_tables)
    points = operating_points(scaled, targets, known, thresholds, eval_classes, settings.bootstrap, seed)
    points.to_csv(out_dir / "operating_points.csv", index=False)
    summary = {"ece": float(np.nanmean(table["ece_raw"])) if table["ece_raw"].notna().any() else math.nan,
               "threshold_rule": record["rule"], "temperature": record["temperature_mode"],
               "classes_with_threshold": int(np.isfinite(thresholds).sum())}
    if scaled_tables:
        summary["ece_scaled"] = float(np.nanmean(table["ece_scaled"]))
        # a temperature at the end of its range: no temperature fits (e.g. every probability on one side of 0.5)
        summary["temperatures_at_bound"] = int(np.isclose(temperatures[:, None], TEMPERATURE_RANGE, rtol=1e-3)
                                               .any(1).sum())
    return summary


def _positive_pairs(predictions: dict[str, np.ndarray], columns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the predictions, class columns) of every known positive entry of `columns`."""
    positive = (predictions["targets"][:, columns] > 0.5) & predictions["known"][:, columns]
    rows, which = np.nonzero(positive)
    return rows, np.asarray(columns)[which]


def write_heatmap_gallery(model: nn.Module, layer: nn.Module, images: ImagesFn, predictions: dict[str, np.ndarray],
                          classes: list[str], eval_classes: list[str], out_dir: str | Path, per_class: int,
                          method: str = "gradcam", masks: MasksFn | None = None,
                          thresholds: np.ndarray | None = None) -> list[Path]:
    """For each evaluated class, its first `per_class` known-positive images of the split (in split order, not
    chosen by score) with their heatmaps: out_dir/<class>.png. Titles give the row, the probability and the
    decision at the stored threshold; with `masks`, the finding's region is outlined and the pointing
    location marked. predictions: predict_split output (index = split rows)."""
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
        paths.append(gallery_figure(batch[:, 0], maps, titles, out_dir / f"{safe}.png",
                                    f"{name}: {method} on known positives (white outline: the finding)"
                                    if region is not None else f"{name}: {method} on known positives",
                                    region, None if game is None else game["points"]))
    return paths


def run_pointing_game(model: nn.Module, layer: nn.Module, images: ImagesFn, masks: MasksFn,
                      predictions: dict[str, np.ndarray], classes: list[str], eval_classes: list[str],
                      method: str = "gradcam", tolerance: int = 0, chunk: int = 128) -> pd.DataFrame:
    """Pointing game over every known-positive (image, class) entry of the split for `eval_classes`: the
    heatmap of `method` for that class against the finding's mask (spml.evaluation.localization). Returns
    pointing_table's rows plus `method` and `tolerance` columns."""
    rows, columns = _positive_pairs(predictions, [classes.index(name) for name in eval_classes])
    hits: dict[int, list[dict[str, np.ndarray]]] = {c: [] for c in set(columns.tolist())}
    unique_rows = np.unique(rows)
    bar = tqdm(total=len(rows), desc=f"pointing game ({method})", unit="img", leave=False)
    for start in range(0, len(unique_rows), chunk):
        chunk_rows = unique_rows[start:start + chunk]
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
    merged = {classes[c]: {key: np.concatenate([part[key] for part in hits[c]]) for key in hits[c][0]}
              for c in sorted(hits)}
    ordered = {name: merged[name] for name in eval_classes if name in merged}
    return pointing_table(ordered).assign(method=method, tolerance=tolerance)


def thresholds_path(run_dir: str | Path) -> Path:
    """Where a run keeps the operating points of its final weights."""
    return Path(run_dir) / THRESHOLDS_FILE


def update_metrics(out_dir: str | Path, values: dict) -> None:
    """Add `values` to out_dir/metrics.json (NaN written as null)."""
    path = Path(out_dir) / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    metrics.update({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()})
    write_json_atomic(path, metrics)


def diagnose(out_dir: str | Path, predictions: dict[str, np.ndarray], classes: list[str], eval_classes: list[str],
             record: dict, settings: DiagnosticSettings, explainer: Explainer | None = None, seed: int = 0) -> dict:
    """Everything above for one evaluated split (predict_split output, image level) into out_dir: calibration
    and operating points, the heatmap gallery (out_dir/heatmaps/, settings.heatmaps per class) and, with
    finding masks and settings.pointing_game, pointing_game.csv. Adds the summary to out_dir/metrics.json and
    returns it."""
    summary = write_calibration(predictions, classes, eval_classes, record, settings, out_dir, seed)
    if explainer is not None and settings.heatmaps:
        write_heatmap_gallery(explainer.model, explainer.layer, explainer.images, predictions, classes, eval_classes,
                              Path(out_dir) / "heatmaps", settings.heatmaps, settings.heatmap_method,
                              explainer.masks, record["threshold"])
    if explainer is not None and explainer.masks is not None and settings.pointing_game:
        table = run_pointing_game(explainer.model, explainer.layer, explainer.images, explainer.masks, predictions,
                                  classes, eval_classes, settings.heatmap_method, settings.pointing_tolerance)
        table.to_csv(Path(out_dir) / "pointing_game.csv", index=False)
        summary["pointing_game"] = float(table["hit_rate"].mean()) if len(table) else math.nan
        summary["pointing_baseline"] = float(table["baseline"].mean()) if len(table) else math.nan
    update_metrics(out_dir, summary)
    return summary


def diagnosis_line(summary: dict, record: dict, path: str | Path) -> str:
    """One console line: thresholds, ECE and the pointing game of a diagnose() summary."""
    fitted = int(np.isfinite(record["threshold"]).sum())
    line = (f"operating points: {record['rule']} thresholds for {fitted} of {len(record['classes'])} classes, fitted "
            f"on {record['fitted_on']} -> {path}; ECE {summary['ece']:.4f}")
    if "ece_scaled" in summary:
        line += f" ({summary['ece_scaled']:.4f} after {record['temperature_mode']} temperature scaling)"
    if summary.get("temperatures_at_bound"):
        line += (f"; {summary['temperatures_at_bound']} temperatures at the end of their range: those probabilities "
                 "have a bias that temperature scaling cannot remove, decide by the thresholds")
    if "pointing_game" in summary:
        line += (f"; pointing game {summary['pointing_game']:.3f} against {summary['pointing_baseline']:.3f} for a "
                 "random point (mean over classes)")
    return line
