"""The model artefact: tools/export.py writes the trained classifier alone; spml.load_model rebuilds it (from the
export or the run folder) with the logits the run's own evaluation scored; TorchScript equals eager."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spml.augment import tta_predict
from spml.config import load_config
from spml.data.loader import make_eval_loader
from spml.engine.callbacks import FinalEvaluation
from spml.evaluation.scoring import predict_split
from spml.factories import build_classifier, build_trainer, load_model
from spml.utils.io import write_json_atomic
from tests.conftest import REPO


def tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny MPC run that kept an evaluation EMA, its trainer and the model its evaluation scored."""
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("export") / "run"
    config = load_config([], [*TINY, "train.epochs=1", "model.ema_decay=0.9", f"train.out={out}"], mode="spml")
    trainer = build_trainer(config)
    try:
        trainer.fit()
    finally:
        trainer.accelerator.end_training()
    return out, trainer, trainer.callback(FinalEvaluation).model


def test_export_and_load_give_the_logits_the_run_was_evaluated_with(trained, tmp_path):
    run, trainer, evaluated = trained
    assert tool("export")([str(run), "--out", str(tmp_path / "model"), "--torchscript"]) == 0
    spec = json.loads((tmp_path / "model" / "model.json").read_text())
    assert spec["source"]["weights"] == "ema" and spec["classes"] == list(evaluated.classes)
    assert (
        spec["backbone"]["name"] == "test_efficientnet"
        and spec["image_size"] == 32
        and spec["data"] == {"size": 32, "intensity": "auto", "intensity_percentiles": [0.5, 99.5]}
    )
    exported, from_run = load_model(tmp_path / "model"), load_model(run)
    assert not exported.training and exported.classes == evaluated.classes and exported.image_size == 32
    images = next(iter(make_eval_loader(trainer.callback(FinalEvaluation).loader.dataset, 16)))["image"]
    with torch.no_grad():
        reference = evaluated.eval()(images)
        assert torch.equal(exported(images), reference) and torch.equal(from_run(images), reference)
        assert torch.equal(exported(images.float() / 255), reference)  # float images in [0, 1] too
    raw = trainer.model.classifier.state_dict()
    assert not all(torch.equal(raw[k], v) for k, v in exported.classifier.state_dict().items())  # EMA, not raw


def test_the_exported_predictions_score_like_the_runs_evaluation(trained):
    run, trainer, evaluated = trained
    final = trainer.callback(FinalEvaluation)
    predictions = predict_split(load_model(run), final.loader, trainer.accelerator)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    from spml.evaluation.scoring import evaluate_split

    result, _, _ = evaluate_split(predictions, final.frame, final.classes)
    assert result.summary["mAP"] == metrics["mAP"] and result.summary["mean_auroc"] == metrics["mean_auroc"]


def test_torchscript_equals_eager(trained, tmp_path):
    run, _, _ = trained
    tool("export")([str(run), "--out", str(tmp_path), "--torchscript"])
    eager, scripted = load_model(tmp_path), torch.jit.load(str(tmp_path / "model.torchscript.pt"))
    images = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, traced = eager(images), scripted(images)
    assert traced.dtype == torch.float32 and traced.shape == (5, 10)
    assert torch.allclose(traced, expected, atol=1e-5)


def test_tta_option(trained):
    run, _, _ = trained
    model = load_model(run, tta=True)
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tta_predict(
            lambda x: model.classifier(x).float(), images.float() / 255, model.tta_views, model.tta_average
        )
        assert torch.allclose(model(images), expected) and model.tta_views == ("identity", "hflip", "scale_up", "shift")
        model.tta = False
        assert not torch.allclose(model(images), expected)


def test_predict_reads_an_exported_model_like_its_run(trained, tmp_path):
    run, _, _ = trained
    tool("export")([str(run), "--out", str(tmp_path / "model")])
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)).save(image)
    for source, csv in ((run, "a.csv"), (tmp_path / "model", "b.csv")):
        assert tool("predict")([str(source), str(image), "--out", str(tmp_path / csv)]) == 0
    assert pd.read_csv(tmp_path / "a.csv").equals(pd.read_csv(tmp_path / "b.csv"))


def test_calibrated_probabilities_round_trip_through_export_and_load_model(trained, tmp_path):
    """load_model(calibrated=True) gives the run's calibrated probabilities from the run folder and from the export
    alike: sigmoid of the logits through the calibrator that thresholds.json records as JSON numbers."""
    run, _, _ = trained
    tool("export")([str(run), "--out", str(tmp_path / "model")])
    record = json.loads((tmp_path / "model" / "thresholds.json").read_text())  # plain JSON, no pickle
    assert record["calibration"]["format"] == "spml-calibrator-1" and len(record["calibration"]["maps"]) == 10
    images = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    exported, from_run = load_model(tmp_path / "model", calibrated=True), load_model(run, calibrated=True)
    from spml.evaluation.calibrators import Calibrator

    calibrator = Calibrator.from_json(record["calibration"])
    with torch.no_grad():
        expected = calibrator.apply(torch.sigmoid(load_model(run)(images)).numpy())
        assert np.allclose(exported(images).numpy(), expected, atol=1e-6)
        assert torch.equal(exported(images), from_run(images))
    assert exported.classes == from_run.classes and np.array_equal(
        exported.thresholds, from_run.thresholds, equal_nan=True
    )
    with pytest.raises(ValueError, match="TTA views"):  # the calibration belongs to the predictions it was fitted on
        load_model(run, tta=True, calibrated=True)
    (tmp_path / "model" / "thresholds.json").unlink()
    with pytest.raises(FileNotFoundError, match="calibrated=True"):
        load_model(tmp_path / "model", calibrated=True)


def test_a_damaged_or_missing_model_is_refused(trained, tmp_path, capsys):
    run, _, _ = trained
    tool("export")([str(run), "--out", str(tmp_path / "model")])
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="refusing .*model.safetensors"):
        load_model(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="neither an exported model"):
        load_model(tmp_path)
    assert tool("export")([str(tmp_path / "nothing")]) == 2 and "not a run folder" in capsys.readouterr().err


def test_a_run_folder_from_before_the_trainer_callbacks_is_exported_but_not_resumed(tmp_path, capsys):
    """Format-1 checkpoints held the evaluation EMA inside the objective (eval_ema.module.*), and the run folder's
    config.yaml used the keys of that time (tests/fixtures/run_config_before_issue14.yaml)."""
    run = tmp_path / "old"
    (run / "checkpoints" / "step-0000010").mkdir(parents=True)
    (run / "config.yaml").write_text((REPO / "tests/fixtures/run_config_before_issue14.yaml").read_text())
    config = load_config(run_dir=run, overrides=[f"train.out={run}"])
    classes = [f"c{i}" for i in range(10)]
    write_json_atomic(
        run / "data_stats.json",
        {
            "classes": classes,
            "num_images": 10,
            "pos_counts": [1] * 10,
            "class_prior": [0.1] * 10,
            "expected_positives": 1.0,
        },
    )
    torch.manual_seed(0)
    model, average = build_classifier(config, 10), build_classifier(config, 10)
    state = {
        **{f"classifier.{k}": v for k, v in model.state_dict().items()},
        **{f"eval_ema.module.{k}": v for k, v in average.state_dict().items()},
        "micro_step": torch.tensor(10),
    }
    torch.save(
        {
            "format": "spml-checkpoint-1",
            "objective": state,
            "optimizer": {},
            "scheduler": {},
            "progress": {
                "epoch": 0,
                "batch_in_epoch": 10,
                "global_step": 10,
                "updates": 10,
                "best_value": -1.0,
                "best_epoch": -1,
            },
        },
        run / "checkpoints/step-0000010/state.pt",
    )
    write_json_atomic(run / "checkpoints" / "latest.json", {"dir": "step-0000010", "step": 10})
    loaded = load_model(run)
    assert loaded.metadata["source"]["weights"] == "ema"
    assert all(torch.equal(v, average.state_dict()[k]) for k, v in loaded.classifier.state_dict().items())
    assert loaded.classes == tuple(classes) and loaded.image_size == 64
    assert tool("train")(["--resume", str(run)]) == 2
    assert "format 'spml-checkpoint-1'" in capsys.readouterr().err
