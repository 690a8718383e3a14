"""Calibration and operating points against brute force, scikit-learn and known generating parameters."""

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, roc_curve

from spml.evaluation.calibration import (
    apply_temperature,
    choose_thresholds,
    fit_temperature,
    operating_points,
    reliability,
)
from spml.evaluation.calibrators import IDENTITY, Calibrator, ClassMap
from spml.evaluation.thresholds import read_thresholds, save_thresholds


def sampled(n=20000, temperature=1.0, seed=0):
    """Probabilities sigmoid(z) whose labels were drawn from sigmoid(z / temperature): calibrated at T = 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.5, (n, 2))
    labels = (rng.random((n, 2)) < 1 / (1 + np.exp(-z / temperature))).astype(float)
    return 1 / (1 + np.exp(-z)), labels


def test_ece_by_hand_and_per_bin_table():
    probs = np.array([[0.05], [0.15], [0.15], [0.95], [0.85]])
    targets = np.array([[0], [1], [0], [1], [1]])
    bins, ece = reliability(probs, targets, None, ["a"], bins=10)
    # bins: [0, .1): conf .05 freq 0; [.1, .2): conf .15 freq .5; [.8, .9): .85 / 1; [.9, 1]: .95 / 1
    expected = (1 * 0.05 + 2 * 0.35 + 1 * 0.15 + 1 * 0.05) / 5
    assert ece["ece"].iloc[0] == pytest.approx(expected)
    assert bins["count"].sum() == 5 and bins.loc[bins["bin"] == 1, "frequency"].iloc[0] == 0.5
    _, unknown_only = reliability(probs, targets, np.zeros_like(probs, bool), ["a"])
    assert np.isnan(unknown_only["ece"].iloc[0])


def test_calibrated_probabilities_have_small_ece_and_scaled_ones_do_not():
    probs, labels = sampled()
    assert reliability(probs, labels, None, ["a", "b"])[1]["ece"].max() < 0.02
    overconfident = apply_temperature(probs, [0.4, 0.4])
    assert reliability(overconfident, labels, None, ["a", "b"])[1]["ece"].min() > 0.05


def test_temperature_fit_recovers_the_generating_temperature():
    probs, labels = sampled(temperature=2.5)
    per_class = fit_temperature(probs, labels, None, "per_class")
    assert per_class == pytest.approx([2.5, 2.5], rel=0.06)
    assert fit_temperature(probs, labels, None, "global") == pytest.approx([2.5, 2.5], rel=0.06)
    assert np.allclose(fit_temperature(probs, labels, None, "none"), 1.0)
    scaled = apply_temperature(probs, per_class)
    assert reliability(scaled, labels, None, ["a", "b"])[1]["ece"].max() < 0.02
    labels[:, 1] = 0  # no positive: no finite optimum, the class keeps T = 1
    assert fit_temperature(probs, labels, None, "per_class")[1] == 1.0
    assert np.allclose(apply_temperature(probs, [1.0, 1.0]), probs)


def brute_force(p, y, score):
    candidates = np.unique(p)
    values = [score(y, p >= t) for t in candidates]
    best = max(values)
    return max(t for t, v in zip(candidates, values) if v == best)  # ties: the highest threshold


def sensitivity(y, called):
    return (called & y).sum() / y.sum()


def youden(y, called):
    return sensitivity(y, called) + (~called & ~y).sum() / (~y).sum() - 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thresholds_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.random((300, 3)) < 0.2
    p = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1), 2)  # ties on purpose
    known = rng.random((300, 3)) < 0.9
    for rule, score in (("youden", youden), ("f1", lambda t, c: f1_score(t, c, zero_division=0))):
        chosen = choose_thresholds(p, y, known, rule)
        for c in range(3):
            assert chosen[c] == brute_force(p[known[:, c], c], y[known[:, c], c], score), (rule, c)
    chosen = choose_thresholds(p, y, known, "sensitivity", target_sensitivity=0.8)
    for c in range(3):
        yc, pc = y[known[:, c], c], p[known[:, c], c]
        assert sensitivity(yc, pc >= chosen[c]) >= 0.8
        higher = np.unique(pc)[np.unique(pc) > chosen[c]]
        assert higher.size == 0 or sensitivity(yc, pc >= higher.min()) < 0.8  # the highest that reaches it
    y[:, 2] = False
    assert np.isnan(choose_thresholds(p, y, known, "youden")[2])
    with pytest.raises(ValueError, match="choose from"):
        choose_thresholds(p, y, known, "accuracy")


def test_operating_points_match_sklearn_and_bracket_with_bootstrap():
    rng = np.random.default_rng(3)
    y = rng.random((400, 2)) < 0.3
    p = np.clip(rng.normal(0.3 + 0.35 * y, 0.2), 0, 1)
    known = rng.random((400, 2)) < 0.95
    thresholds = np.array([0.45, np.nan])
    table = operating_points(p, y, known, thresholds, ["a", "b"], bootstrap=300, seed=0)
    row = table.iloc[0]
    tn, fp, fn, tp = confusion_matrix(y[known[:, 0], 0], p[known[:, 0], 0] >= 0.45).ravel()
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (tp, fp, tn, fn)
    assert row["sensitivity"] == pytest.approx(tp / (tp + fn)) and row["ppv"] == pytest.approx(tp / (tp + fp))
    assert row["specificity"] == pytest.approx(tn / (tn + fp))
    assert row["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    for key in ("sensitivity", "specificity", "ppv", "f1"):
        assert row[f"{key}_ci_low"] < row[key] < row[f"{key}_ci_high"]
    assert table.iloc[1][["sensitivity", "sensitivity_ci_low"]].isna().all()  # no threshold, no numbers
    same = operating_points(p, y, known, thresholds, ["a", "b"], bootstrap=300, seed=0)
    assert same.equals(table)  # seeded


def test_thresholds_file_round_trip_and_mismatches(tmp_path):
    calibrator = Calibrator("temperature", (ClassMap("temperature", {"temperature": 1.5}), IDENTITY))
    path = save_thresholds(
        tmp_path / "thresholds.json",
        ["a", "b"],
        np.array([0.3, np.nan]),
        calibrator.to_json(),
        "youden",
        0.9,
        "step-0000010",
        "val",
    )
    record = read_thresholds(path, ["a", "b"], checkpoint="step-0000010", tta=[])
    assert record["threshold"][0] == 0.3 and np.isnan(record["threshold"][1])
    p = np.array([[0.2, 0.7], [0.9, 0.1]])
    assert np.allclose(record["calibrator"].apply(p), np.stack([apply_temperature(p[:, :1], [1.5])[:, 0], p[:, 1]], 1))
    assert json.loads(path.read_text())["threshold"][1] is None
    with pytest.raises(ValueError, match="classes"):
        read_thresholds(path, ["a", "c"])
    with pytest.raises(ValueError, match="fitted for checkpoint step-0000010"):
        read_thresholds(path, ["a", "b"], checkpoint="step-0000020")
    with pytest.raises(ValueError, match="TTA views"):
        read_thresholds(path, ["a", "b"], tta=["identity", "hflip"])


def test_roc_curve_candidates_include_every_distinct_score():
    # choose_thresholds relies on roc_curve(drop_intermediate=False) listing every distinct score
    y, p = np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.4, 0.4, 0.8, 0.9])
    assert set(roc_curve(y, p, drop_intermediate=False)[2][1:]) == set(np.unique(p))


def test_a_thresholds_file_of_the_first_format_reads_as_temperature_calibration(tmp_path):
    path = tmp_path / "thresholds.json"  # as spml wrote it before eval.calibration (format 1)
    path.write_text(
        json.dumps(
            {
                "format": "spml-thresholds-1",
                "classes": ["a", "b"],
                "rule": "youden",
                "target_sensitivity": None,
                "temperature_mode": "per_class",
                "checkpoint": "step-0000010",
                "tta": [],
                "fitted_on": "val",
                "threshold": [0.4, None],
                "temperature": [2.0, 1.0],
            }
        )
    )
    record = read_thresholds(path, ["a", "b"])
    assert record["calibrator"].method == "temperature" and record["priors"] is None
    p = np.array([[0.2, 0.7]])
    assert np.allclose(record["calibrator"].apply(p), apply_temperature(p, [2.0, 1.0]))
