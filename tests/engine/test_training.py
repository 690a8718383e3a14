"""End to end through the accelerate loop: both modes, checkpoints, exact resume, tools."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spml.config import load_config
from spml.engine import checkpoint as ckpt
from spml.engine.callbacks import Callback
from spml.engine.trainer import NonFiniteLossError
from spml.factories import build_trainer, load_model
from tests.conftest import REPO


def run(config):
    trainer = build_trainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.accelerator.end_training()


@pytest.mark.parametrize(
    "mode, extra",
    [
        ("supervised", ["loss.name=zlpr"]),
        ("spml", []),
        ("supervised", ["supervised.objective=consistency"]),
        ("spml", ["spml.objective=loss", "loss.name=ll_r", "model.head=boostlu"]),
    ],
)
def test_a_run_writes_everything(tiny_config, tmp_path, mode, extra):
    summary = run(tiny_config(mode, *extra))
    out = tmp_path / "run"
    assert 0.0 <= summary["mAP"] <= 1.0
    for name in (
        "config.yaml",
        "log.csv",
        "data_stats.json",
        "checkpoints/latest.json",
        "checkpoints/best.json",
        "eval/metrics.json",
        "eval/per_class.csv",
        "eval/roc.png",
        "eval/pr.png",
    ):
        assert (out / name).exists(), name
    log = pd.read_csv(out / "log.csv")
    assert {"train/loss", "val/mAP", "train/images_per_s"} <= set(log["name"])
    if mode == "spml" and not extra:
        assert {"train/ipc", "train/fpc", "train/btc", "pseudo/precision"} <= set(log["name"])
    if "supervised.objective=consistency" in extra:
        assert {"train/sup", "train/strong"} <= set(log["name"])


def test_resume_mid_epoch_reaches_identical_metrics(tiny_config, tmp_path):
    trainer = build_trainer(tiny_config("spml", f"train.out={tmp_path / 'straight'}"))
    steps = trainer.steps_per_epoch
    assert steps >= 4
    straight = trainer.fit()
    # stop mid-way through the second epoch, as a killed run leaves it (last checkpoint at that step)
    stop_at = steps + steps // 2
    run(tiny_config("spml", f"train.out={tmp_path / 'killed'}", f"train.max_steps={stop_at}"))
    resumed_config = load_config(run_dir=tmp_path / "killed", overrides=["train.max_steps=0"])
    trainer = build_trainer(resumed_config)
    trainer.resume(tmp_path / "killed")
    assert trainer.progress.global_step == stop_at and trainer.progress.batch_in_epoch == steps // 2
    resumed = trainer.fit()
    trainer.accelerator.end_training()
    assert resumed["mAP"] == straight["mAP"] and resumed["mean_auroc"] == straight["mean_auroc"]


class InterruptAt(Callback):
    """Asks for an interrupting stop (as a stop signal does) after global step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, batch, out):
        if trainer.progress.global_step == self.step:
            trainer.request_stop("test interrupt", interrupt=True)


def test_an_interrupt_at_an_epochs_last_step_resumes_into_that_epochs_end(tiny_config, tmp_path):
    """The interrupted epoch's validation is left to the resumed run (whose checkpoint then sits at that epoch's
    end), so best/early stopping and the log come out as in an uninterrupted run; no final evaluation is written."""
    trainer = build_trainer(tiny_config("spml", f"train.out={tmp_path / 'straight'}"))
    straight = trainer.fit()
    steps = trainer.steps_per_epoch
    stopped = tmp_path / "stopped"
    trainer = build_trainer(tiny_config("spml", f"train.out={stopped}"), callbacks=[InterruptAt(steps)])
    assert trainer.fit() == {} and trainer.interrupted and not (stopped / "eval").exists()
    state, _ = ckpt.load_state(ckpt.read_pointer(stopped / "checkpoints"))
    assert state["progress"] == {"epoch": 0, "batch_in_epoch": steps, "global_step": steps, "updates": steps}
    assert "val/mAP" not in set(pd.read_csv(stopped / "log.csv")["name"])
    trainer = build_trainer(load_config(run_dir=stopped), resume=True)
    trainer.resume(stopped)
    resumed = trainer.fit()
    trainer.accelerator.end_training()
    assert (resumed["mAP"], resumed["mean_auroc"]) == (straight["mAP"], straight["mean_auroc"])
    assert (
        ckpt.read_pointer(stopped / "checkpoints", "best").name
        == ckpt.read_pointer(tmp_path / "straight" / "checkpoints", "best").name
    )
    logged = [
        pd.read_csv(run / "log.csv").query("name != 'train/images_per_s'").reset_index(drop=True)
        for run in (stopped, tmp_path / "straight")
    ]
    pd.testing.assert_frame_equal(*logged)


def test_nonfinite_loss_stops_naming_step_and_components(tiny_config, tmp_path):
    config = tiny_config("supervised", "optim.lr=1e30", "optim.grad_clip=0", "train.log_every=2")
    with pytest.raises(NonFiniteLossError, match=r"step \d+ .*sup="):
        run(config)


def test_tools_train_evaluate_predict(tmp_path):
    from tests.conftest import TINY

    out = tmp_path / "cli"
    cmd = [sys.executable, str(REPO / "tools/train.py"), "--mode", "spml", *TINY, "train.epochs=1", f"train.out={out}"]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True)
    subprocess.run(
        [sys.executable, str(REPO / "tools/evaluate.py"), str(out), "--tta"],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    metrics = json.loads((out / "eval-tta" / "metrics.json").read_text())
    assert 0 <= metrics["mAP"] <= 1
    images = []
    for i, mode in enumerate(["L", "RGB", "RGBA"]):
        images.append(tmp_path / f"image{i}.png")
        pixels = np.random.default_rng(i).integers(0, 255, (48, 40, len(mode)), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels).save(images[-1])
    subprocess.run(
        [sys.executable, str(REPO / "tools/predict.py"), str(out), *map(str, images), "--out", str(tmp_path / "p.csv")],
        check=True,
        capture_output=True,
    )
    predictions = pd.read_csv(tmp_path / "p.csv")
    decisions = [c for c in predictions.columns if c.endswith("_decision")]
    probabilities = [c for c in predictions.columns[1:] if c not in decisions]
    assert len(predictions) == 3 and predictions[probabilities].apply(lambda c: c.between(0, 1)).all().all()
    assert len(decisions) == len(probabilities) and predictions[decisions].isin([0, 1]).sum().sum() > 0

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)  # the folder holds that run now
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    log_lines = (out / "log.csv").read_text().count("\n")
    subprocess.run([*cmd, "--overwrite"], check=True, cwd=tmp_path, capture_output=True)
    assert (out / "log.csv").read_text().count("\n") == log_lines  # started over: one run's log, not two
    assert not (out / "eval-tta").exists()


def test_bad_override_is_a_usage_error_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/train.py"), "data.size=huge"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "data.size" in proc.stderr and "Traceback" not in proc.stderr


def test_a_finished_run_loads_without_its_initial_prototype_file(tiny_config, tmp_path):
    prototypes = tmp_path / "prototypes.npy"
    np.save(prototypes, np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32))
    run(
        tiny_config(
            "supervised",
            "model.head=prototype",
            "model.embedding_dim=16",
            f"model.prototypes={prototypes}",
            "loss.name=metric",
            "train.max_steps=2",
        )
    )
    prototypes.unlink()  # moved or deleted after training: the checkpoint holds the trained prototypes
    model = load_model(tmp_path / "run")
    assert model.metadata["head"]["args"]["prototypes"] == ""
    state, _ = ckpt.load_state(ckpt.read_pointer(tmp_path / "run" / "checkpoints", "latest"))
    saved = next(value for key, value in state["objective"].items() if key.endswith("head.prototypes"))
    assert torch.equal(model.classifier.head.prototypes.detach(), saved)
