"""Calibration and operating points from a single-positive validation split (data.mask_val=true) and class priors,
instead of reading every unobserved entry as a negative.

A single-positive split tells, per class, which entries are observed positives (s = 1); every other entry is
unlabelled: a hidden positive or a negative. With the class's prior pi (its prevalence: data.class_priors, or
estimated by `estimate_priors`), the positive-unlabelled (PU) reading of Elkan & Noto (KDD 2008) applies:

* label frequency c = P(s = 1 | y = 1) = (observed positives) / (pi * entries), per class;
* assumption (SCAR, "selected completely at random"): within a class, whether a positive is observed does not
  depend on the image, so P(s = 1 | x) = c * P(y = 1 | x). A calibrated P(y = 1 | x) is then fitted by maximising
  the likelihood of the observed labels under c * map(x) (Platt: map = sigmoid(a logit(p) + b), temperature:
  sigmoid(logit(p) / T)); the isotonic fit of s on p is divided by c (Elkan & Noto's estimator), capped at 1;
* rates at a threshold t: the observed positives are a random sample of the positives, so their share above t is
  the sensitivity (TPR); the share of all entries above t is pi TPR + (1 - pi) FPR, which gives the false positive
  rate and the precision pi TPR / P(called) (e.g. Jain, White & Radivojac 2017, "Recovering true classifier
  performance in positive-unlabeled learning"). Thresholds follow eval.threshold_rule on these rates.

Uniform single-positive masking (data.mask_scheme=single_positive) observes one of an image's k findings at random:
a positive of an image with k findings is observed with probability 1/k, so SCAR holds to the extent that k does
not vary with the class's score. Biased masking (frequent_first, rare_first, priority) breaks SCAR: a class that is
observed only when no more frequent finding is present has its observed positives drawn from images with fewer
findings; the estimated priors are biased too (see estimate_priors). docs/explainability.md gives the measured
effect.

Everything here reads only the observed positives of the split, the priors and the model's probabilities: the
hidden labels of the split are not an argument of any function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from spml.evaluation.calibration import RULES, TEMPERATURE_RANGE, to_logits
from spml.evaluation.calibrators import IDENTITY, Calibrator, ClassMap, check_method, fit_isotonic, sigmoid

PU_FITTED_ON = "val split's observed positives and class priors (positive-unlabelled)"


@dataclass(frozen=True)
class ClassPriors:
    """Class prevalences for the PU procedures: values (C,), source {class: "given" | "estimated"} and how the
    estimated ones were made (in words).

    Attributes:
        values: the priors (C,).
        source: {class: "given" | "estimated"}.
        how: how the estimated ones were made, in words.
    """

    values: np.ndarray
    source: dict[str, str]
    how: str

    def to_json(self, classes: Sequence[str]) -> dict[str, Any]:
        """The priors as a JSON record.

        Args:
            classes: the C class names.

        Returns:
            {values: {class: prior}, source, how}.
        """
        return {
            "values": {name: float(v) for name, v in zip(classes, self.values)},
            "source": dict(self.source),
            "how": self.how,
        }


def estimate_priors(observed_counts: Any, rows_with_observed: int, expected_positives: float) -> np.ndarray:
    """Class priors from single positives: pi_c = k * (share of class c among the observed positives).

    Under uniform single-positive masking each image with a finding shows one of its findings at random, so a
    class's share of the observed positives estimates its share of all positives when the number of findings per
    image does not depend on the class; times k (the mean number of positives per image, the quantity EPR/ROLE
    assume known) it is the class's prevalence. Biased masking (frequent_first) inflates the frequent classes'
    shares and deflates the others'.

    Args:
        observed_counts: (C,) observed positives per class of a single-positive split (e.g. train).
        rows_with_observed: images of that split with an observed positive.
        expected_positives: k, mean positives per image over all images of the population.

    Returns:
        (C,) float64 priors, each clipped to [1e-4, 1 - 1e-4].
    """
    counts = np.asarray(observed_counts, dtype=np.float64)
    if rows_with_observed <= 0:
        raise ValueError("estimating class priors needs images with an observed positive")
    return np.clip(expected_positives * counts / rows_with_observed, 1e-4, 1 - 1e-4)


def resolve_priors(
    classes: Sequence[str], given: Mapping[str, float], estimated: np.ndarray
) -> tuple[np.ndarray, dict[str, str]]:
    """The priors a run uses: data.class_priors where given (a mapping class -> prevalence), `estimated` for the
    other classes. Returns ((C,) priors, {class: "given" | "estimated"}). Unknown class names and prevalences
    outside (0, 1) are errors naming data.class_priors.

    Args:
        classes: the C class names.
        given: data.class_priors, class -> prevalence.
        estimated: (C,) estimated priors.

    Returns:
        ((C,) priors, {class: "given" | "estimated"}).
    """
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise ValueError(f"data.class_priors: {unknown} are not among the data's classes {list(classes)}")
    priors, source = np.asarray(estimated, dtype=np.float64).copy(), {}
    for c, name in enumerate(classes):
        if name in given:
            value = float(given[name])
            if not 0 < value < 1:
                raise ValueError(f"data.class_priors.{name}={value}: a prevalence must lie in (0, 1)")
            priors[c], source[name] = value, "given"
        else:
            source[name] = "estimated"
    return priors, source


def label_frequency(observed: Any, priors: Any) -> np.ndarray:
    """(C,) c = P(observed | positive) = observed positives / (prior * entries) per class, capped at 1 (a prior
    below the observed rate would make c > 1: the prior is then too low for the observed positives).

    Args:
        observed: (N, C) bool observed positives.
        priors: (C,) class priors.

    Returns:
        The label frequencies c (C,).
    """
    observed = np.asarray(observed, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = observed.sum(0) / (np.asarray(priors, np.float64) * observed.shape[0])
    return np.minimum(c, 1.0)


def _pu_nll(theta: np.ndarray, z: np.ndarray, s: np.ndarray, c: float, slope_only: bool) -> tuple[float, np.ndarray]:
    """Negative log-likelihood of the observed labels s under P(s = 1 | z) = c sigmoid(a z + b), and its gradient
    in (a, b) (in a alone with slope_only, b = 0)."""
    a, b = (theta[0], 0.0) if slope_only else (theta[0], theta[1])
    u = a * z + b
    q = sigmoid(u)
    log_q = -np.logaddexp(0.0, -u)
    log_rest = np.log1p(-np.clip(c * q, 0.0, 1 - 1e-12))
    nll = -np.sum(s * (math.log(c) + log_q) + (1 - s) * log_rest)
    d_u = -(s * (1 - q) - (1 - s) * c * q * (1 - q) / np.clip(1 - c * q, 1e-12, None))
    grad = np.array([np.sum(d_u * z)] if slope_only else [np.sum(d_u * z), np.sum(d_u)])
    return float(nll), grad


def fit_pu_logistic(probs: np.ndarray, observed: np.ndarray, c: float, slope_only: bool = False) -> ClassMap:
    """P(y = 1 | p) = sigmoid(a logit(p) + b) by maximum likelihood of the observed labels under c times it
    (Platt; with slope_only b = 0 and a = 1 / T: temperature). c = 1 is ordinary Platt / temperature scaling.

    Args:
        probs: (n,) raw probabilities. observed: (n,) bool observed positives. c: the class's label frequency.
        slope_only: fit the slope alone (b = 0): a temperature map.

    Returns:
        The "temperature" ClassMap with slope_only, else the "platt" one.
    """
    z, s = to_logits(probs), np.asarray(observed, np.float64)
    start = np.array([1.0] if slope_only else [1.0, 0.0])
    slope = (1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0])  # a temperature stays inside TEMPERATURE_RANGE
    bounds = [slope] if slope_only else [(1e-3, 1e3), (None, None)]
    result = minimize(
        _pu_nll,
        start,
        args=(z, s, c, slope_only),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-14},
    )
    if slope_only:
        return ClassMap("temperature", {"temperature": float(1.0 / result.x[0])})
    return ClassMap("platt", {"a": float(result.x[0]), "b": float(result.x[1])})


def fit_pu_isotonic(probs: np.ndarray, observed: np.ndarray, c: float) -> ClassMap:
    """Elkan & Noto's estimator: the isotonic fit of the observed labels on p, divided by c, capped at 1.

    Args:
        probs: (n,) raw probabilities.
        observed: (n,) bool observed positives.
        c: the class's label frequency.

    Returns:
        The "isotonic" ClassMap.
    """
    fitted = fit_isotonic(probs, observed)
    return ClassMap("isotonic", {"x": fitted.params["x"], "y": np.minimum(fitted.params["y"] / c, 1.0)})


def _fit_one(method: str, probs: np.ndarray, observed: np.ndarray, c: float) -> ClassMap:
    if method == "isotonic":
        return fit_pu_isotonic(probs, observed, c)
    return fit_pu_logistic(probs, observed, c, slope_only=method in ("temperature", "global_temperature"))


def fit_pu_calibrator(
    probs: Any, observed: Any, priors: Any, classes: list[str], method: str, min_positives: int = 10
) -> Calibrator:
    """Per-class calibration of a single-positive split from its observed positives and the class priors.

    Args:
        probs: (N, C) raw probabilities. observed: (N, C) bool observed positives (the split's only labels).
        priors: (C,) class prevalences. classes: the C names. method: eval.calibration (global_temperature fits
            one temperature per class here: the label frequencies differ by class).
        min_positives: a class with fewer observed positives gets the map fitted on all classes' entries pooled
            (their observed positives against the pooled label frequency), or the identity when those are too few.

    Returns:
        Calibrator, fitted_on PU_FITTED_ON.
    """
    check_method(method)
    probs, observed = np.asarray(probs, np.float64), np.asarray(observed, bool)
    priors = np.asarray(priors, np.float64)
    if method == "none":
        return Calibrator.identity(probs.shape[1], "nothing (eval.calibration=none)")
    c = label_frequency(observed, priors)
    maps, fallback, pooled = [], {}, None
    for k, name in enumerate(classes):
        if observed[:, k].sum() >= min_positives:
            maps.append(_fit_one(method, probs[:, k], observed[:, k], float(c[k])))
            continue
        if pooled is None:
            pooled_c = float(min(observed.sum() / (priors.sum() * len(probs)), 1.0))
            pooled = (
                _fit_one(method, probs.ravel(), observed.ravel(), pooled_c)
                if observed.sum() >= min_positives
                else IDENTITY
            )
        maps.append(pooled)
        fallback[name] = f"fewer than {min_positives} observed val positives: " + (
            f"{method} fitted on all classes' entries pooled"
            if pooled is not IDENTITY
            else "raw probabilities (too few pooled entries too)"
        )
    return Calibrator(method, tuple(maps), PU_FITTED_ON, fallback)


def pu_rates(scores: Any, observed: Any, prior: float) -> dict[str, np.ndarray]:
    """Estimated rates of one class at every candidate threshold (its distinct scores, descending), calling a
    finding present when its score reaches the threshold.

    Args:
        scores: (n,) scores of the class.
        observed: (n,) bool observed positives.
        prior: the class's prior.

    Returns:
        {threshold, tpr (the observed positives' share called), called (the share of all entries called),
         fpr = (called - prior tpr) / (1 - prior), precision = prior tpr / called}, each (K,), rates clipped to
        [0, 1].
    """
    scores, observed = np.asarray(scores, np.float64), np.asarray(observed, bool)
    candidates = np.unique(scores)[::-1]
    ascending_all, ascending_pos = np.sort(scores), np.sort(scores[observed])
    called = (len(scores) - np.searchsorted(ascending_all, candidates, "left")) / len(scores)
    tpr = (len(ascending_pos) - np.searchsorted(ascending_pos, candidates, "left")) / max(len(ascending_pos), 1)
    fpr = np.clip((called - prior * tpr) / (1 - prior), 0.0, 1.0)
    precision = np.clip(prior * tpr / called, 0.0, 1.0)
    return {"threshold": candidates, "tpr": tpr, "called": called, "fpr": fpr, "precision": precision}


def choose_pu_thresholds(
    probs: Any, observed: Any, priors: Any, rule: str = "youden", target_sensitivity: float = 0.9
) -> np.ndarray:
    """Per-class thresholds (C,) by eval.threshold_rule on the PU rates (pu_rates): youden maximises TPR - FPR,
    sensitivity takes the highest threshold whose TPR reaches `target_sensitivity`, f1 maximises
    2 precision TPR / (precision + TPR); ties go to the highest threshold. NaN for a class without an observed
    positive.

    Args:
        probs: (N, C) probabilities.
        observed: (N, C) bool observed positives.
        priors: (C,) class priors.
        rule: youden, sensitivity or f1.
        target_sensitivity: the TPR the sensitivity rule reaches.

    Returns:
        The thresholds (C,).
    """
    if rule not in RULES:
        raise ValueError(f"eval.threshold_rule={rule!r}; choose from {list(RULES)}")
    probs, observed = np.asarray(probs, np.float64), np.asarray(observed, bool)
    thresholds = np.full(probs.shape[1], math.nan)
    for k in range(probs.shape[1]):
        if not observed[:, k].any():
            continue
        r = pu_rates(probs[:, k], observed[:, k], float(priors[k]))
        if rule == "youden":
            best = int(np.argmax(r["tpr"] - r["fpr"]))
        elif rule == "sensitivity":
            best = int(np.argmax(r["tpr"] >= target_sensitivity - 1e-12))
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                f1 = np.where(
                    r["precision"] + r["tpr"] > 0, 2 * r["precision"] * r["tpr"] / (r["precision"] + r["tpr"]), 0.0
                )
            best = int(np.argmax(f1))
        thresholds[k] = r["threshold"][best]
    return thresholds
