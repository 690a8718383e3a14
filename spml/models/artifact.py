"""The exported model: `model.safetensors` (the classifier's weights) + `model.json` (what rebuilds it), and an
optional TorchScript file. Plain files, no pickles; reading one needs no config and no dataset.

model.json: format, classes, image_size, in_chans, backbone {Backbone's arguments},
head {name, args}, normalize {mean, std}, tta {views, average}, data {size and any intensity settings of
the run's data.* keys: how images are decoded for it}, source {run, checkpoint, step, weights: ema | model}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from spml.models.backbone import Backbone
from spml.models.classifier import Classifier
from spml.models.heads import build_head
from spml.models.inference import InferenceModel
from spml.utils.io import atomic_path, write_json_atomic

FORMAT = "spml-model-1"
WEIGHTS, SPEC, TORCHSCRIPT = "model.safetensors", "model.json", "model.torchscript.pt"


def classifier_from_spec(spec: dict[str, Any]) -> Classifier:
    """An untrained Classifier of the architecture `spec` describes.

    Args:
        spec: a model.json mapping (backbone arguments, head name and arguments, classes, normalize).

    Returns:
        The Classifier, its weights still to be loaded (read_model does).
    """
    backbone = Backbone(**spec["backbone"])
    head = build_head(spec["head"]["name"], backbone.num_features, len(spec["classes"]), **spec["head"]["args"])
    return Classifier(backbone, head, spec["normalize"]["mean"], spec["normalize"]["std"])


def inference_model(classifier: Classifier, spec: dict[str, Any], tta: bool = False) -> InferenceModel:
    """`classifier` with the classes, input size and TTA settings of `spec` (model.json); modes unchanged.

    Args:
        classifier: the trained Classifier.
        spec: the model.json mapping; it becomes the result's `metadata`.
        tta: test-time augmentation on.

    Returns:
        The InferenceModel.
    """
    return InferenceModel(
        classifier,
        spec["classes"],
        spec["image_size"],
        spec["tta"]["views"],
        spec["tta"]["average"],
        tta,
        metadata=spec,
    )


def write_model(folder: str | Path, classifier: Classifier, spec: dict[str, Any]) -> Path:
    """Write `classifier`'s weights (model.safetensors) and `spec` (model.json) into `folder`, each atomically.

    Args:
        folder: created if needed.
        classifier: the trained Classifier.
        spec: what classifier_from_spec rebuilds it from (spml.factories.model_spec makes it for a run); written
            with its "format".

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in classifier.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as temporary:
        save_file(state, str(temporary), metadata={"format": FORMAT})
    write_json_atomic(folder / SPEC, {**spec, "format": FORMAT})
    return folder


def read_model(folder: str | Path, tta: bool = False) -> InferenceModel:
    """The model of an exported folder, in eval mode on the CPU.

    Args:
        folder: holds model.json and model.safetensors (write_model); a ValueError names the file when model.json
            is not spml's or the weights are not a readable safetensors file.
        tta: test-time augmentation on.

    Returns:
        InferenceModel: uint8 or float [0, 1] (B, in_chans, S, S) -> logits (B, C); `metadata` is the model.json.
    """
    folder = Path(folder)
    spec = json.loads((folder / SPEC).read_text(encoding="utf-8"))
    if spec.get("format") != FORMAT:
        raise ValueError(f"{folder / SPEC}: not an spml model description (format {FORMAT!r} expected)")
    classifier = classifier_from_spec(spec)
    try:
        state = load_file(str(folder / WEIGHTS), device="cpu")
    except Exception as err:  # safetensors: missing, truncated or foreign file
        raise ValueError(f"refusing {folder / WEIGHTS}: not a readable safetensors file ({err})") from None
    load_weights(classifier, state, spec["classes"], folder / WEIGHTS, folder / SPEC)
    return inference_model(classifier, spec, tta).eval()


def load_weights(
    classifier: nn.Module, state: dict[str, torch.Tensor], classes: list[str], weights_file: Path, classes_file: Path
) -> None:
    """`classifier.load_state_dict(state)`, with a clear error for weights of another class count.

    Args:
        classifier: the model the weights go into.
        state: the weights.
        classes: the C class names the model is built for.
        weights_file: the file `state` came from (named in the error).
        classes_file: the file listing `classes` (named in the error).

    Raises:
        ValueError naming both files, both counts and the class list when the weights hold another number of
        classes (torch would say `size mismatch`).
    """
    own = classifier.state_dict()
    counts = {
        next(iter(state[key].shape))
        for key, value in own.items()
        if key in state
        and value.ndim
        and value.shape[0] == len(classes)
        and state[key].ndim
        and state[key].shape[0] != len(classes)
        and state[key].shape[1:] == value.shape[1:]
    }
    if counts:
        raise ValueError(
            f"{weights_file} holds a classifier of {sorted(counts)[0]} classes, but {classes_file} lists "
            f"{len(classes)}: {list(classes)}; the two files belong to different models (export the run "
            "again, or use the model.json written with these weights)"
        )
    classifier.load_state_dict(state)


def write_torchscript(model: InferenceModel, path: str | Path, batch: int = 2) -> Path:
    """Trace `model` (without TTA) into a TorchScript file.

    Args:
        model: an InferenceModel.
        path: the file (written atomically).
        batch: batch size of the tracing example.

    Returns:
        The path.

    Shape:
        the traced module: uint8 (B, in_chans, S, S), any B -> float32 logits (B, C), like the eager model.
    """
    in_chans = model.metadata.get("in_chans", 1)
    example = torch.zeros(batch, in_chans, model.image_size, model.image_size, dtype=torch.uint8)
    with torch.no_grad():
        traced = torch.jit.trace(model.with_tta(False).eval(), example, check_trace=False)
    path = Path(path)
    with atomic_path(path) as temporary:
        traced.save(str(temporary))
    return path
