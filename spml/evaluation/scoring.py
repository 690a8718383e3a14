"""Scoring steps: predict a split (gathered across processes), choose what is scored (classes, study level),
score, write metrics.json / per_class.csv / curves. The model is any module from uint8 images to logits
(spml.models.InferenceModel); spml.evaluation.evaluate.evaluate chains the steps (the one evaluation path)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from spml.data.loader import one_pass
from spml.evaluation.metrics import EvalResult, evaluate_predictions, study_level
from spml.reporting.plots import plot_curves
from spml.utils.io import atomic_path, write_json_atomic


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every submodule's own mode back (the model may share its classifier
    with a training objective).

    Args:
        model: the model.

    Yields:
        Nothing.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


@torch.no_grad()
def predict_split(
    model: nn.Module, loader: DataLoader, accelerator: Accelerator, desc: str = "scoring"
) -> dict[str, np.ndarray]:
    """Probabilities, targets, known and indices of a (prepared) loader, each sample exactly once.

    Args:
        model: uint8 images (B, 1, S, S) -> logits (B, C), in eval mode for the call.
        loader: the (prepared) loader.
        accelerator: gathers the predictions across processes.
        desc: the progress bar's name.

    Returns:
        numpy arrays on every process: probs (N,C) float32, targets (N,C), known (N,C) bool, index (N,).

    Batches may differ in size across processes (bad images left out under data.bad_images=skip, a batch
    of only bad images has zero rows): each is padded to the largest with index -1 before the gather, and
    the rows accelerate repeats to even out the last batches are dropped by their index. The main process
    shows a progress bar (`desc`, images/s over all processes).
    """
    parts: dict[str, list[torch.Tensor]] = {"probs": [], "targets": [], "known": [], "index": []}
    bar = tqdm(
        total=len(loader.dataset),
        desc=desc,
        unit="img",
        leave=False,
        dynamic_ncols=True,
        disable=not accelerator.is_main_process,
    )
    with evaluating(model), one_pass(loader) as batches:
        for batch in batches:
            if len(batch["index"]):
                with accelerator.autocast():
                    probs = torch.sigmoid(model(batch["image"]).float())
            else:
                probs = batch["targets"].float()  # (0, C)
            # known travels as uint8: padding a bool tensor would change its dtype on that process only
            values = (probs, batch["targets"].float(), batch["known"].to(torch.uint8), batch["index"])
            gathered = accelerator.gather(accelerator.pad_across_processes(values, dim=0, pad_index=-1))
            for key, value in zip(parts, gathered):
                parts[key].append(value.cpu())
            bar.update(int((parts["index"][-1] >= 0).sum()))
    bar.close()
    out = {key: torch.cat(values).numpy() for key, values in parts.items()}
    out["known"] = out["known"].astype(bool)
    # first occurrence of each real index (padding has -1), in index order
    index, first = np.unique(out["index"], return_index=True)
    first = first[index >= 0]
    return {key: value[first] for key, value in out.items()}


def score(predictions: dict[str, np.ndarray], classes: Sequence[str], bootstrap: int = 0, seed: int = 0) -> EvalResult:
    """spml.evaluation.metrics.evaluate_predictions on predict_split's output.

    Args:
        predictions: {probs, targets, known (N, C)}. classes: the C names. bootstrap, seed: the intervals.

    Returns:
        The EvalResult.
    """
    return evaluate_predictions(
        predictions["probs"],
        predictions["targets"],
        predictions["known"],
        list(classes),
        bootstrap=bootstrap,
        seed=seed,
    )


def evaluation_view(
    predictions: dict[str, np.ndarray],
    frame: pd.DataFrame,
    classes: Sequence[str],
    eval_classes: Sequence[str] = (),
    level: str = "",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The predictions as they are scored: only `eval_classes` (all when empty), and with `level` "max" or
    "mean" each study's views aggregated (see spml.evaluation.metrics.study_level; "" scores images).

    predictions: predict_split output, `index` (N,) = rows of `frame` (the split's rows, with study_id).
    Returns ({probs, targets, known: (S, C')}, the C' class names); S = N images or the number of studies.

    Args:
        predictions: predict_split's output.
        frame: the split's rows (with study_id), indexed by `index`.
        classes: the C class names of the predictions.
        eval_classes: the classes scored (empty: all).
        level: "" per image, "max"/"mean" per study.

    Returns:
        ({probs, targets, known}, the C' class names).

    Shape:
        predictions: probs, targets, known (N, C), index (N,) -> probs, targets, known (S, C').
    """
    classes = list(classes)
    columns = [classes.index(name) for name in eval_classes] if eval_classes else list(range(len(classes)))
    probs, targets, known = (predictions[key][:, columns] for key in ("probs", "targets", "known"))
    if level:
        study_ids = frame["study_id"].to_numpy()[predictions["index"]]
        probs, targets, known = study_level(probs, targets, known, study_ids, level)
    return {"probs": probs, "targets": targets, "known": known}, [classes[c] for c in columns]


def evaluate_split(
    predictions: dict[str, np.ndarray],
    frame: pd.DataFrame,
    classes: Sequence[str],
    eval_classes: Sequence[str] = (),
    level: str = "",
    bootstrap: int = 0,
    seed: int = 0,
) -> tuple[EvalResult, dict[str, np.ndarray], list[str]]:
    """Score the evaluation view of a split (see evaluation_view): (result, scored predictions, their classes).
    summary["level"] says what a row was: "image", "study:max" or "study:mean".

    Args:
        predictions: predict_split's output.
        frame: the split's rows (with study_id), indexed by `index`.
        classes: the C class names of the predictions.
        eval_classes: the classes scored (empty: all).
        level: "" per image, "max"/"mean" per study.
        bootstrap: bootstrap resamples of the intervals.
        seed: their seed.

    Returns:
        (result, scored predictions, their classes).
    """
    view, view_classes = evaluation_view(predictions, frame, classes, eval_classes, level)
    result = score(view, view_classes, bootstrap, seed)
    result.summary["level"] = f"study:{level}" if level else "image"
    return result, view, view_classes


def write_report(result: EvalResult, predictions: dict[str, np.ndarray], classes: list[str], out_dir: Path) -> None:
    """metrics.json and per_class.csv (each written atomically), roc.png and pr.png into `out_dir`.

    Args:
        result: the scored EvalResult. predictions: the scored view {probs, targets, known (S, C')}.
        classes: its C' names. out_dir: the evaluation folder (created).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "metrics.json", json.loads(result.to_json())["summary"])
    with atomic_path(out_dir / "per_class.csv") as temporary:
        result.per_class.to_csv(temporary, index=False)
    plot_curves(predictions["probs"], predictions["targets"], predictions["known"], classes, out_dir, result)
