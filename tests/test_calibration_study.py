"""tools/calibration_study.py: one tiny training records every epoch's val and test probabilities, and the
validation protocols replayed on them choose their epoch, calibration and thresholds from what each may see."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from spml.evaluation.metrics import evaluate_predictions
from spml.experiments.calibration_study import PROTOCOLS, RECORD, read_record, replay
from tests.conftest import REPO, TINY


def tool():
    spec = importlib.util.spec_from_file_location("calibration_study_tool", REPO / "tools/calibration_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_one_training_serves_every_protocol(tmp_path):
    out = tmp_path / "study"
    assert tool()([*TINY, "train.epochs=2", "--out", str(out), "--seeds", "0"]) == 0
    record = read_record(out / "single_positive" / "seed0" / RECORD)
    assert record["val_probs"].shape[0] == record["test_probs"].shape[0] == 2  # one entry per epoch
    observed, full = record["val_observed"], record["val_targets"] > 0.5
    assert not (observed & ~full).any() and (observed.sum(1) <= 1).all()  # single positives of the full labels
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == len(PROTOCOLS) * 4 and set(frame["protocol"]) == set(PROTOCOLS)
    # the oracle's checkpoint is the epoch with the best full-label val mAP, scored on test at that epoch
    classes = [str(c) for c in record["classes"]]
    val_map = [
        evaluate_predictions(p, record["val_targets"], record["val_known"], classes).summary["mAP"]
        for p in record["val_probs"]
    ]
    oracle = replay(record, "oracle", "platt")
    assert oracle["epoch"] == int(np.argmax(val_map)) + 1
    test = evaluate_predictions(
        record["test_probs"][oracle["epoch"] - 1], record["test_targets"], record["test_known"], classes
    )
    assert oracle["test_mAP"] == test.summary["mAP"]
    none = frame[frame["calibration"] == "none"]
    assert np.allclose(none["ece_raw"], none["ece_calibrated"])  # the identity map changes nothing
