"""tools/fetch_weights.py and tools/make_prototypes.py --encoder <hub name>, with no network: what a pre-filled
cache gives, what an empty one says offline, and the environment printed for compute nodes."""

import importlib.util

import numpy as np
import pytest

from spml.models.weights import sha256
from tests.conftest import REPO
from tests.weights_cache import (
    block_network,
    fill_hf_cache,
    isolate_caches,
    random_pretrained,
)


def tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_fetch_reports_cached_weights_of_configs_and_names_and_the_offline_environment(tmp_path, monkeypatch, capsys):
    hf_home = isolate_caches(monkeypatch, tmp_path, offline=False)
    attempts = block_network(monkeypatch)
    snapshot = fill_hf_cache(hf_home, "timm/resnet10t.c3_in1k", {"model.safetensors": random_pretrained("resnet10t")})
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  backbone: resnet10t\n  pretrained: imagenet\n")
    assert tool("fetch_weights")([str(config), "resnet10t.c3_in1k", str(REPO / "configs/quickstart.yaml")]) == 0
    out = capsys.readouterr().out
    assert [line.startswith("weights: ") for line in out.splitlines()].count(True) == 1  # one file, listed once
    assert sha256(snapshot / "model.safetensors")[:16] in out
    assert f"export HF_HOME={hf_home}" in out and "export HF_HUB_OFFLINE=1" in out
    assert f"export TORCH_HOME={tmp_path / 'torch'}" in out and attempts == []


def test_fetch_offline_without_cache_names_weights_folder_and_command(tmp_path, monkeypatch, capsys):
    hf_home = isolate_caches(monkeypatch, tmp_path, offline=True)
    block_network(monkeypatch)
    assert tool("fetch_weights")(["densenet121.tv_in1k"]) == 2
    err = capsys.readouterr().err
    assert "densenet121.tv_in1k" in err and str(hf_home / "hub") in err and "tools/fetch_weights.py" in err


def tiny_bert(folder):
    """A random 8-wide BERT with its word-piece vocabulary, saved as transformers saves models."""
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "edema", "mass", "chest", "x", "-", "ray", "showing"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def test_make_prototypes_reads_a_hub_encoder_from_the_cache_offline(tmp_path, monkeypatch):
    from spml.models.text_prototypes import class_texts, encode_texts

    local = tiny_bert(tmp_path / "tiny-bert")
    hf_home = isolate_caches(monkeypatch, tmp_path, offline=True)
    attempts = block_network(monkeypatch)
    fill_hf_cache(hf_home, "lab/tiny-bert", {path.name: path for path in local.iterdir()})
    out = tmp_path / "p.npy"
    assert (
        tool("make_prototypes")(
            [
                "--out",
                str(out),
                "--classes",
                "Edema,Mass",
                "--encoder",
                "lab/tiny-bert",
                "--template",
                "chest x-ray showing {}",
            ]
        )
        == 0
    )
    expected = encode_texts(class_texts(["Edema", "Mass"], "chest x-ray showing {}"), local)
    np.testing.assert_array_equal(np.load(out), expected)
    assert attempts == []
    assert tool("make_prototypes")(["--out", str(out), "--classes", "Edema", "--encoder", "lab/other-bert"]) == 2
