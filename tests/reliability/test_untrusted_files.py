"""Untrusted files: checkpoints and pretrained weights whose pickle would run code are refused without running
it (torch.load weights_only=True), as are truncated or foreign ones; YAML python tags are refused (safe_load)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from spml.config import load_config
from spml.engine import checkpoint as ckpt
from tests.reliability.conftest import error_line, load_tool, tiny_run_args


class Payload:
    """Unpickling this calls os.system(command): what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def marker(tmp_path):
    """A file the payloads would create; it must never exist."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload ran"


@pytest.fixture
def run_copy(reference_run, tmp_path):
    """A copy of the finished reference run and its latest checkpoint folder."""
    copy = tmp_path / "run"
    shutil.copytree(reference_run, copy)
    return copy, ckpt.read_pointer(copy / "checkpoints")


def evil(marker) -> dict:
    return {"format": ckpt.FORMAT, "objective": Payload(f"touch {marker}")}


def test_the_payload_is_real(marker, tmp_path):
    """Loaded without weights_only, the crafted file does run its command (so the refusals below mean something)."""
    torch.save(evil(marker), tmp_path / "state.pt")
    torch.load(tmp_path / "state.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()


# file in the latest checkpoint folder -> (its new content, fragment of the refusal)
TAMPERED = {
    "state.pt with a code payload": ("state.pt", lambda m, f: torch.save(evil(m), f), "refusing checkpoint file"),
    "rng-0.pt with a code payload": (
        "rng-0.pt",
        lambda m, f: torch.save({"torch": Payload(f"touch {m}")}, f),
        "refusing checkpoint file",
    ),
    "truncated state.pt": (
        "state.pt",
        lambda m, f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
        "not a complete plain-tensor checkpoint",
    ),
    "foreign state.pt": (
        "state.pt",
        lambda m, f: torch.save({"weights": torch.zeros(3)}, f),
        "is not an spml checkpoint",
    ),
}


@pytest.mark.parametrize(
    "tool, case",
    [
        (tool, case)
        for tool in ("train --resume", "evaluate")
        for case in TAMPERED
        if tool == "train --resume" or "rng" not in case
    ],
)  # (evaluation reads no RNG)
def test_a_tampered_checkpoint_is_refused(cli, run_copy, marker, case, tool):
    run, latest = run_copy
    name, tamper, fragment = TAMPERED[case]
    tamper(marker, latest / name)
    argv = ["--resume", str(run)] if tool == "train --resume" else [str(run), "--out", str(run / "again")]
    code, _, err = cli(tool.split()[0], *argv)
    assert code == 2, err
    assert fragment in error_line(err) and name in error_line(err)


def test_a_pretrained_file_with_a_code_payload_is_refused(cli, marker, tmp_path):
    weights = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": Payload(f"touch {marker}")}, weights)
    code, _, err = cli("train", *tiny_run_args(tmp_path / "run", f"model.pretrained={weights}"))
    assert code == 2 and "model.pretrained: refusing" in error_line(err) and "resnet.pth" in error_line(err)


def test_a_corrupt_safetensors_file_is_refused(cli, tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\xff" * 64)
    code, _, err = cli("train", *tiny_run_args(tmp_path / "run", f"model.pretrained={weights}"))
    assert code == 2 and "model.pretrained: refusing" in error_line(err)


PYTHON_TAGS = {
    "object/apply": "train:\n  epochs: !!python/object/apply:os.system ['touch {marker}']\n",
    "name": "train:\n  out: !!python/name:os.system\n",
    "object/new": "model: !!python/object/new:subprocess.Popen [['touch', '{marker}']]\n",
    "module": "x: !!python/module:os\n",
}


@pytest.mark.parametrize("tag", list(PYTHON_TAGS))
def test_yaml_python_tags_are_refused(cli, marker, tmp_path, tag):
    config = tmp_path / "evil.yaml"
    config.write_text(PYTHON_TAGS[tag].format(marker=marker))
    code, _, err = cli("train", "--config", str(config), *tiny_run_args(tmp_path / "run"))
    assert code == 2 and "not valid (safe) YAML" in error_line(err) and "evil.yaml" in error_line(err)


def test_a_python_tag_in_a_resumed_runs_config_is_refused(cli, run_copy, marker):
    run, _ = run_copy
    (run / "config.yaml").write_text(PYTHON_TAGS["object/apply"].format(marker=marker))
    code, _, err = cli("train", "--resume", str(run))
    assert code == 2 and "not valid (safe) YAML" in error_line(err)


def test_a_python_tag_in_an_override_is_only_text(marker):
    tag = f"!!python/object/apply:os.system ['touch {marker}']"
    assert load_config([], [f"data.root={tag}"]).data.root == tag


def test_yaml_alias_bomb_is_refused_quickly(cli, tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10**9 leaves if expanded
    config = tmp_path / "bomb.yaml"
    config.write_text("data:\n  mask_params:\n" + "".join(f"    {line}\n" for line in lines))
    code, _, err = cli("train", "--config", str(config), *tiny_run_args(tmp_path / "run"))
    assert code == 2 and "YAML aliases" in error_line(err) and "bomb.yaml" in error_line(err)


def test_yaml_alias_bomb_in_an_override_is_refused_quickly(cli, tmp_path):
    nested = "&a0 [x, x, x, x, x, x, x, x, x, x]"
    for i in range(1, 9):
        nested = f"[{nested}, &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]]"
    code, _, err = cli("train", *tiny_run_args(tmp_path / "run"), f"data.mask_params={{bomb: {nested}}}")
    assert code == 2 and "YAML aliases" in error_line(err)


@pytest.mark.parametrize("edited", ["model.json", "data_stats.json"])
def test_weights_of_another_class_count_are_a_message_naming_both_files(cli, tools, reference_run, tmp_path, edited):
    """Found before: a `size mismatch` traceback from load_state_dict (an exported model.json edited to another
    number of classes; a run folder whose checkpoint was trained on other classes)."""
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    if edited == "model.json":
        tools.export = getattr(tools, "export", None) or load_tool("export")
        code, _, err = cli("export", str(run), "--out", str(tmp_path / "export"))
        assert code == 0, err
        folder, weights, listed = (
            tmp_path / "export",
            tmp_path / "export" / "model.safetensors",
            tmp_path / "export" / "model.json",
        )
    else:
        folder, listed = run, run / "data_stats.json"
        weights = ckpt.read_pointer(run / "checkpoints") / "state.pt"
    spec = json.loads(listed.read_text())
    spec["classes"] = spec["classes"][:-1]
    listed.write_text(json.dumps(spec))
    image = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(image)
    code, _, err = cli("predict", str(folder), str(image), "--out", str(tmp_path / "p.csv"))
    line = error_line(err)
    assert (
        code == 2
        and f"{weights} holds a classifier of {len(spec['classes']) + 1} classes, but {listed} "
        f"lists {len(spec['classes'])}: {spec['classes']}"
        in line
    ), line
