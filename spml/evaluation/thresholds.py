"""thresholds.json: the operating points and the calibrator a run stores beside its weights (fitted on its val
split by spml.evaluation.diagnostics.fit_operating_points), written and read back checked against the classes,
checkpoint and TTA views they were fitted for."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from spml.evaluation.calibrators import Calibrator, ClassMap

THRESHOLDS_FILE = "thresholds.json"
THRESHOLDS_FORMAT = "spml-thresholds-2"


def save_thresholds(
    path: str | Path,
    classes: list[str],
    thresholds: np.ndarray,
    calibration: dict[str, Any],
    rule: str,
    target_sensitivity: float,
    checkpoint: str,
    fitted_on: str,
    tta: tuple[str, ...] | list[str] = (),
    priors: dict[str, Any] | None = None,
) -> Path:
    """Write the operating points of a run (see read_thresholds for the format). calibration: the calibrator's
    JSON record (spml.evaluation.calibrators.Calibrator.to_json); priors: {values: {class: prior}, source: {class:
    given | estimated}, how: text} when they were fitted from a single-positive split and class priors.

    Args:
        path: the thresholds.json written.
        classes: the C class names.
        thresholds: per-class thresholds (C,) on the calibrated probability (NaN: none).
        calibration: the calibrator's JSON record.
        rule: the threshold rule.
        target_sensitivity: the sensitivity rule's target.
        checkpoint: the checkpoint folder whose weights they were fitted for.
        fitted_on: the split they were fitted on.
        tta: the TTA views of the predictions ([] for none).
        priors: the class priors record, or None.

    Returns:
        `path`.
    """
    record = {
        "format": THRESHOLDS_FORMAT,
        "classes": list(classes),
        "rule": rule,
        "target_sensitivity": target_sensitivity if rule == "sensitivity" else None,
        "checkpoint": checkpoint,
        "tta": list(tta),
        "fitted_on": fitted_on,
        "threshold": [None if math.isnan(t) else float(t) for t in thresholds],
        "calibration": calibration,
        "priors": priors,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return path


LEGACY_TEMPERATURE = {"none": "none", "per_class": "temperature", "global": "global_temperature"}


def read_thresholds(
    path: str | Path,
    classes: list[str] | tuple[str, ...],
    checkpoint: str | None = None,
    tta: tuple[str, ...] | list[str] | None = None,
) -> dict[str, Any]:
    """A thresholds.json: format, classes, rule, target_sensitivity, checkpoint (the checkpoint folder whose weights
    it was fitted for), tta (the test-time augmentation views of those predictions, [] for none), fitted_on
    (split), threshold (C,) on the calibrated probability (null: no threshold), calibration (the calibrator's
    JSON record), priors (null unless fitted from class priors). Returned with `threshold` as a numpy array (NaN
    for null) and `calibrator` (spml.evaluation.calibrators.Calibrator). A file of the first format
    (spml-thresholds-1: per-class temperatures) reads as temperature calibration. Classes that differ from the
    model's, and (when given) another checkpoint or other TTA views than the predictions they are to be applied
    to, are errors naming both: thresholds belong to the weights they were fitted for.

    Args:
        path: the thresholds.json.
        classes: the model's class names.
        checkpoint: the checkpoint the predictions come from (None: not checked).
        tta: the TTA views of the predictions (None: not checked).

    Returns:
        The record described above.
    """

    path = Path(path)
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("format") not in (THRESHOLDS_FORMAT, "spml-thresholds-1"):
        raise ValueError(f"{path}: not a thresholds file (format {record.get('format')!r})")
    if tuple(record["classes"]) != tuple(classes):
        raise ValueError(f"{path}: thresholds for classes {record['classes']}, the model has {list(classes)}")
    if checkpoint is not None and record["checkpoint"] != checkpoint:
        raise ValueError(
            f"{path} was fitted for checkpoint {record['checkpoint']}, the model loaded is {checkpoint}: "
            "fit thresholds for it with tools/evaluate.py RUN --checkpoint ... and pass that "
            "evaluation's thresholds.json"
        )
    if tta is not None and list(record["tta"]) != list(tta):
        raise ValueError(
            f"{path} was fitted on predictions with TTA views {record['tta'] or 'none'}, these use "
            f"{list(tta) or 'none'}: fit them with tools/evaluate.py RUN{' --tta' if tta else ''} and "
            "pass that evaluation's thresholds.json"
        )
    if record["format"] == "spml-thresholds-1":  # temperatures of the first format: temperature calibration
        method = LEGACY_TEMPERATURE[record.pop("temperature_mode")]
        maps = tuple(ClassMap("temperature", {"temperature": float(t)}) for t in record.pop("temperature"))
        record["calibration"] = Calibrator(method, maps, f"{record['fitted_on']} split's known labels").to_json()
        record["priors"] = None
    record["threshold"] = np.array([math.nan if t is None else t for t in record["threshold"]], dtype=np.float64)
    record["calibrator"] = Calibrator.from_json(record["calibration"])
    return record
