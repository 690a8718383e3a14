"""Run folder -> the trained classifier alone: `export_run` (tools/export.py) and `load_model`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from spml.config import Config, load_config
from spml.engine import checkpoint as ckpt
from spml.engine.callbacks import EMA
from spml.evaluation.calibrators import CalibratedModel
from spml.evaluation.thresholds import THRESHOLDS_FILE, read_thresholds
from spml.factories.components import backbone_arguments, head_arguments
from spml.factories.stats import DataStats
from spml.models.artifact import (
    SPEC,
    TORCHSCRIPT,
    classifier_from_spec,
    inference_model,
    load_weights,
    read_model,
    write_model,
    write_torchscript,
)
from spml.models.inference import InferenceModel
from spml.utils.io import write_bytes_atomic

EMA_STATE = EMA.__name__  # state_key of the EMA callback in a checkpoint's callbacks


def model_spec(config: Config, classes: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """model.json of a classifier trained with `config` on `classes` (see spml.models.artifact).

    The head's prototype file is not needed again: the weights hold the trained prototypes. `normalize` is the run's
    recorded augment.mean/std (with where they came from); `pretrained` the weights the run started from ({}: random
    init or a run recorded before spml kept it).

    Args:
        config: the run's config.
        classes: the class names, in output order.

    Returns:
        The spec: classes, image_size, in_chans, backbone, head, normalize, pretrained, tta and data.
    """
    model, augment = config.model, config.augment
    head_args = head_arguments(model)
    if "prototypes" in head_args:
        head_args["prototypes"] = ""
    data = {
        key: value
        for key, value in dataclasses.asdict(config.data).items()
        if key == "size" or key.startswith("intensity")
    }
    normalize = {"mean": augment.mean, "std": augment.std}
    if model.pretrained_record.get("normalize"):
        normalize["source"] = model.pretrained_record["normalize"]["source"]
    return {
        "classes": list(classes),
        "image_size": config.data.size,
        "in_chans": model.in_chans,
        "backbone": {
            **{key: value for key, value in backbone_arguments(model).items() if key != "pretrained_file"},
            "pretrained": "",
            "compile": False,
        },  # weights: the checkpoint's
        "head": {"name": model.head, "args": head_args},
        "normalize": normalize,
        "pretrained": {key: value for key, value in model.pretrained_record.items() if key != "normalize"},
        "tta": {"views": list(augment.tta), "average": augment.tta_average},
        "data": data,
    }


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a state dict whose key starts with `prefix`, with the prefix removed.

    Args:
        state: a state dict.
        prefix: the key prefix to keep and strip.

    Returns:
        {key without prefix: tensor} of the matching entries ({} when none match).
    """
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def classifier_weights(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The classifier's weights of a checkpoint: the evaluation EMA's when the run kept one, else the model's.

    The EMA's weights are what the run's evaluation scored. Reads both checkpoint formats.

    Args:
        state: a loaded checkpoint state (spml.engine.checkpoint.load_state).

    Returns:
        (classifier state dict, "ema" | "model").
    """
    if EMA_STATE in state.get("callbacks", {}):
        return strip_prefix(state["callbacks"][EMA_STATE], "module."), "ema"
    legacy_ema = strip_prefix(state["objective"], "eval_ema.module.")  # format 1: the EMA lived in the objective
    if legacy_ema:
        return legacy_ema, "ema"
    return strip_prefix(state["objective"], "classifier."), "model"


def run_config(run_dir: Path, overrides: tuple[str, ...] = ()) -> Config:
    """A run folder's config (upgraded if an earlier spml wrote it).

    The initial-weight files the run started from (model.pretrained, model.prototypes) are not read again: the
    checkpoint holds every weight.

    Args:
        run_dir: the run folder (holding config.yaml).
        overrides: `key=value` config overrides applied on top.

    Returns:
        The Config.
    """
    return load_config(run_dir=run_dir, overrides=("model.pretrained=", "model.prototypes=", *overrides))


def load_run_model(run_dir: str | Path, checkpoint: str = "latest") -> tuple[InferenceModel, dict[str, Any]]:
    """The InferenceModel of a run folder's checkpoint and its model.json spec.

    Args:
        run_dir: the run folder (config.yaml, data_stats.json, checkpoints/); a FileNotFoundError otherwise.
        checkpoint: latest | best.

    Returns:
        (the InferenceModel in eval mode, its model.json spec with a `source` entry naming the run, checkpoint, step
        and weights kind).
    """
    run_dir = Path(run_dir)
    for name in ("config.yaml", "data_stats.json"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no {name})")
    stats = DataStats.from_json(json.loads((run_dir / "data_stats.json").read_text(encoding="utf-8")))
    spec = model_spec(run_config(run_dir), stats.classes)
    root = run_dir / "checkpoints"
    if not (root / f"{checkpoint}.json").exists():
        raise FileNotFoundError(f"{root / (checkpoint + '.json')} not found (checkpoints: latest or best)")
    folder = ckpt.read_pointer(root, checkpoint)
    state, _ = ckpt.load_state(folder)
    weights, kind = classifier_weights(state)
    classifier = classifier_from_spec(spec)
    load_weights(classifier, weights, spec["classes"], folder / "state.pt", run_dir / "data_stats.json")
    spec["source"] = {
        "run": str(run_dir.resolve()),
        "checkpoint": checkpoint,
        "checkpoint_dir": folder.name,
        "step": int(state["progress"]["global_step"]),
        "weights": kind,
    }
    return inference_model(classifier, spec).eval(), spec


def export_run(
    run_dir: str | Path, out: str | Path | None = None, checkpoint: str = "latest", torchscript: bool = False
) -> Path:
    """Write the trained classifier of a run folder alone into `out`.

    Writes model.safetensors + model.json, with `torchscript` model.torchscript.pt, and the run's thresholds.json when
    it was fitted for the exported weights (tools/predict.py then writes decisions).

    Args:
        run_dir: the run folder.
        out: the export folder (default <run>/export).
        checkpoint: latest | best.
        torchscript: also write model.torchscript.pt.

    Returns:
        The export folder.
    """
    model, spec = load_run_model(run_dir, checkpoint)
    out = Path(out) if out else Path(run_dir) / "export"
    write_model(out, model.classifier, spec)
    if torchscript:
        write_torchscript(model, out / TORCHSCRIPT)
    thresholds = Path(run_dir) / THRESHOLDS_FILE  # the run's operating points travel with the weights they fit
    if (
        thresholds.is_file()
        and json.loads(thresholds.read_text(encoding="utf-8")).get("checkpoint") == spec["source"]["checkpoint_dir"]
    ):
        write_bytes_atomic(out / THRESHOLDS_FILE, thresholds.read_bytes())
    return out


def load_model(
    path: str | Path,
    checkpoint: str = "latest",
    tta: bool = False,
    device: str | torch.device | None = None,
    calibrated: bool = False,
) -> InferenceModel | CalibratedModel:
    """A trained classifier ready for inference, in eval mode.

    Args:
        path: an exported folder (tools/export.py: model.json + model.safetensors) or, for convenience, a run
            folder (its `checkpoint`; the evaluation EMA's weights when the run kept one).
        checkpoint: latest | best (a run folder only).
        tta: average over the model's test-time augmentation views (`model.with_tta(...)` gives the other one).
        device: where to put it (default: the CPU).
        calibrated: return calibrated probabilities instead of logits: the calibrator of the folder's
            thresholds.json (fitted at the end of training for these weights and TTA views; an error otherwise).

    Returns:
        spml.models.InferenceModel: uint8 (B, in_chans, S, S) or float images in [0, 1] -> logits (B, C), with
        `classes`, `image_size`, `tta_views`, `tta_average` and `metadata` (the model.json); with `calibrated`
        a spml.evaluation.calibrators.CalibratedModel around it: the same images -> calibrated probabilities
        (B, C), with `calibrator` and `thresholds` besides those attributes.

    Shape:
        - Input: (B, in_chans, S, S), uint8 or float in [0, 1].
        - Output: (B, C) logits (calibrated probabilities with `calibrated`).
    """
    path = Path(path)
    if (path / SPEC).is_file():
        model = read_model(path, tta)
    elif (path / "config.yaml").is_file():
        model = load_run_model(path, checkpoint)[0].with_tta(tta)
    else:
        raise FileNotFoundError(f"{path}: neither an exported model ({SPEC}) nor a run folder (config.yaml)")
    if calibrated:  # issue 24: the run's calibration travels in thresholds.json (JSON numbers, no pickle)
        if not (path / THRESHOLDS_FILE).is_file():
            raise FileNotFoundError(
                f"{path / THRESHOLDS_FILE} not found: calibrated=True needs the operating points "
                "fitted for these weights (written at the end of training, copied by the export)"
            )
        record = read_thresholds(
            path / THRESHOLDS_FILE,
            model.classes,
            model.metadata["source"]["checkpoint_dir"],
            list(model.tta_views) if tta else [],
        )
        model = CalibratedModel(model, record["calibrator"], record["threshold"]).eval()
    return model.to(device) if device is not None else model
