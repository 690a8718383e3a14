"""Calibration and operating points on numpy probabilities: reliability bins and expected calibration error,
temperature scaling, per-class decision thresholds and the metrics at them with bootstrap intervals.

All functions take probabilities (N, C), targets (N, C) in {0, 1} and known (N, C) bool (None: all known)
and use each class's known entries only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.metrics import precision_recall_curve, roc_curve

from spml.evaluation.metrics import resample_chunks

RULES = ("youden", "sensitivity", "f1")  # eval.threshold_rule
TEMPERATURES = ("none", "per_class", "global")  # fit_temperature modes
PROB_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before they become logits
TEMPERATURE_RANGE = (0.05, 20.0)  # a fitted temperature stays inside this range


def _arrays(probs: Any, targets: Any, known: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    positive = np.asarray(targets) > 0.5
    known = np.ones(probs.shape, bool) if known is None else np.asarray(known, dtype=bool)
    if probs.ndim != 2 or not probs.shape == positive.shape == known.shape:
        raise ValueError(
            f"probs {probs.shape}, targets {positive.shape} and known {known.shape} must share one (N, C) shape"
        )
    return probs, positive, known


def to_logits(probs: Any) -> np.ndarray:
    """log(p / (1 - p)) in float64, p clipped to [PROB_EPS, 1 - PROB_EPS] (float32 sigmoids saturate).

    Args:
        probs: probabilities.

    Returns:
        The logits, float64.

    Shape:
        probs (...) -> logits (...), same shape.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), PROB_EPS, 1 - PROB_EPS)
    return np.log(p) - np.log1p(-p)


def reliability(
    probs: Any, targets: Any, known: Any | None, classes: list[str], bins: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reliability bins and expected calibration error (ECE) per class.

    Bins are `bins` equal-width probability intervals [k/bins, (k+1)/bins), the last one closed at 1. Per
    class over its known entries: ECE = sum over bins of (entries in the bin / entries) * |observed positive
    rate - mean probability|. A class without known entries has ECE NaN.

    Args:
        probs: predicted probabilities.
        targets: labels (> 0.5: positive).
        known: which entries are known (None: all).
        classes: the C class names.
        bins: equal-width probability bins.

    Shape:
        probs, targets, known: (N, C).

    Returns:
        (bins table: class, bin, low, high, count, confidence (mean probability), frequency (positive rate),
         per class: class, ece, n).
    """
    probs, positive, known = _arrays(probs, targets, known)
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows, per_class = [], []
    for c, name in enumerate(classes):
        p, y = probs[known[:, c], c], positive[known[:, c], c]
        which = np.clip(np.floor(p * bins).astype(np.int64), 0, bins - 1)
        ece = 0.0
        for b in range(bins):
            inside = which == b
            count = int(inside.sum())
            confidence = float(p[inside].mean()) if count else math.nan
            frequency = float(y[inside].mean()) if count else math.nan
            if count:
                ece += count / len(p) * abs(frequency - confidence)
            rows.append(
                {
                    "class": name,
                    "bin": b,
                    "low": edges[b],
                    "high": edges[b + 1],
                    "count": count,
                    "confidence": confidence,
                    "frequency": frequency,
                }
            )
        per_class.append({"class": name, "ece": ece if len(p) else math.nan, "n": len(p)})
    return pd.DataFrame(rows), pd.DataFrame(per_class)


def _nll(scale: float, logits: np.ndarray, positive: np.ndarray) -> float:
    z = logits * scale
    return float(np.mean(np.logaddexp(0.0, z) - positive * z))  # binary cross-entropy, stable


def fit_temperature(probs: Any, targets: Any, known: Any | None, mode: str = "per_class") -> np.ndarray:
    """Temperatures T (C,) minimising the negative log-likelihood of sigmoid(logit(p) / T) on known entries.

    mode: "per_class" fits one T per class (classes differ in how a single-positive loss distorts them),
    "global" one T shared by all classes, "none" returns ones. The NLL is convex in 1 / T; it is minimised
    by bounded Brent search (scipy) with T inside TEMPERATURE_RANGE. A class without both a known positive
    and a known negative keeps T = 1 (its NLL has no finite minimum).

    Args:
        probs: predicted probabilities.
        targets: labels (> 0.5: positive).
        known: which entries are known (None: all).
        mode: "per_class", "global" or "none" (above).

    Returns:
        The temperatures T.

    Shape:
        probs, targets, known: (N, C).
        T: (C,).
    """
    if mode not in TEMPERATURES:
        raise ValueError(f"temperature mode {mode!r}; choose from {list(TEMPERATURES)}")
    probs, positive, known = _arrays(probs, targets, known)
    logits = to_logits(probs)
    temperatures = np.ones(probs.shape[1])
    scorable = [c for c in range(probs.shape[1]) if 0 < positive[known[:, c], c].sum() < known[:, c].sum()]
    bounds = (1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0])

    def fit(z: np.ndarray, y: np.ndarray) -> float:
        return 1.0 / minimize_scalar(_nll, bounds=bounds, args=(z, y), method="bounded", options={"xatol": 1e-6}).x

    if mode == "per_class":
        for c in scorable:
            temperatures[c] = fit(logits[known[:, c], c], positive[known[:, c], c])
    elif mode == "global" and scorable:
        mask = known[:, scorable]
        temperatures[scorable] = fit(logits[:, scorable][mask], positive[:, scorable][mask])
    return temperatures


def apply_temperature(probs: Any, temperatures: Any) -> np.ndarray:
    """sigmoid(logit(p) / T) per class: probs (N, C), temperatures (C,) -> float64 (N, C).

    Args:
        probs: predicted probabilities.
        temperatures: the temperatures T.

    Returns:
        The calibrated probabilities, float64.

    Shape:
        probs (N, C), temperatures (C,) -> (N, C).
    """
    return 1.0 / (1.0 + np.exp(-to_logits(probs) / np.asarray(temperatures, dtype=np.float64)))


def choose_thresholds(
    probs: Any, targets: Any, known: Any | None, rule: str = "youden", target_sensitivity: float = 0.9
) -> np.ndarray:
    """Per-class decision thresholds (C,): a finding is called present when its probability >= threshold.

    Candidates are the class's distinct known probabilities. Rules:
      youden       the threshold maximising sensitivity + specificity - 1 (Youden's J);
      sensitivity  the highest threshold whose sensitivity is at least `target_sensitivity`;
      f1           the threshold maximising F1 (ties: the highest threshold).
    NaN for a class without both a known positive and a known negative.

    Args:
        probs: predicted probabilities.
        targets: labels (> 0.5: positive).
        known: which entries are known (None: all).
        rule: youden, sensitivity or f1 (above).
        target_sensitivity: the sensitivity the `sensitivity` rule reaches.

    Returns:
        The thresholds.

    Shape:
        probs, targets, known: (N, C).
        thresholds: (C,).
    """
    if rule not in RULES:
        raise ValueError(f"eval.threshold_rule={rule!r}; choose from {list(RULES)}")
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"eval.target_sensitivity={target_sensitivity}: must lie in (0, 1]")
    probs, positive, known = _arrays(probs, targets, known)
    thresholds = np.full(probs.shape[1], math.nan)
    for c in range(probs.shape[1]):
        y, p = positive[known[:, c], c], probs[known[:, c], c]
        if not 0 < y.sum() < y.size:
            continue
        if rule == "f1":
            precision, recall, candidates = precision_recall_curve(y, p)
            with np.errstate(divide="ignore", invalid="ignore"):
                f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
            best = np.flatnonzero(f1 == f1.max())[-1]  # candidates ascend: the last best is the highest
            thresholds[c] = candidates[best]
            continue
        fpr, tpr, candidates = roc_curve(y, p, drop_intermediate=False)
        fpr, tpr, candidates = fpr[1:], tpr[1:], candidates[1:]  # the first candidate is +inf (nothing called)
        if rule == "youden":
            thresholds[c] = candidates[int(np.argmax(tpr - fpr))]  # candidates descend: first best is highest
        else:
            thresholds[c] = candidates[int(np.argmax(tpr >= target_sensitivity - 1e-12))]
    return thresholds


def _confusion(weights: np.ndarray, called: np.ndarray, positive: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted confusion counts: weights (R, n), called and positive (n,) bool -> tp, fp, tn, fn each (R,)."""
    return {
        "tp": weights @ (called & positive),
        "fp": weights @ (called & ~positive),
        "tn": weights @ (~called & ~positive),
        "fn": weights @ (~called & positive),
    }


def _rates(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tp, fp, tn, fn = (counts[k].astype(np.float64) for k in ("tp", "fp", "tn", "fn"))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }


OPERATING_METRICS = ("sensitivity", "specificity", "ppv", "f1")


def operating_points(
    probs: Any,
    targets: Any,
    known: Any | None,
    thresholds: Any,
    classes: list[str],
    bootstrap: int = 0,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Sensitivity, specificity, PPV and F1 per class at its threshold, with percentile bootstrap intervals.

    The resamples are spml.evaluation.metrics' (resample_chunks: images with replacement, shared by all classes); a
    metric undefined in a resample (no positive, no call) is left out of that class's interval. A class
    without a threshold (NaN) gets NaN metrics.

    Returns one row per class: class, threshold, tp, fp, tn, fn, the four metrics and <metric>_ci_low/_high.

    Args:
        probs: predicted probabilities.
        targets: labels (> 0.5: positive).
        known: which entries are known (None: all).
        thresholds: per-class thresholds (NaN: none).
        classes: the C class names.
        bootstrap: bootstrap resamples (0: no intervals).
        seed: the resampling seed.
        ci: the intervals' confidence level.

    Returns:
        The table (above).

    Shape:
        probs, targets, known: (N, C).
        thresholds: (C,).
    """
    probs, positive, known = _arrays(probs, targets, known)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n_images, n_classes = probs.shape
    called = probs >= np.where(np.isnan(thresholds), np.inf, thresholds)
    ones = np.ones((1, n_images), np.int64)
    rows = []
    boot = {name: np.full((bootstrap, n_classes), math.nan) for name in OPERATING_METRICS}
    for c, name in enumerate(classes):
        counts = {k: int(v[0]) for k, v in _confusion(ones * known[:, c], called[:, c], positive[:, c]).items()}
        point = _rates({k: np.array([v]) for k, v in counts.items()})
        defined = not math.isnan(thresholds[c])
        rows.append(
            {
                "class": name,
                "threshold": thresholds[c],
                **counts,
                **{k: float(v[0]) if defined else math.nan for k, v in point.items()},
            }
        )
    if bootstrap > 0:
        for start, weights in resample_chunks(n_images, bootstrap, seed):
            for c in range(n_classes):
                if not math.isnan(thresholds[c]):
                    rates = _rates(_confusion(weights * known[:, c], called[:, c], positive[:, c]))
                    for key, values in rates.items():
                        boot[key][start : start + len(weights), c] = values
    table = pd.DataFrame(rows)
    low, high = (1 - ci) / 2, 1 - (1 - ci) / 2
    for key in OPERATING_METRICS:
        bounds = np.full((2, n_classes), math.nan)
        for c in range(n_classes):
            values = boot[key][:, c][np.isfinite(boot[key][:, c])]
            if values.size:
                bounds[:, c] = np.quantile(values, [low, high])
        table[f"{key}_ci_low"], table[f"{key}_ci_high"] = bounds[0], bounds[1]
    return table
