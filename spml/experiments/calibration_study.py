"""The validation-protocol study of issue 24 (docs/results.md, "Probabilities and validation without full labels"):
one training per seed records every epoch's val and test probabilities; three validation protocols are then
replayed on those records, each choosing its checkpoint (epoch), calibration and thresholds on the val split as
it would see it:

* `oracle`: the fully labelled val split (checkpoint by val mAP, calibration and thresholds on the known labels);
* `single positive + priors`: the single-positive val split with data.mask_val=true's procedures (checkpoint by
  the AUROC of the observed positives, prior-based positive-unlabelled calibration and thresholds);
* `assume negative`: the single-positive val split read as today's data.mask_val did (every unobserved entry a
  negative: checkpoint by that val mAP, calibration and thresholds on those labels).

Sharing one training among the protocols is exact when the training reads no val label: the single-loss
objectives (e.g. EM) read only the train split's observed positives and the expected number of positives per image
(taken from the clean val labels under both settings), and data.mask_val does not change the train masking
(spml.data.masking.mask_splits masks each split with its own generator) nor, under data.mask_no_positive=keep, the
val rows. MPC's class_prior thresholds read the val split's prevalence, so MPC would need one training per protocol.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spml.config import Config
from spml.data.loader import make_eval_loader
from spml.engine.callbacks import Callback, Validation
from spml.evaluation.calibration import choose_thresholds, operating_points, reliability
from spml.evaluation.calibrators import brier, fit_calibrator
from spml.evaluation.metrics import evaluate_predictions
from spml.evaluation.positive_unlabeled import choose_pu_thresholds, estimate_priors, fit_pu_calibrator
from spml.evaluation.scoring import predict_split
from spml.factories import build_trainer
from spml.factories.data import build_data

RECORD = "epochs.npz"


class EpochPredictions(Callback):
    """After every completed epoch: the probabilities of the evaluated weights on the val and test loaders.

    The evaluated weights are the Validation callback's model; the probabilities are kept in memory (`val`, `test`:
    lists of (N, C) float32 arrays, one per epoch).

    Args:
        test_dataset: the test split's dataset.
        batch_size: the test loader's batch size.
    """

    def __init__(self, test_dataset, batch_size: int):
        self.test_dataset, self.batch_size = test_dataset, batch_size
        self.val: list[np.ndarray] = []
        self.test: list[np.ndarray] = []

    def on_epoch_end(self, trainer, completed: bool) -> None:
        """Predict the val and test splits when the epoch completed (an interrupted epoch adds nothing).

        Args:
            trainer: the Trainer (its Validation callback's model and loader, its accelerator).
            completed: whether the epoch ran to its end.
        """
        if not completed:
            return
        validation = trainer.callback(Validation)
        loader = make_eval_loader(self.test_dataset, self.batch_size, 0)
        self.val.append(predict_split(validation.model, validation.loader, trainer.accelerator)["probs"])
        self.test.append(predict_split(validation.model, loader, trainer.accelerator)["probs"])


def record_training(config: Config, out: str | Path) -> Path:
    """Train `config` and write <out>/epochs.npz.

    data.mask_val must be false: the val split keeps its full labels. The file holds val_probs (E, N, C),
    test_probs (E, M, C), val_targets / val_known (full labels), val_observed (the single positives data.mask_val=true
    gives the same rows), test_targets / test_known, train_observed (the train split's observed positives, (T, C)),
    expected_positives (the run's k) and classes.

    Args:
        config: the run's config.
        out: the output folder.

    Returns:
        The path of epochs.npz.
    """

    if config.data.mask_val:
        raise ValueError(
            "record_training trains with the full val labels (data.mask_val=false); the masked val "
            "split is built beside it"
        )
    masked = build_data(dataclasses.replace(config, data=dataclasses.replace(config.data, mask_val=True)))
    bundle = build_data(config)  # both before build_trainer, which seeds every generator
    if not np.array_equal(masked.frames["val"]["path"].to_numpy(), bundle.frames["val"]["path"].to_numpy()):
        raise ValueError(
            "data.mask_val=true changes the val rows (data.mask_no_positive=drop?): the protocols would "
            "not score the same images; use data.mask_no_positive=keep"
        )
    recorder = EpochPredictions(bundle.test, config.data.eval_batch_size)
    trainer = build_trainer(config, callbacks=[recorder])
    trainer.fit()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORD
    np.savez_compressed(
        path,
        val_probs=np.stack(recorder.val),
        test_probs=np.stack(recorder.test),
        val_targets=bundle.val.targets.numpy(),
        val_known=bundle.val.known.numpy(),
        val_observed=masked.val.targets.numpy() > 0.5,
        test_targets=bundle.test.targets.numpy(),
        test_known=bundle.test.known.numpy(),
        train_observed=bundle.train.observed.numpy(),
        expected_positives=np.float64(bundle.expected_positives),
        classes=np.asarray(bundle.classes),
    )
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    """A recorded training (record_training's epochs.npz) as a dict of arrays.

    Args:
        path: the epochs.npz file.

    Returns:
        {name: array} of every entry of the file.
    """
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


PROTOCOLS = ("oracle", "single positive + priors", "single positive + audited priors", "assume negative")


def _choose_epoch(
    val_probs: np.ndarray, targets: np.ndarray, known: np.ndarray, classes: list[str], metric: str
) -> int:
    """The epoch (0-based) a protocol's best checkpoint would be: the first with the highest `metric` (mAP or
    mean_auroc) of its val predictions against `targets` / `known`."""
    values = [evaluate_predictions(probs, targets, known, classes).summary[metric] for probs in val_probs]
    return int(np.nanargmax(values))


def replay(
    record: dict[str, Any], protocol: str, method: str, rule: str = "youden", min_positives: int = 10
) -> dict[str, Any]:
    """One protocol on one recorded training, scored on the test split at its chosen epoch.

    Its checkpoint (epoch), calibration (`method`) and thresholds (`rule`) come from the val split as the protocol
    sees it, then the test split's numbers at that epoch: mAP and mean AUROC, macro ECE and Brier score of the raw
    and the calibrated probabilities, the mean over classes of |mean calibrated probability - prevalence|
    (prevalence_gap), macro sensitivity and specificity at the thresholds.

    Protocols: "oracle" (full val labels: checkpoint by val mAP); "single positive + priors" (data.mask_val with
    this change: checkpoint by val/observed_auroc, prior-based calibration and thresholds with estimated priors);
    "single positive + audited priors" (the same with the priors given: the val split's true prevalences, as a
    small audit would give them); "assume negative" (the single-positive val split with every unobserved entry a
    negative, as data.mask_val did before: checkpoint by that val mAP, calibration and thresholds on those labels).

    Args:
        record: the recorded training (read_record).
        protocol: one of PROTOCOLS.
        method: the calibration method (none | temperature | platt | isotonic).
        rule: the threshold rule.
        min_positives: val positives a class needs for its own calibration.

    Returns:
        One row: protocol, calibration, epoch (1-based), test_mAP, test_mean_auroc, ece_raw, ece_calibrated,
        brier_raw, brier_calibrated, prevalence_gap, sensitivity, specificity, fallback_classes.
    """
    classes = [str(c) for c in record["classes"]]
    val_probs, observed = record["val_probs"], record["val_observed"]
    everything = np.ones_like(observed)
    if protocol == "oracle":
        epoch = _choose_epoch(val_probs, record["val_targets"], record["val_known"], classes, "mAP")
        calibrator = fit_calibrator(
            val_probs[epoch], record["val_targets"], record["val_known"], classes, method, min_positives
        )
        thresholds = choose_thresholds(
            calibrator.apply(val_probs[epoch]), record["val_targets"], record["val_known"], rule
        )
    elif protocol.startswith("single positive"):
        epoch = _choose_epoch(val_probs, observed, everything, classes, "mean_auroc")  # val/observed_auroc
        if protocol == "single positive + priors":
            train = record["train_observed"]
            priors = estimate_priors(train.sum(0), int(train.any(1).sum()), float(record["expected_positives"]))
        else:
            full = (record["val_targets"] > 0.5) & record["val_known"]
            priors = np.clip(full.sum(0) / record["val_known"].sum(0), 1e-4, 1 - 1e-4)
        calibrator = fit_pu_calibrator(val_probs[epoch], observed, priors, classes, method, min_positives)
        thresholds = choose_pu_thresholds(calibrator.apply(val_probs[epoch]), observed, priors, rule)
    elif protocol == "assume negative":
        epoch = _choose_epoch(val_probs, observed, everything, classes, "mAP")
        calibrator = fit_calibrator(val_probs[epoch], observed, everything, classes, method, min_positives)
        thresholds = choose_thresholds(calibrator.apply(val_probs[epoch]), observed, everything, rule)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}")
    test, targets, known = record["test_probs"][epoch], record["test_targets"], record["test_known"]
    calibrated = calibrator.apply(test)
    scored = evaluate_predictions(test, targets, known, classes).summary
    points = operating_points(calibrated, targets, known, thresholds, classes)
    prevalence = ((targets > 0.5) & known).sum(0) / known.sum(0)
    return {
        "protocol": protocol,
        "calibration": method,
        "epoch": epoch + 1,
        "test_mAP": scored["mAP"],
        "test_mean_auroc": scored["mean_auroc"],
        "ece_raw": float(reliability(test, targets, known, classes)[1]["ece"].mean()),
        "ece_calibrated": float(reliability(calibrated, targets, known, classes)[1]["ece"].mean()),
        "brier_raw": float(np.nanmean(brier(test, targets, known))),
        "brier_calibrated": float(np.nanmean(brier(calibrated, targets, known))),
        "prevalence_gap": float(np.mean(np.abs(np.where(known, calibrated, 0).sum(0) / known.sum(0) - prevalence))),
        "sensitivity": float(points["sensitivity"].mean()),
        "specificity": float(points["specificity"].mean()),
        "fallback_classes": len(calibrator.fallback),
    }


def evaluate_study(
    out: str | Path,
    schemes: list[str],
    seeds: list[int],
    methods: tuple[str, ...] = ("none", "temperature", "platt", "isotonic"),
) -> pd.DataFrame:
    """Every protocol x calibration method on every recorded training <out>/<scheme>/seed<N>/epochs.npz.

    Args:
        out: the study's folder.
        schemes: the masking schemes (sub-folders).
        seeds: the seeds.
        methods: the calibration methods.

    Returns:
        One row each (replay's numbers plus scheme and seed).
    """
    rows = []
    for scheme in schemes:
        for seed in seeds:
            record = read_record(Path(out) / scheme / f"seed{seed}" / RECORD)
            for protocol in PROTOCOLS:
                for method in methods:
                    rows.append({"scheme": scheme, "seed": seed, **replay(record, protocol, method)})
    return pd.DataFrame(rows)
