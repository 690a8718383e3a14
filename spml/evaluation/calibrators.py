"""Per-class post-hoc calibration maps (eval.calibration): fitted on a split's known labels, or, on a
single-positive split, on its observed positives and the class priors (spml.evaluation.positive_unlabeled), and
stored as plain JSON numbers with the run's operating points (thresholds.json), never as a pickle.

Methods (each maps a class's raw probability p to a calibrated one):

* `none`: the identity.
* `temperature`: sigmoid(logit(p) / T), one T per class (spml.evaluation.calibration.fit_temperature).
* `global_temperature`: one T shared by every class.
* `platt`: sigmoid(a logit(p) + b) per class, a logistic regression on the class's logit (scikit-learn,
  unpenalised); the shift b removes a bias that a temperature cannot.
* `isotonic`: the non-decreasing step function of scikit-learn's IsotonicRegression (probabilities clipped to
  [0, 1], inputs outside the fitted range clipped), stored as its breakpoints and applied by linear
  interpolation between them, as scikit-learn's predict does.

Fallback: a class with fewer than `min_positives` known positives or known negatives (single-positive split:
observed positives) gets the same method fitted once on the pooled entries of all classes (one map for those
classes); if the pooled entries are too few too, the identity. Such classes are listed in `Calibrator.fallback`.
Temperature, Platt (a > 0) and the identity are strictly increasing: they never change a class's AUROC or AP;
isotonic maps are non-decreasing and can tie scores, which can change them slightly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from torch import nn

from spml.evaluation.calibration import fit_temperature, to_logits

METHODS = ("none", "temperature", "global_temperature", "platt", "isotonic")  # eval.calibration
CALIBRATOR_FORMAT = "spml-calibrator-1"


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + exp(-z)).

    Args:
        z: logits.

    Returns:
        The probabilities, same shape as `z`.
    """
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class ClassMap:
    """One class's map from raw to calibrated probability.

    kind: "identity" | "temperature" ({"temperature": T}) | "platt" ({"a", "b"}) | "isotonic" ({"x", "y"}: the
    breakpoints, x ascending raw probabilities, y non-decreasing calibrated ones).

    Attributes:
        kind: the map's kind (above).
        params: its parameters (above).
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Raw probabilities (N,) -> calibrated float64 (N,).

        Args:
            probs: raw probabilities (N,).

        Returns:
            The calibrated probabilities (N,).
        """
        p = np.asarray(probs, dtype=np.float64)
        if self.kind == "identity":
            return p.copy()
        if self.kind == "temperature":
            return sigmoid(to_logits(p) / self.params["temperature"])
        if self.kind == "platt":
            return sigmoid(self.params["a"] * to_logits(p) + self.params["b"])
        if self.kind == "isotonic":
            return np.interp(p, self.params["x"], self.params["y"])
        raise ValueError(f"unknown calibration map {self.kind!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **{
                k: (list(map(float, v)) if isinstance(v, (list, np.ndarray)) else float(v))
                for k, v in self.params.items()
            },
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> ClassMap:
        """The map a `to_json` record describes.

        Args:
            record: {"kind", parameter: value or list}.

        Returns:
            The ClassMap (lists as float64 arrays).
        """
        record = dict(record)
        kind = record.pop("kind")
        return cls(
            kind, {k: (np.asarray(v, dtype=np.float64) if isinstance(v, list) else float(v)) for k, v in record.items()}
        )


IDENTITY = ClassMap("identity")


@dataclass(frozen=True)
class Calibrator:
    """Calibration of every class: `method` (METHODS), one map per class, what it was fitted on (`fitted_on`, in
    words) and the classes that fell back ({class: what they got and why}).

    Attributes:
        method: a METHODS name.
        maps: one ClassMap per class.
        fitted_on: what it was fitted on, in words.
        fallback: {class: what it got and why}.
    """

    method: str
    maps: tuple[ClassMap, ...]
    fitted_on: str = ""
    fallback: dict[str, str] = field(default_factory=dict)

    def apply(self, probs: Any) -> np.ndarray:
        """Raw probabilities (N, C) -> calibrated float64 (N, C).

        Args:
            probs: raw probabilities (N, C).

        Returns:
            The calibrated probabilities (N, C).
        """
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(self.maps):
            raise ValueError(f"probabilities of shape {probs.shape}: the calibrator has {len(self.maps)} classes")
        return np.stack([m.apply(probs[:, c]) for c, m in enumerate(self.maps)], 1) if len(probs) else probs.copy()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CALIBRATOR_FORMAT,
            "method": self.method,
            "fitted_on": self.fitted_on,
            "fallback": dict(self.fallback),
            "maps": [m.to_json() for m in self.maps],
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Calibrator:
        """The calibrator a `to_json` record describes.

        Args:
            record: the JSON record (format CALIBRATOR_FORMAT).

        Returns:
            The Calibrator.

        Raises:
            ValueError: another format.
        """
        if record.get("format") != CALIBRATOR_FORMAT:
            raise ValueError(
                f"not a calibrator record (format {record.get('format')!r}, {CALIBRATOR_FORMAT!r} expected)"
            )
        return cls(
            record["method"],
            tuple(ClassMap.from_json(m) for m in record["maps"]),
            record.get("fitted_on", ""),
            dict(record.get("fallback", {})),
        )

    @classmethod
    def identity(cls, num_classes: int, fitted_on: str = "") -> Calibrator:
        """The calibrator that leaves probabilities raw (method "none").

        Args:
            num_classes: classes C.
            fitted_on: what it was fitted on, in words.

        Returns:
            The Calibrator.
        """
        return cls("none", (IDENTITY,) * num_classes, fitted_on)

    @property
    def temperatures(self) -> np.ndarray:
        """(C,) the temperature of each temperature map (1 for other maps)."""
        return np.array([m.params["temperature"] if m.kind == "temperature" else 1.0 for m in self.maps])


# ------------------------------------------------------------------------------------------------ fits
def fit_platt(probs: np.ndarray, positive: np.ndarray) -> ClassMap:
    """Platt scaling of one class: an unpenalised logistic regression of the labels on logit(p) (scikit-learn).

    Args:
        probs: (n,) raw probabilities. positive: (n,) bool labels (both values present).

    Returns:
        The "platt" ClassMap.
    """

    model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000)
    model.fit(to_logits(probs)[:, None], positive.astype(int))
    return ClassMap("platt", {"a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])})


def fit_isotonic(probs: np.ndarray, positive: np.ndarray) -> ClassMap:
    """Isotonic regression of the labels on p (scikit-learn), stored as its breakpoints.

    Args:
        probs: (n,) raw probabilities. positive: (n,) labels, bool or in [0, 1].

    Returns:
        The "isotonic" ClassMap.
    """

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    model.fit(np.asarray(probs, np.float64), np.asarray(positive, np.float64))
    return ClassMap(
        "isotonic", {"x": model.X_thresholds_.astype(np.float64), "y": model.y_thresholds_.astype(np.float64)}
    )


def fit_temperature_map(probs: np.ndarray, positive: np.ndarray) -> ClassMap:
    """Temperature scaling of one class (spml.evaluation.calibration.fit_temperature).

    Args:
        probs: (n,) raw probabilities.
        positive: (n,) bool labels.

    Returns:
        The "temperature" ClassMap.
    """
    t = fit_temperature(probs[:, None], positive[:, None], None, "per_class")[0]
    return ClassMap("temperature", {"temperature": float(t)})


FITS: dict[str, Callable[[np.ndarray, np.ndarray], ClassMap]] = {
    "temperature": fit_temperature_map,
    "global_temperature": fit_temperature_map,
    "platt": fit_platt,
    "isotonic": fit_isotonic,
}


def check_method(method: str) -> str:
    """Refuse a calibration method outside METHODS.

    Args:
        method: the eval.calibration value.

    Returns:
        `method`.

    Raises:
        ValueError: an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"eval.calibration={method!r}; choose from {list(METHODS)}")
    return method


def fit_calibrator(
    probs: Any, targets: Any, known: Any | None, classes: list[str], method: str, min_positives: int = 10
) -> Calibrator:
    """Per-class calibration on a split's known labels.

    Args:
        probs, targets, known: (N, C) raw probabilities, {0, 1} targets, bool known (None: all known).
        classes: the C class names (for the fallback list). method: METHODS.
        min_positives: a class needs at least this many known positives and known negatives for its own map
            (see the module docstring for the fallback).

    Returns:
        Calibrator, fitted_on "val split's known labels".
    """
    check_method(method)
    probs = np.asarray(probs, dtype=np.float64)
    positive = np.asarray(targets) > 0.5
    known = np.ones(probs.shape, bool) if known is None else np.asarray(known, bool)
    if method == "none":
        return Calibrator.identity(probs.shape[1], "nothing (eval.calibration=none)")
    fit = FITS[method]
    if method == "global_temperature":
        t = fit_temperature(probs, positive, known, "global")
        return Calibrator(
            method, tuple(ClassMap("temperature", {"temperature": float(v)}) for v in t), "val split's known labels"
        )
    enough = [
        min(int((positive[:, c] & known[:, c]).sum()), int((~positive[:, c] & known[:, c]).sum())) >= min_positives
        for c in range(probs.shape[1])
    ]
    maps, fallback = [], {}
    pooled = None
    for c, name in enumerate(classes):
        if enough[c]:
            fitted = fit(probs[known[:, c], c], positive[known[:, c], c])
            if fitted.kind != "platt" or fitted.params["a"] > 0:
                maps.append(fitted)
                continue
        if pooled is None:
            p, y = probs[known], positive[known]
            pooled = fit(p, y) if min(int(y.sum()), int((~y).sum())) >= min_positives else IDENTITY
        maps.append(pooled)
        fallback[name] = (
            f"fewer than {min_positives} known val positives or negatives: "
            if not enough[c]
            else "its labels do not increase with the probability (Platt slope <= 0): "
        ) + (
            f"{method} fitted on all classes' entries pooled"
            if pooled is not IDENTITY
            else "raw probabilities (too few pooled entries too)"
        )
    return Calibrator(method, tuple(maps), "val split's known labels", fallback)


def brier(probs: Any, targets: Any, known: Any | None) -> np.ndarray:
    """(C,) Brier score per class over its known entries: mean of (p - y)^2 (NaN without known entries).

    Args:
        probs: probabilities (N, C).
        targets: labels (N, C) (> 0.5: positive).
        known: the known entries (N, C) bool, or None (all).

    Returns:
        The Brier scores (C,).
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = (np.asarray(targets) > 0.5).astype(np.float64)
    known = np.ones(probs.shape, bool) if known is None else np.asarray(known, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known, (probs - y) ** 2, 0.0).sum(0) / known.sum(0)


def describe(calibrator: Calibrator) -> str:
    """One sentence: what the calibrated probabilities are.

    Args:
        calibrator: the calibrator.

    Returns:
        The sentence.
    """
    if calibrator.method == "none":
        return "raw model probabilities (eval.calibration=none): not calibrated"
    text = f"{calibrator.method} calibration per class, fitted on the {calibrator.fitted_on}"
    if calibrator.fallback:
        text += f"; {len(calibrator.fallback)} class(es) fell back ({', '.join(calibrator.fallback)})"
    return text


class CalibratedModel(nn.Module):
    """A classifier that returns calibrated probabilities: `model` (images -> logits, e.g. spml.models.InferenceModel)
    followed by sigmoid and `calibrator`'s per-class maps (spml.factories.load_model(..., calibrated=True)).

    Attributes `classes`, `image_size`, `metadata`, `tta` are the wrapped model's; `calibrator` and `thresholds`
    ((C,) decision thresholds on the calibrated probability, NaN where a class has none) come from the run's
    thresholds.json.

    Shape:
        forward: the wrapped model's images (B, in_chans, S, S) -> float32 calibrated probabilities (B, C).

    Args:
        model: the wrapped classifier (images -> logits).
        calibrator: the per-class maps.
        thresholds: (C,) decision thresholds on the calibrated probability (NaN: none).
    """

    def __init__(self, model: nn.Module, calibrator: Calibrator, thresholds: np.ndarray):
        super().__init__()
        self.model, self.calibrator, self.thresholds = model, calibrator, np.asarray(thresholds, np.float64)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities of `images`.

        Args:
            images: the wrapped model's images (B, in_chans, S, S).

        Returns:
            float32 calibrated probabilities (B, C), on the images' device.
        """
        probs = torch.sigmoid(self.model(images).float())
        calibrated = self.calibrator.apply(probs.detach().cpu().numpy())
        return torch.as_tensor(calibrated, dtype=torch.float32, device=probs.device)
