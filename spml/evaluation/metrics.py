"""Evaluation metrics: per-class AUROC and AP over known labels (scikit-learn), macro means, percentile
bootstrap confidence intervals, study-level aggregation and pseudo-label quality (analysis only)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

# Resample-by-image weight matrices are built this many entries (resamples x images) at a time,
# so a large test set with many resamples stays within a few hundred MB.
_BOOTSTRAP_CHUNK_ENTRIES = 2_000_000


@dataclass
class EvalResult:
    """`summary`: JSON-ready macro numbers; `per_class`: one row per class (skipped classes have NaN metrics).

    Attributes:
        summary: JSON-ready macro numbers (skipped, classes_used, n_classes, ...).
        per_class: one row per class (skipped classes have NaN metrics).
    """

    summary: dict[str, Any]
    per_class: pd.DataFrame

    @property
    def skipped(self) -> dict[str, str]:
        """Class name -> why it has no AUROC/AP (it is left out of the macro means)."""
        return self.summary["skipped"]

    def coverage(self) -> str:
        """How many classes the macro means average, naming those left out: "12 of 14 classes scored (left
        out: Hernia: no positive among 80 known labels; ...)"."""
        text = f"{len(self.summary['classes_used'])} of {self.summary['n_classes']} classes scored"
        if self.skipped:
            text += " (left out: " + "; ".join(f"{name}: {why}" for name, why in self.skipped.items()) + ")"
        return text

    def to_json(self, indent: int = 2) -> str:
        """Summary and per-class rows as strict JSON (NaN written as null).

        Args:
            indent: JSON indentation.

        Returns:
            The JSON text.
        """
        records = json.loads(self.per_class.to_json(orient="records"))
        return json.dumps({"summary": _nan_to_none(self.summary), "per_class": records}, indent=indent, allow_nan=False)


def evaluate_predictions(
    scores: Any,
    targets: Any,
    known: Any | None,
    classes: list[str] | tuple[str, ...],
    bootstrap: int = 0,
    seed: int = 0,
    ci: float = 0.95,
) -> EvalResult:
    """Per-class AUROC/AP, macro mAP and mean AUROC, and (bootstrap > 0) percentile confidence intervals.

    Args:
        scores: (N, C) float (probabilities or logits).
        targets: (N, C) in {0, 1}.
        known: (N, C) bool or None (all known). Each class is scored over its known entries only.
        classes: the C names.
        bootstrap, seed, ci: resamples of the intervals, their seed and the interval's coverage.

    Returns:
        EvalResult: `per_class` (class, auroc, ap, n_pos, n_neg, skipped, intervals) and `summary` (mAP,
        mean_auroc, classes_used, skipped, ...). A class without both a positive and a negative known label is
        listed in `summary["skipped"]` with the reason and left out of the macro means.

    >>> result = evaluate_predictions([[0.9, 0.2], [0.1, 0.8], [0.7, 0.3]], [[1, 0], [0, 1], [1, 0]], None,
    ...                               ["Edema", "Mass"])
    >>> result.summary["mAP"], result.summary["mean_auroc"]
    (1.0, 1.0)

    Bootstrap: `bootstrap` resamples of the N images with replacement (numpy Generator seeded by `seed`),
    shared by all classes. A resample in which a class lacks a positive or a negative is skipped for that
    class only (its CI uses the remaining resamples, counted in `per_class["bootstrap_valid"]`); the macro
    CIs use the resamples in which every used class is scorable (`summary["bootstrap_valid"]`), so each
    bootstrap macro value averages exactly the classes of the point estimate.
    """
    scores, positive, known = _check_inputs(scores, targets, known, classes)
    rows, skipped = [], {}
    for c, name in enumerate(classes):
        y, s = positive[known[:, c], c], scores[known[:, c], c]
        n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
        reason = _skip_reason(n_pos, n_neg)
        if reason:
            skipped[name] = reason
        rows.append(
            {
                "class": name,
                "auroc": math.nan if reason else float(roc_auc_score(y, s)),
                "ap": math.nan if reason else float(average_precision_score(y, s)),
                "n_pos": n_pos,
                "n_neg": n_neg,
                "skipped": reason,
            }
        )
    per_class = pd.DataFrame(rows)
    used = ~per_class["skipped"].astype(bool).to_numpy()
    summary: dict[str, Any] = {
        "mAP": float(per_class["ap"][used].mean()) if used.any() else math.nan,
        "mean_auroc": float(per_class["auroc"][used].mean()) if used.any() else math.nan,
        "n_images": int(scores.shape[0]),
        "n_classes": len(classes),
        "classes_used": [name for name, keep in zip(classes, used) if keep],
        "skipped": skipped,
        "bootstrap": int(bootstrap),
    }
    for column in ("auroc_ci_low", "auroc_ci_high", "ap_ci_low", "ap_ci_high"):
        per_class[column] = math.nan
    per_class["bootstrap_valid"] = 0
    if bootstrap > 0:
        if not 0 < ci < 1:
            raise ValueError(f"ci must lie in (0, 1), got {ci}")
        boot_auroc, boot_ap = bootstrap_metrics(scores, positive, known, bootstrap, seed)
        low, high = (1 - ci) / 2, 1 - (1 - ci) / 2
        for metric, boot in (("auroc", boot_auroc), ("ap", boot_ap)):
            per_class[f"{metric}_ci_low"], per_class[f"{metric}_ci_high"] = _percentiles(boot, low, high)
        per_class["bootstrap_valid"] = np.isfinite(boot_ap).sum(0)
        complete = np.isfinite(boot_ap[:, used]).all(1) if used.any() else np.zeros(bootstrap, bool)
        summary.update(ci=ci, bootstrap_valid=int(complete.sum()))
        for key, boot in (("mAP", boot_ap), ("mean_auroc", boot_auroc)):
            macro = boot[complete][:, used].mean(1)
            bounds = np.quantile(macro, [low, high]) if macro.size else (math.nan, math.nan)
            summary[f"{key}_ci_low"], summary[f"{key}_ci_high"] = float(bounds[0]), float(bounds[1])
    columns = [
        "class",
        "auroc",
        "ap",
        "n_pos",
        "n_neg",
        "auroc_ci_low",
        "auroc_ci_high",
        "ap_ci_low",
        "ap_ci_high",
        "bootstrap_valid",
        "skipped",
    ]
    return EvalResult(summary, per_class[columns])


def bootstrap_metrics(
    scores: np.ndarray, positive: np.ndarray, known: np.ndarray, resamples: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AP of `resamples` image resamples (with replacement). scores (N, C) float, positive and
    known (N, C) bool -> (auroc, ap), each (resamples, C), NaN where a resample lacks a label of a class.

    A resample is a multiplicity per image, so each class is sorted once and every resample is a
    weighted AUROC/AP over that order (equal to sklearn's with `sample_weight` = multiplicities).

    Args:
        scores: predicted scores, float.
        positive: the positive entries, bool.
        known: the known entries, bool.
        resamples: bootstrap resamples R.
        seed: the resampling seed.

    Returns:
        (auroc, ap).

    Shape:
        scores, positive, known (N, C) -> auroc, ap (R, C).
    """
    n_images, n_classes = scores.shape
    orders, groups = [], []
    for c in range(n_classes):
        rows = np.flatnonzero(known[:, c])
        order = rows[np.argsort(-scores[rows, c], kind="stable")]
        orders.append(order)
        groups.append(_tie_group_starts(scores[order, c]))
    auroc = np.full((resamples, n_classes), math.nan)
    ap = np.full((resamples, n_classes), math.nan)
    for start, weights in resample_chunks(n_images, resamples, seed):
        for c in range(n_classes):
            if orders[c].size:
                auroc[start : start + len(weights), c], ap[start : start + len(weights), c] = weighted_auroc_ap(
                    weights[:, orders[c]], positive[orders[c], c], groups[c]
                )
    return auroc, ap


def resample_chunks(n: int, resamples: int, seed: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """The image resamples of a bootstrap, a few at a time: (first resample number, multiplicities (R', n)),
    R' rows of the multiplicity of each of n items in n draws with replacement (numpy Generator seeded by
    `seed`; the same seed gives the same resamples to every metric).

    Args:
        n: items per resample.
        resamples: resamples in all.
        seed: the generator's seed.

    Yields:
        (first resample number, multiplicities (R', n)).
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_ENTRIES // max(n, 1))
    for start in range(0, resamples, chunk):
        yield start, _resample_counts(n, min(chunk, resamples - start), rng)


def weighted_auroc_ap(
    weights: np.ndarray, positive: np.ndarray, group_starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted AUROC (ties count one half) and AP (sklearn's step-wise definition) for many weightings.

    weights (R, n) >= 0 per weighting and sample, with samples sorted by descending score; positive (n,)
    bool; group_starts (G,) first index of each run of tied scores -> auroc (R,), ap (R,); NaN for a
    weighting with no positive or no negative weight.

    Args:
        weights: weights (R, n) >= 0, samples sorted by descending score.
        positive: the positive samples (n,) bool.
        group_starts: first index (G,) of each run of tied scores.

    Returns:
        (auroc (R,), ap (R,)).
    """
    pos = np.add.reduceat(weights * positive, group_starts, axis=1).astype(np.float64)  # (R, G)
    neg = np.add.reduceat(weights * ~positive, group_starts, axis=1).astype(np.float64)
    true_pos, false_pos = np.cumsum(pos, 1), np.cumsum(neg, 1)
    total_pos, total_neg = true_pos[:, -1], false_pos[:, -1]
    valid = (total_pos > 0) & (total_neg > 0)
    # Each positive beats the negatives in lower-score groups and ties half of those in its own group.
    wins = (pos * (total_neg[:, None] - false_pos + 0.5 * neg)).sum(1)
    # Thresholds at each distinct score: precision there, weighted by the recall gained (pos / total_pos).
    precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(np.float64).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = np.where(valid, wins / (total_pos * total_neg), math.nan)
        ap = np.where(valid, (pos * precision).sum(1) / total_pos, math.nan)
    return auroc, ap


def pseudo_label_quality(pseudo_positive: Any, targets: Any, observed: Any, known: Any | None = None) -> dict[str, Any]:
    """Precision and recall of pseudo-positives against the hidden truth, for analysis only.

    pseudo_positive, observed (N, C) bool, targets (N, C) {0, 1}, known (N, C) bool or None. Observed
    positives are excluded (they are given, not recovered), as are entries whose truth is unknown. The
    hidden truth is read here, on the evaluator side; nothing computed here is ever fed back to training.
    Returns micro precision/recall, the counts behind them and per-class lists (NaN where undefined).

    Args:
        pseudo_positive: the pseudo-positives (N, C) bool.
        targets: the hidden truth (N, C) {0, 1}.
        observed: the observed positives (N, C) bool.
        known: the entries whose truth is known (N, C) bool, or None (all).

    Returns:
        precision, recall, n_pseudo_positive, n_hidden_positive, n_true_positive, per_class_precision,
        per_class_recall.
    """
    pseudo_positive = np.asarray(pseudo_positive, dtype=bool)
    observed = np.asarray(observed, dtype=bool)
    hidden = np.asarray(targets) > 0.5
    candidate = ~observed if known is None else ~observed & np.asarray(known, dtype=bool)
    if not pseudo_positive.shape == observed.shape == hidden.shape == candidate.shape:
        raise ValueError(
            f"pseudo_positive {pseudo_positive.shape}, targets {hidden.shape}, observed "
            f"{observed.shape} and known {candidate.shape} must have one (N, C) shape"
        )
    predicted = (pseudo_positive & candidate).sum(0)
    hidden_positive = (hidden & candidate).sum(0)
    true_positive = (pseudo_positive & hidden & candidate).sum(0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), math.nan)

    return {
        "precision": float(ratio(true_positive.sum(), predicted.sum())),
        "recall": float(ratio(true_positive.sum(), hidden_positive.sum())),
        "n_pseudo_positive": int(predicted.sum()),
        "n_hidden_positive": int(hidden_positive.sum()),
        "n_true_positive": int(true_positive.sum()),
        "per_class_precision": ratio(true_positive, predicted).tolist(),
        "per_class_recall": ratio(true_positive, hidden_positive).tolist(),
    }


def study_level(
    scores: Any, targets: Any, known: Any | None, study_ids: Any, reduce: Literal["max", "mean"] = "max"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate the views of each study. scores, targets (N, C), known (N, C) bool or None, study_ids (N,)
    -> (scores, targets, known), each (S, C) with studies in order of first appearance
    (`pd.unique(study_ids)`). Scores: max or mean over views; targets: max over the views where known;
    known: any view known.

    Args:
        scores: per-image scores (N, C).
        targets: per-image labels (N, C).
        known: the known entries (N, C) bool, or None.
        study_ids: the study of each image (N,).
        reduce: max or mean over a study's views.

    Returns:
        (scores, targets, known), each (S, C).
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    known = np.ones(scores.shape, bool) if known is None else np.asarray(known, dtype=bool)
    keys = pd.Series(np.asarray(study_ids))
    if not scores.shape == targets.shape == known.shape or scores.ndim != 2 or len(keys) != len(scores):
        raise ValueError(
            f"scores {scores.shape}, targets {targets.shape}, known {known.shape} must be one "
            f"(N, C) shape and study_ids ({len(keys)},) must match N"
        )
    missing = keys.isna() | (keys.astype(str) == "")
    if missing.any():
        raise ValueError(
            f"study_ids: {int(missing.sum())} rows have no study id (first: row "
            f"{int(np.flatnonzero(missing)[0])}); study-level scoring needs one for every image"
        )

    def grouped(values: np.ndarray):
        return pd.DataFrame(values).groupby(keys.to_numpy(), sort=False)

    return (
        grouped(scores).agg(reduce).to_numpy(),
        grouped(np.where(known, targets, 0.0)).max().to_numpy(),
        grouped(known).any().to_numpy(),
    )


def _check_inputs(
    scores: Any, targets: Any, known: Any | None, classes: list[str] | tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays as float64 scores, bool positives, bool known; errors name the row and class."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    known = np.ones(scores.shape, bool) if known is None else np.asarray(known, dtype=bool)
    if scores.ndim != 2 or not scores.shape == targets.shape == known.shape:
        raise ValueError(
            f"scores {scores.shape}, targets {targets.shape} and known {known.shape} must share one (N, C) shape"
        )
    if len(classes) != scores.shape[1]:
        raise ValueError(f"{len(classes)} class names for {scores.shape[1]} score columns")
    for name, bad in (
        ("score is not finite", ~np.isfinite(scores)),
        ("target is not 0 or 1", ~np.isin(targets, (0.0, 1.0))),
    ):
        rows, cols = np.nonzero(bad & known)
        if rows.size:
            raise ValueError(
                f"{rows.size} known entries where the {name}; first at row {rows[0]}, class {classes[cols[0]]!r}"
            )
    return scores, targets > 0.5, known


def _skip_reason(n_pos: int, n_neg: int) -> str:
    if n_pos == 0 and n_neg == 0:
        return "no known labels"
    if n_pos == 0:
        return f"no positive among {n_neg} known labels"
    if n_neg == 0:
        return f"no negative among {n_pos} known labels"
    return ""


def _tie_group_starts(sorted_scores: np.ndarray) -> np.ndarray:
    """Index where each run of equal values starts in a sorted vector (empty vector -> [0])."""
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def _resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) multiplicity of each item in `resamples` draws of n items with replacement."""
    draws = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n)


def _percentiles(boot: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-column percentile bounds over the finite rows of boot (R, C); NaN for a column with none."""
    bounds = np.full((2, boot.shape[1]), math.nan)
    for c in range(boot.shape[1]):
        values = boot[np.isfinite(boot[:, c]), c]
        if values.size:
            bounds[:, c] = np.quantile(values, [low, high])
    return bounds[0], bounds[1]


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return value
