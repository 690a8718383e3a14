"""Test helpers for pretrained weights without a network: random timm "pretrained" state dicts, a pre-filled Hugging
Face cache folder, a socket that refuses to connect."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

REVISION = "0" * 40  # the commit a pre-filled cache pretends to hold


def random_pretrained(architecture: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of a random 3-channel, 1000-class timm model: what timm's ImageNet files hold."""
    torch.manual_seed(seed)
    model = timm.create_model(architecture, num_classes=1000, in_chans=3)
    return {key: value.contiguous() for key, value in model.state_dict().items()}


def fill_hf_cache(hf_home: Path, repo: str, files: dict[str, dict[str, torch.Tensor] | str | Path]) -> Path:
    """Write `files` (state dicts as safetensors, strings as text, paths copied) into the hub cache layout under `hf_home`
    (hub/models--org--name/{refs/main, snapshots/<rev>/...}) as huggingface_hub leaves it; returns the snapshot."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(REVISION)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, snapshot / name)
        elif isinstance(content, str):
            (snapshot / name).write_text(content)
        else:
            save_file(content, str(snapshot / name))
    return snapshot


def block_network(monkeypatch) -> list[tuple]:
    """Make every socket connection and name lookup raise; returns the list of attempts (to assert it stays empty
    where no call may happen)."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def isolate_caches(monkeypatch, root: Path, offline: bool) -> Path:
    """HF_HOME and TORCH_HOME inside `root` (empty), HF_HUB_OFFLINE as asked; returns HF_HOME."""
    hf_home = root / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return hf_home
