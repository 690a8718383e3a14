"""Post-hoc calibration (spml.evaluation.calibrators) and its positive-unlabelled form for single-positive val splits
(spml.evaluation.positive_unlabeled): against scikit-learn, an independent float64 Newton fit, identities (c = 1 is
ordinary Platt, the PU rates of fully observed labels are the ROC), generating parameters, monotonicity, and the
hidden-label shuffle test of the prior-based procedures."""

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from spml.config import ConfigError, load_config
from spml.config.legacy import upgrade_saved_config
from spml.data.build import SplitLabels, masked_targets, mean_positives
from spml.data.masking import MASKING
from spml.evaluation.calibration import to_logits
from spml.evaluation.calibrators import IDENTITY, Calibrator, brier, fit_calibrator
from spml.evaluation.diagnostics import DiagnosticSettings, fit_operating_points
from spml.evaluation.positive_unlabeled import (
    ClassPriors,
    choose_pu_thresholds,
    estimate_priors,
    fit_pu_calibrator,
    fit_pu_logistic,
    label_frequency,
    pu_rates,
)


def drawn(n=4000, classes=3, seed=0, slope=0.6, shift=-2.0):
    """Raw probabilities sigmoid(z) of a model that is too high, and labels drawn from sigmoid(slope z + shift)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(1.0, 2.0, (n, classes))
    labels = rng.random((n, classes)) < 1 / (1 + np.exp(-(slope * z + shift)))
    return 1 / (1 + np.exp(-z)), labels


def newton_platt(z, y, steps=50):
    """Unpenalised logistic regression of y on z by Newton's method in float64 (an independent reference)."""
    x = np.stack([z, np.ones_like(z)], 1)
    w = np.zeros(2)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        w -= np.linalg.solve(x.T @ (x * (p * (1 - p))[:, None]), x.T @ (p - y))
    return w


def test_platt_matches_scikit_learn_and_newton_on_fixed_arrays():
    probs, labels = drawn()
    calibrator = fit_calibrator(probs, labels, None, ["a", "b", "c"], "platt")
    for c, m in enumerate(calibrator.maps):
        z = to_logits(probs[:, c])
        a, b = newton_platt(z, labels[:, c].astype(float))
        assert (m.params["a"], m.params["b"]) == pytest.approx((a, b), rel=1e-6, abs=1e-6)
        reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=1000).fit(z[:, None], labels[:, c])
        assert np.allclose(m.apply(probs[:, c]), reference.predict_proba(z[:, None])[:, 1], atol=1e-7)
    assert (calibrator.maps[0].params["a"], calibrator.maps[0].params["b"]) == pytest.approx((0.6, -2.0), abs=0.15)


def test_isotonic_matches_scikit_learn_after_a_json_round_trip():
    probs, labels = drawn(n=1500, seed=1)
    calibrator = Calibrator.from_json(
        json.loads(json.dumps(fit_calibrator(probs, labels, None, ["a", "b", "c"], "isotonic").to_json()))
    )
    fresh = np.random.default_rng(2).random((500, 3)) * 1.1 - 0.05  # inside and outside the fitted range
    for c in range(3):
        reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(probs[:, c], labels[:, c])
        assert np.allclose(calibrator.apply(np.clip(fresh, 0, 1))[:, c], reference.predict(np.clip(fresh[:, c], 0, 1)))


@pytest.mark.parametrize("method", ["temperature", "global_temperature", "platt"])
def test_monotone_calibration_never_changes_a_class_auroc(method):
    probs, labels = drawn(seed=3)
    known = np.random.default_rng(4).random(probs.shape) < 0.9
    for calibrator in (
        fit_calibrator(probs, labels, known, ["a", "b", "c"], method),
        fit_pu_calibrator(
            probs,
            labels & (np.random.default_rng(5).random(probs.shape) < 0.5),
            labels.mean(0),
            ["a", "b", "c"],
            method,
        ),
    ):
        calibrated = calibrator.apply(probs)
        for c in range(3):
            k = known[:, c]
            assert roc_auc_score(labels[k, c], calibrated[k, c]) == roc_auc_score(labels[k, c], probs[k, c])
            order = np.argsort(probs[:, c])
            assert (np.diff(calibrated[order, c]) > 0).all()  # strictly increasing: no ties made


def test_calibration_makes_biased_probabilities_agree_with_the_frequencies():
    probs, labels = drawn(n=20000, seed=6)
    assert np.all(np.abs(probs.mean(0) - labels.mean(0)) > 0.3)  # far too high, as after an SPML loss
    for method in ("platt", "isotonic"):
        calibrated = fit_calibrator(probs, labels, None, ["a", "b", "c"], method).apply(probs)
        assert np.allclose(calibrated.mean(0), labels.mean(0), atol=1e-3)  # fitted on these very entries
        assert (brier(calibrated, labels, None) < brier(probs, labels, None)).all()


def test_a_class_with_few_positives_falls_back_to_the_pooled_fit_and_is_listed():
    probs, labels = drawn(seed=7)
    labels[:, 2] = False
    labels[:5, 2] = True  # 5 known positives < 10
    calibrator = fit_calibrator(probs, labels, None, ["a", "b", "c"], "platt", min_positives=10)
    assert list(calibrator.fallback) == ["c"] and "pooled" in calibrator.fallback["c"]
    z = to_logits(probs).ravel()
    a, b = newton_platt(z, labels.ravel().astype(float))
    assert (calibrator.maps[2].params["a"], calibrator.maps[2].params["b"]) == pytest.approx((a, b), rel=1e-5)
    nothing = fit_calibrator(probs[:30], labels[:30], None, ["a", "b", "c"], "platt", min_positives=100)
    assert nothing.maps == (IDENTITY,) * 3 and len(nothing.fallback) == 3 and "raw" in nothing.fallback["a"]
    assert fit_calibrator(probs, labels, None, ["a", "b", "c"], "none").maps == (IDENTITY,) * 3


def test_pu_platt_with_every_positive_observed_is_platt_and_recovers_the_model_when_half_are_hidden():
    probs, labels = drawn(n=40000, classes=1, seed=8)
    platt = fit_calibrator(probs, labels, None, ["a"], "platt").maps[0]
    same = fit_pu_logistic(probs[:, 0], labels[:, 0], 1.0)
    assert (same.params["a"], same.params["b"]) == pytest.approx((platt.params["a"], platt.params["b"]), rel=1e-5)
    observed = labels & (np.random.default_rng(9).random(labels.shape) < 0.5)  # SCAR, c = 0.5
    c = label_frequency(observed, labels.mean(0))
    assert c[0] == pytest.approx(0.5, abs=0.02)
    fitted = fit_pu_logistic(probs[:, 0], observed[:, 0], float(c[0]))
    assert (fitted.params["a"], fitted.params["b"]) == pytest.approx((0.6, -2.0), abs=0.15)
    isotonic = fit_pu_calibrator(probs, observed, labels.mean(0), ["a"], "isotonic").apply(probs)
    assert isotonic.mean() == pytest.approx(labels.mean(), abs=0.01)


def test_pu_rates_of_fully_observed_labels_are_the_roc_curve():
    probs, labels = drawn(n=3000, classes=1, seed=10)
    rates = pu_rates(probs[:, 0], labels[:, 0], float(labels.mean()))
    fpr, tpr, thresholds = roc_curve(labels[:, 0], probs[:, 0], drop_intermediate=False)
    assert np.allclose(rates["threshold"], thresholds[1:])
    assert np.allclose(rates["tpr"], tpr[1:]) and np.allclose(rates["fpr"], fpr[1:])
    from spml.evaluation.calibration import choose_thresholds

    for rule in ("youden", "sensitivity", "f1"):
        assert np.allclose(
            choose_pu_thresholds(probs, labels, labels.mean(0), rule), choose_thresholds(probs, labels, None, rule)
        )


def test_priors_from_single_positives_times_k():
    rng = np.random.default_rng(11)
    truth = rng.random((20000, 4)) < np.array([0.3, 0.15, 0.08, 0.04])  # independent findings
    masked = MASKING.get("single_positive")(truth.astype(float), np.random.RandomState(0))
    observed = masked == 1
    k = truth.sum(1).mean()
    estimated = estimate_priors(observed.sum(0), int(observed.any(1).sum()), k)
    assert estimated == pytest.approx(truth.mean(0), rel=0.12)


def test_hidden_val_labels_never_reach_the_prior_based_procedures(tmp_path):
    """The shuffle test of the objectives, for the val split under data.mask_val: the observed positives are kept,
    the hidden (unobserved) entries are shuffled among themselves; the labels pass through the data layer's own
    masked_targets and the prior estimate (k = mean positives per image of the full labels, a count the shuffle
    keeps); calibration, thresholds and the stored record are byte for byte the same."""
    rng = np.random.default_rng(12)
    probs, full = drawn(n=600, classes=4, seed=13)
    masked = MASKING.get("single_positive")(full.astype(float), np.random.RandomState(1))
    observed = masked == 1
    hidden = ~observed
    shuffled = full.copy()
    shuffled[hidden] = rng.permutation(full[hidden])
    assert (shuffled != full).any()
    settings = DiagnosticSettings(calibration="platt")
    written = []
    for k, labels in enumerate((full, shuffled)):
        split = SplitLabels(np.arange(len(labels)), labels.astype(np.float32), np.ones_like(labels))
        val = masked_targets(split, masked)
        priors = estimate_priors(observed.sum(0), int(observed.any(1).sum()), mean_positives(split))
        predictions = {"probs": probs, "targets": val.targets.astype(np.float32), "known": val.known}
        fit_operating_points(
            predictions,
            list("abcd"),
            settings,
            tmp_path / f"{k}.json",
            "step-1",
            priors=ClassPriors(priors, {}, "estimated"),
        )
        written.append((tmp_path / f"{k}.json").read_bytes())
    assert written[0] == written[1]
    assert json.loads(written[0])["calibration"]["fitted_on"].startswith(
        "val split's observed positives and class priors"
    )


def test_eval_temperature_names_its_successor_and_saved_runs_keep_their_meaning():
    with pytest.raises(ConfigError, match="eval.calibration"):
        load_config([], ["eval.temperature=per_class"])
    upgraded = upgrade_saved_config({"eval": {"temperature": "per_class"}})
    assert upgraded["eval"] == {"calibration": "temperature"}
    assert upgrade_saved_config({"eval": {"temperature": "none"}})["eval"] == {"calibration": "none"}


def test_best_metric_auto_follows_the_val_labels():
    from spml.factories.evaluation import best_metric

    assert best_metric(load_config([], [])) == "val/mAP"
    assert best_metric(load_config([], ["data.mask_val=true"])) == "val/observed_auroc"
    with pytest.raises(ConfigError, match="data.mask_val"):
        best_metric(load_config([], ["train.best_metric=val/observed_auroc"]))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_mask_val_run_calibrates_and_thresholds_from_priors(tiny_config):
    """data.mask_val=true end to end: the best checkpoint by val/observed_auroc, calibration and thresholds from the
    observed val positives and the priors (one given, the others estimated), all named in the run's records."""
    from spml.factories import build_trainer

    config = tiny_config(
        "spml",
        "data.mask_val=true",
        "spml.objective=loss",
        "loss.name=em",
        "train.epochs=1",
        "data.mask_no_positive=keep",
        "data.class_priors={Effusion: 0.2}",
    )
    trainer = build_trainer(config)
    try:
        trainer.fit()
    finally:
        trainer.accelerator.end_training()
    out = Path(config.train.out)
    record = json.loads((out / "thresholds.json").read_text())
    assert record["calibration"]["fitted_on"].startswith("val split's observed positives and class priors")
    assert record["priors"]["source"]["Effusion"] == "given" and record["priors"]["values"]["Effusion"] == 0.2
    assert record["priors"]["source"]["Mass"] == "estimated" and "k x the class's share" in record["priors"]["how"]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["best_metric"] == "val/observed_auroc" and metrics["class_priors"] == record["priors"]
    assert "positive-unlabelled" in metrics["probabilities"] and np.isfinite(metrics["ece_calibrated"])
    assert "val/observed_auroc" in (out / "log.csv").read_text()
