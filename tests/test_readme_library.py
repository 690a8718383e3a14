"""The README's "Use spml as a library" blocks run as written (extracted from README.md, so they cannot drift): the
MPC loop on the synthetic set, and the real-dataset variant on the NIH sample at ../shared/data (skipped only when
the sample is absent); every name of spml's public API resolves."""

import re

import pytest
import torch

import spml
from tests.conftest import REPO, SHARED_DATA


def library_block(number: int = 0) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use spml as a library", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[number]


def test_the_readme_library_loop_trains_mpc_without_the_trainer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = library_block()
    assert "spml.MPCObjective(" in code and "Trainer" not in code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    objective, probs, classes = namespace["objective"], namespace["probs"], namespace["classes"]
    assert objective.step == 3 * len(namespace["loader"])  # told the progress, warm-up and ramp over
    assert probs.shape == (len(namespace["batch"]["image"]), len(classes)) and ((probs >= 0) & (probs <= 1)).all()
    assert torch.isfinite(namespace["loss"]) and objective.ramp(1.0) == 1.0


def test_the_readme_real_dataset_block_trains_on_the_nih_sample(monkeypatch):
    if not (SHARED_DATA / "nih1000" / "images").is_dir() or not (SHARED_DATA / "nih").is_dir():
        pytest.skip("the NIH sample is not at ../shared/data")
    monkeypatch.chdir(REPO)  # the block's paths are relative to the repository root
    code = library_block(1)
    assert "spml.read_nih(" in code and "load_config" not in code  # no config on this path
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    table, data = namespace["table"], namespace["data"]
    frame = table.frame
    assert (frame["view"] == "PA").all() and 0 < len(frame) <= 811
    assert sum(len(getattr(data, name)) for name in ("train", "val", "test")) == len(frame)
    train, test = set(data.frames["train"]["patient_id"]), set(data.frames["test"]["patient_id"])
    assert not train & test  # split by patient
    assert namespace["batch"]["image"].shape[1:] == (1, 64, 64) and torch.isfinite(namespace["loss"])


def test_the_public_api_resolves():
    for name in spml.__all__:
        assert getattr(spml, name) is not None, name
    assert callable(spml.load_model) and spml.MPCObjective.__module__ == "spml.objectives.mpc"
