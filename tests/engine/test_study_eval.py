"""Study-level and class-subset evaluation: the aggregation itself, config checks, and the CheXpert
competition evaluation on valid.csv through the trainer and tools/evaluate.py."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from spml.config import ConfigError, EvalConfig, load_config
from spml.evaluation.scoring import evaluation_view
from spml.factories import build_trainer, check_eval_config
from tests.conftest import REPO
from tests.cxr_files import COMPETITION, write_chexpert

CLASSES = ["A", "B", "C"]


def test_evaluation_view_restricts_classes_and_aggregates_each_study_by_index():
    # split rows 0..4 in dataset order (predict_split returns them sorted by index)
    frame = pd.DataFrame({"study_id": ["s1", "s1", "s2", "s3", "s3"]})
    index = np.array([0, 1, 2, 3, 4])
    probs = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.5], [0.7, 0.4, 0.5], [0.2, 0.6, 0.5], [0.8, 0.1, 0.5]])
    targets = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]], float)
    known = np.array(
        [[True, True, True], [False, True, True], [True, True, True], [True, True, True], [True, False, True]]
    )
    predictions = {"probs": probs, "targets": targets, "known": known, "index": index}
    view, classes = evaluation_view(predictions, frame, CLASSES, ("B", "A"), "max")
    assert classes == ["B", "A"]
    np.testing.assert_allclose(view["probs"], [[0.9, 0.3], [0.4, 0.7], [0.6, 0.8]])
    # targets: max over the views where known (s1/A: the positive view is unknown; s3/B: only view 3 is known)
    np.testing.assert_array_equal(view["targets"], [[1, 0], [0, 1], [0, 0]])
    np.testing.assert_array_equal(view["known"], [[True, True], [True, True], [True, True]])
    mean, _ = evaluation_view(predictions, frame, CLASSES, level="mean")
    np.testing.assert_allclose(mean["probs"][:, 0], [0.2, 0.7, 0.5])
    image, image_classes = evaluation_view(predictions, frame, CLASSES)
    assert image_classes == CLASSES and np.array_equal(image["probs"], probs)


def test_evaluation_view_reads_study_ids_through_the_prediction_index():
    frame = pd.DataFrame({"study_id": ["x", "y", "x"]})
    predictions = {
        "probs": np.array([[0.2], [0.9]]),
        "targets": np.array([[0.0], [1.0]]),
        "known": np.ones((2, 1), bool),
        "index": np.array([1, 2]),
    }  # row 0 was not predicted
    view, _ = evaluation_view(predictions, frame, ["A"], level="max")
    np.testing.assert_allclose(view["probs"], [[0.2], [0.9]])  # studies y then x, one view each


def test_eval_config_errors_name_the_key():
    frame = pd.DataFrame({"study_id": ["", "", "s"]})
    with pytest.raises(ConfigError, match="eval.study_level: 'median' is not one of"):
        load_config([], ["eval.study_level=median"])
    with pytest.raises(ValueError, match=r"eval.classes: \['D'\]"):
        check_eval_config(EvalConfig(classes=("A", "D")), CLASSES)
    with pytest.raises(ValueError, match="2 of 3 images have no study id"):
        check_eval_config(EvalConfig(study_level="max"), CLASSES, frame)
    check_eval_config(EvalConfig(), CLASSES, frame)


def test_nih_with_study_level_fails_before_training(tiny_config, tmp_path):
    from tests.cxr_files import write_nih

    root = write_nih(tmp_path / "nih")
    config = tiny_config("supervised", "data.dataset=nih", f"data.root={root}", "eval.study_level=max")
    with pytest.raises(ValueError, match="no study id"):
        build_trainer(config)


def test_chexpert_competition_evaluation_on_valid_csv(tmp_path, capsys):
    root = write_chexpert(tmp_path / "chexpert")
    valid = pd.read_csv(root / "valid.csv")
    frontal = valid[valid["Frontal/Lateral"] == "Frontal"]
    studies = frontal["Path"].str.rsplit("/", n=1).str[0].nunique()
    assert studies < len(frontal)  # some studies have two frontal views
    files = [REPO / "configs/datasets/chexpert.yaml", REPO / "configs/papers/chexpert_competition_eval.yaml"]
    config = load_config(
        files,
        [
            f"data.root={root}",
            "data.size=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "model.backbone=test_resnet",
            "train.epochs=1",
            "train.max_steps=2",
            "eval.bootstrap=20",
            f"train.out={tmp_path / 'run'}",
        ],
        mode="supervised",
    )
    trainer = build_trainer(config)
    try:
        trainer.fit()
    finally:
        trainer.accelerator.end_training()
    run = tmp_path / "run"
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    per_class = pd.read_csv(run / "eval" / "per_class.csv")
    assert tuple(per_class["class"]) == COMPETITION and metrics["n_classes"] == 5
    assert metrics["classes_used"] == list(COMPETITION)  # valid.csv has positive and negative studies for each
    assert metrics["level"] == "study:max" and metrics["n_images"] == studies
    assert (per_class["n_pos"] + per_class["n_neg"] == studies).all()
    assert metrics["bootstrap_valid"] > 0

    evaluate = load_tool("evaluate")
    flags = ["--bootstrap", "0", "--study-level", "image", "--classes", "Edema, Pleural Effusion"]
    assert evaluate([str(run), *flags]) == 0
    image = json.loads((run / "eval-image-2classes" / "metrics.json").read_text())
    assert image["level"] == "image" and image["n_images"] == len(frontal)
    assert image["classes_used"] == ["Edema", "Pleural Effusion"]
    assert evaluate([str(run), "--classes", "Edema,Nodule"]) == 2
    assert "eval.classes: ['Nodule']" in capsys.readouterr().err


def load_tool(name: str):
    """main() of tools/<name>.py, run in this process."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
