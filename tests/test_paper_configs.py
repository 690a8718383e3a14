"""Every configs/papers/*.yaml builds and trains one step on a tiny dataset of its real file format.

The paper's backbone is swapped for a timm test model of the same family and images are 32 px; everything
else (dataset reader, official/stratified split, mode, head, loss, TTA, study-level and competition-label
evaluation) runs as configured.
"""

import json

import numpy as np
import pandas as pd
import pytest
import timm

from spml.config import load_config
from spml.factories import build_trainer
from spml.factories.data import build_data
from tests.conftest import REPO
from tests.cxr_files import COMPETITION, WRITERS

PAPERS = sorted((REPO / "configs" / "papers").glob("*.yaml"))
OVERLAYS = {"chexpert_competition_eval.yaml": ["configs/datasets/chexpert.yaml"]}  # not a run on its own
TINY_BACKBONES = {"convnext": "test_convnext", "efficientnet": "test_efficientnet"}  # others: test_resnet
TINY = [
    "data.size=32",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "data.num_workers=0",
    "train.epochs=1",
    "train.max_steps=1",
    "train.log_every=1",
    "eval.bootstrap=0",
    "augment.elastic.kernel_size=7",
    "spml.mpc.memory_size=64",
    "spml.mpc.bt_dim_feedforward=64",
]


@pytest.fixture(scope="module")
def dataset_roots(tmp_path_factory):
    return {name: write(tmp_path_factory.mktemp(name)) for name, write in WRITERS.items()}


def test_there_is_one_config_per_paper_setting():
    names = {path.stem for path in PAPERS}
    assert {
        "chexpert_mpc",
        "mimic_mpc",
        "nih_densenet121_fzlpr_tta",
        "nih_convnext_metric",
        "nih_msml_bilinear",
        "nih_efficientnet_mlp_bce",
        "chexpert_competition_eval",
    } <= names
    for path in PAPERS:
        header = path.read_text().split("\n", 12)
        assert header[0].startswith("# ") and any("Reported" in line or "Reference" in line for line in header), path


PAPER_WEIGHTS = {
    "chexpert_mpc": "resnet50.a1_in1k",
    "mimic_mpc": "resnet50.a1_in1k",  # an ImageNet CNN (MPC)
    "nih_densenet121_fzlpr_tta": "densenet121.tv_in1k",
    "nih_convnext_metric": "convnext_tiny.fb_in1k",
    "nih_efficientnet_mlp_bce": "efficientnet_b0.ra_in1k",
    "nih_msml_bilinear": "resnet50.tv_in1k",
}


def test_every_paper_config_names_its_papers_imagenet_weights_and_their_normalisation():
    """Resolved offline (timm's registry): the architecture's ImageNet weights, normalisation from the weights; the
    quick start stays random init."""
    from spml.models.weights import parse_weights

    for path in PAPERS:
        if path.name in OVERLAYS:
            continue
        config = load_config([path])
        spec = parse_weights(config.model.backbone, config.model.pretrained)
        assert spec.source == "timm" and spec.tag == PAPER_WEIGHTS[path.stem], path
        assert config.augment.normalize == "weights" and "Weights:" in path.read_text(), path
    assert load_config([REPO / "configs/papers/nih_convnext_metric.yaml"]).model.embedding_dim == 768  # BioBERT
    assert load_config([REPO / "configs" / "quickstart.yaml"]).model.pretrained == ""


@pytest.mark.parametrize("path", PAPERS, ids=[path.stem for path in PAPERS])
def test_paper_config_trains_one_step(path, dataset_roots, tmp_path):
    files = [REPO / extra for extra in OVERLAYS.get(path.name, [])] + [path]
    config = load_config(files)
    assert timm.is_model(config.model.backbone), config.model.backbone
    tiny = next((tiny for family, tiny in TINY_BACKBONES.items() if family in config.model.backbone), "test_resnet")
    # the paper's weights (and prototype file) are not here: the test model trains from random init
    config = load_config(
        files,
        [
            f"data.root={dataset_roots[config.data.dataset]}",
            f"model.backbone={tiny}",
            *TINY,
            "model.pretrained=",
            "model.prototypes=",
            f"train.out={tmp_path / 'run'}",
        ],
    )
    trainer = build_trainer(config)
    try:
        trainer.fit()
    finally:
        trainer.accelerator.end_training()
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    loss = log.loc[log["name"] == "train/loss", "value"].to_numpy()
    assert len(loss) == 1 and np.isfinite(loss).all()
    folders = ["eval", "eval-tta"] if config.eval.tta else ["eval"]
    bundle = build_data(config)
    for folder in folders:
        metrics = json.loads((tmp_path / "run" / folder / "metrics.json").read_text())
        per_class = pd.read_csv(tmp_path / "run" / folder / "per_class.csv")
        assert tuple(per_class["class"]) == (config.eval.classes or bundle.classes)
        assert metrics["level"] == (f"study:{config.eval.study_level}" if config.eval.study_level else "image")
        test = bundle.frames["test"]
        assert metrics["n_images"] == (test["study_id"].nunique() if config.eval.study_level else len(test))
    if config.data.dataset == "chexpert":
        assert config.eval.classes == COMPETITION and config.data.split == "official"
