"""Metrics against hand-computed values, scikit-learn, and invariants (masking, seeds, bootstrap)."""

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from spml.evaluation.metrics import (
    _resample_counts,
    _tie_group_starts,
    evaluate_predictions,
    pseudo_label_quality,
    study_level,
    weighted_auroc_ap,
)


def random_problem(n=400, c=5, seed=0, rounding=None):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.3).astype(np.float32)
    scores = rng.random((n, c)) + targets * np.linspace(0.2, 1.0, c)
    return (np.round(scores, rounding) if rounding else scores), targets


def test_hand_computed_auroc_perfect_reversed_tied():
    targets = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=float)
    scores = np.array([[0.1, 0.9, 0.5], [0.2, 0.8, 0.5], [0.8, 0.2, 0.5], [0.9, 0.1, 0.5]])
    result = evaluate_predictions(scores, targets, None, ["perfect", "reversed", "tied"])
    assert result.per_class["auroc"].tolist() == [1.0, 0.0, 0.5]
    # AP: perfect 1; reversed: positives at ranks 3, 4 -> (1/3 + 2/4) / 2; all tied -> prevalence 0.5
    assert result.per_class["ap"].tolist() == pytest.approx([1.0, (1 / 3 + 2 / 4) / 2, 0.5])
    assert result.summary["mean_auroc"] == pytest.approx(0.5)


def test_macro_matches_sklearn_without_unknowns():
    scores, targets = random_problem()
    result = evaluate_predictions(torch.from_numpy(scores), torch.from_numpy(targets), None, list("abcde"))
    assert result.summary["mAP"] == pytest.approx(average_precision_score(targets, scores, average="macro"))
    assert result.summary["mean_auroc"] == pytest.approx(roc_auc_score(targets, scores, average="macro"))
    assert result.per_class["n_pos"].tolist() == targets.sum(0).astype(int).tolist()
    assert (result.per_class["n_pos"] + result.per_class["n_neg"] == len(scores)).all()


def test_unknown_entries_are_ignored():
    scores, targets = random_problem(seed=1)
    known = np.random.default_rng(2).random(scores.shape) < 0.7
    base = evaluate_predictions(scores, targets, known, list("abcde"), bootstrap=20)
    scrambled = np.where(known, scores, np.random.default_rng(3).random(scores.shape))
    flipped = np.where(known, targets, 1 - targets)
    other = evaluate_predictions(scrambled, flipped, known, list("abcde"), bootstrap=20)
    pd.testing.assert_frame_equal(base.per_class, other.per_class)
    assert base.summary == other.summary
    first = known[:, 0]
    assert base.per_class["auroc"][0] == pytest.approx(roc_auc_score(targets[first, 0], scores[first, 0]))


def test_class_with_only_negatives_is_skipped_and_reported():
    scores, targets = random_problem(c=3)
    targets[:, 1] = 0
    known = np.ones_like(targets, dtype=bool)
    known[:, 2] = False
    result = evaluate_predictions(scores, targets, known, ["a", "b", "c"], bootstrap=10)
    assert set(result.skipped) == {"b", "c"}
    assert "no positive" in result.skipped["b"] and result.skipped["c"] == "no known labels"
    assert result.summary["classes_used"] == ["a"]
    assert result.summary["mAP"] == pytest.approx(average_precision_score(targets[:, 0], scores[:, 0]))
    assert result.per_class["ap"].isna().tolist() == [False, True, True]
    json.loads(result.to_json())  # strict JSON despite the NaNs


def test_bad_inputs_name_row_and_class():
    scores, targets = random_problem(c=2)
    scores[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7, class 'b'"):
        evaluate_predictions(scores, targets, None, ["a", "b"])
    known = np.ones(scores.shape, bool)
    known[7, 1] = False  # a NaN score where the label is unknown is harmless
    evaluate_predictions(scores, targets, known, ["a", "b"])
    with pytest.raises(ValueError, match="class names"):
        evaluate_predictions(scores, targets, known, ["a"])


@pytest.mark.parametrize("rounding", [None, 1])
def test_weighted_auroc_ap_equals_sklearn_with_sample_weight(rounding):
    scores, targets = random_problem(n=300, c=1, seed=4, rounding=rounding)
    weights = _resample_counts(300, 4, np.random.default_rng(5))
    order = np.argsort(-scores[:, 0], kind="stable")
    auroc, ap = weighted_auroc_ap(weights[:, order], targets[order, 0] > 0.5, _tie_group_starts(scores[order, 0]))
    for r in range(4):
        assert auroc[r] == pytest.approx(roc_auc_score(targets[:, 0], scores[:, 0], sample_weight=weights[r]))
        assert ap[r] == pytest.approx(average_precision_score(targets[:, 0], scores[:, 0], sample_weight=weights[r]))


def test_resample_counts_are_multinomial_draws():
    counts = _resample_counts(50, 3, np.random.default_rng(0))
    assert counts.shape == (3, 50) and (counts.sum(1) == 50).all() and (counts >= 0).all()


def ci_width(result, key="mAP"):
    return result.summary[f"{key}_ci_high"] - result.summary[f"{key}_ci_low"]


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_data():
    small = evaluate_predictions(*random_problem(n=200, seed=6), None, list("abcde"), bootstrap=200)
    large = evaluate_predictions(*random_problem(n=3200, seed=6), None, list("abcde"), bootstrap=200)
    for result in (small, large):
        for key in ("mAP", "mean_auroc"):
            assert result.summary[f"{key}_ci_low"] <= result.summary[key] <= result.summary[f"{key}_ci_high"]
        frame = result.per_class
        assert ((frame["auroc_ci_low"] <= frame["auroc"]) & (frame["auroc"] <= frame["auroc_ci_high"])).all()
    # standard error ~ 1/sqrt(n): 16x the data, about a quarter of the width
    assert ci_width(large) < 0.5 * ci_width(small)
    assert ci_width(large, "mean_auroc") < 0.5 * ci_width(small, "mean_auroc")


def test_bootstrap_is_deterministic_by_seed():
    scores, targets = random_problem(seed=7)
    a = evaluate_predictions(scores, targets, None, list("abcde"), bootstrap=50, seed=3)
    b = evaluate_predictions(scores, targets, None, list("abcde"), bootstrap=50, seed=3)
    c = evaluate_predictions(scores, targets, None, list("abcde"), bootstrap=50, seed=4)
    assert a.to_json() == b.to_json()
    assert a.summary["mAP_ci_low"] != c.summary["mAP_ci_low"]
    assert a.summary["mAP"] == c.summary["mAP"]


def test_resamples_lacking_a_label_are_skipped_for_that_class_only():
    scores, targets = random_problem(n=40, c=2, seed=8)
    targets[:, 1] = 0
    targets[0, 1] = 1  # one positive: absent from about (1 - 1/40)^40 = 36% of resamples
    result = evaluate_predictions(scores, targets, None, ["common", "rare"], bootstrap=300)
    valid = result.per_class.set_index("class")["bootstrap_valid"]
    assert valid["common"] == 300 and 150 < valid["rare"] < 240
    assert result.summary["bootstrap_valid"] == valid["rare"]


def test_bootstrap_speed_on_5000_by_14():
    scores, targets = random_problem(n=5000, c=14, seed=9, rounding=2)
    start = time.perf_counter()
    evaluate_predictions(scores, targets, None, [str(i) for i in range(14)], bootstrap=200)
    assert time.perf_counter() - start < 5.0


def test_pseudo_label_quality_on_fixture():
    targets = np.array([[1, 1, 0, 1], [1, 0, 1, 0]])
    observed = np.array([[1, 0, 0, 0], [0, 0, 1, 0]], dtype=bool)
    pseudo = np.array([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=bool)  # observed entries do not count
    quality = pseudo_label_quality(pseudo, targets, observed)
    # hidden positives: (0,1), (0,3), (1,0); pseudo on candidates: (0,1), (0,2), (1,0), (1,1)
    assert quality["n_hidden_positive"] == 3 and quality["n_pseudo_positive"] == 4
    assert quality["n_true_positive"] == 2
    assert quality["precision"] == pytest.approx(2 / 4) and quality["recall"] == pytest.approx(2 / 3)
    # class 2: no hidden positive (recall undefined); class 3: nothing predicted (precision undefined)
    np.testing.assert_allclose(quality["per_class_precision"], [1.0, 0.5, 0.0, np.nan])
    np.testing.assert_allclose(quality["per_class_recall"], [1.0, 1.0, np.nan, 0.0])
    with_known = pseudo_label_quality(pseudo, targets, observed, known=np.array([[1, 0, 1, 1], [1, 1, 1, 1]]))
    assert with_known["n_pseudo_positive"] == 3 and with_known["n_true_positive"] == 1


def test_study_level_max_and_mean_keep_first_appearance_order():
    study_ids = np.array(["s2", "s1", "s2", "s3", "s1"])
    scores = np.array([[0.1, 0.4], [0.7, 0.2], [0.5, 0.6], [0.3, 0.3], [0.1, 0.8]])
    targets = np.array([[0, 1], [1, 0], [1, 0], [0, 0], [0, 1]])
    known = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1]], dtype=bool)
    s_max, t, k = study_level(scores, targets, known, study_ids, "max")
    np.testing.assert_allclose(s_max, [[0.5, 0.6], [0.7, 0.8], [0.3, 0.3]])
    s_mean, _, _ = study_level(scores, targets, known, study_ids, "mean")
    np.testing.assert_allclose(s_mean, [[0.3, 0.5], [0.4, 0.5], [0.3, 0.3]])
    # s2: class 0 known only in view 0 (target 0; view 2's 1 is unknown), class 1 max 1
    np.testing.assert_array_equal(t, [[0, 1], [1, 1], [0, 0]])
    np.testing.assert_array_equal(k, [[True, True], [True, True], [False, False]])


def test_study_level_rejects_missing_ids_and_bad_reduce():
    scores = np.zeros((3, 1))
    with pytest.raises(ValueError, match="row 1"):
        study_level(scores, scores, None, ["a", "", "b"])
    with pytest.raises(ValueError, match="reduce"):
        study_level(scores, scores, None, ["a", "b", "c"], reduce="median")
