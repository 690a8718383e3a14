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
from spml.engine.callbacks import Callback, Validation
from spml.engine.loader import make_eval_loader
from spml.evaluation.scoring import predict_split

RECORD = "epochs.npz"


class EpochPredictions(Callback):
    """After every completed epoch: the probabilities of the evaluated weights (the Validation callback's model) on
    the val and test loaders, kept in memory (`val`, `test`: lists of (N, C) float32 arrays, one per epoch)."""

    def __init__(self, test_dataset, batch_size: int):
        self.test_dataset, self.batch_size = test_dataset, batch_size
        self.val: list[np.ndarray] = []
        self.test: list[np.ndarray] = []

    def on_epoch_end(self, trainer, completed: bool) -> None:
        if not completed:
            return
        validation = trainer.callback(Validation)
        loader = make_eval_loader(self.test_dataset, self.batch_size, 0)
        self.val.append(predict_split(validation.model, validation.loader, trainer.accelerator)["probs"])
        self.test.append(predict_split(validation.model, loader, trainer.accelerator)["probs"])


def record_training(config: Config, out: str | Path) -> Path:
    """Train `config` (data.mask_val must be false: the val split keeps its full labels) and write <out>/epochs.npz:
    val_probs (E, N, C), test_probs (E, M, C), val_targets / val_known (full labels), val_observed (the
    single positives data.mask_val=true gives the same rows), test_targets / test_known, train_observed (the train
    split's observed positives, (T, C)), expected_positives (the run's k) and classes."""
    from spml.data.build import build_data
    from spml.factories import build_trainer

    if config.data.mask_val:
        raise ValueError("record_training trains with the full val labels (data.mask_val=false); the masked val "
                         "split is built beside it")
    masked = build_data(dataclasses.replace(config, data=dataclasses.replace(config.data, mask_val=True)))
    bundle = build_data(config)  # both before build_trainer, which seeds every generator
    if not np.array_equal(masked.frames["val"]["path"].to_numpy(), bundle.frames["val"]["path"].to_numpy()):
        raise ValueError("data.mask_val=true changes the val rows (data.mask_no_positive=drop?): the protocols would "
                         "not score the same images; use data.mask_no_positive=keep")
    recorder = EpochPredictions(bundle.test, config.data.eval_batch_size)
    trainer = build_trainer(config, callbacks=[recorder])
    trainer.fit()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORD
    np.savez_compressed(path, val_probs=np.stack(recorder.val), test_probs=np.stack(recorder.test),
                        val_targets=bundle.val.targets.numpy(), val_known=bundle.val.known.numpy(),
                        val_observed=masked.val.targets.numpy() > 0.5,
                        test_targets=bundle.test.targets.numpy(), test_known=bundle.test.known.numpy(),
                        train_observed=bundle.train.observed.numpy(),
                        expected_positives=np.float64(bundle.expected_positives),
                        classes=np.asarray(bundle.classes))
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def study_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)
