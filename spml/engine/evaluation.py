"""Evaluation shared by training and tools/evaluate.py: predict, gather across processes, score, report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from spml.config import EvalConfig
from spml.metrics import EvalResult, evaluate_predictions, study_level
from spml.objectives import Objective
from spml.plots import plot_curves


@torch.no_grad()
def predict_split(objective: Objective, loader: DataLoader, accelerator: Accelerator,
                  tta: tuple[str, ...] = (), desc: str = "scoring") -> dict[str, np.ndarray]:
    """Probabilities, targets, known and indices of a (prepared) loader, each sample exactly once.

    Returns numpy arrays on every process: probs (N,C) float32, targets (N,C), known (N,C) bool, index (N,).
    Batches may differ in size across processes (bad images left out under data.bad_images=skip, a batch
    of only bad images has zero rows): each is padded to the largest with index -1 before the gather, and
    the rows accelerate repeats to even out the last batches are dropped by their index. The main process
    shows a progress bar (`desc`, images/s over all processes).
    """
    model = accelerator.unwrap_model(objective)
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"probs": [], "targets": [], "known": [], "index": []}
    bar = tqdm(total=len(loader.dataset), desc=desc, unit="img", leave=False, dynamic_ncols=True,
               disable=not accelerator.is_main_process)
    for batch in loader:
        if len(batch["index"]):
            with accelerator.autocast():
                probs = torch.sigmoid(model.predict(batch["image"], tta).float())
        else:
            probs = batch["targets"].float()  # (0, C)
        # known travels as uint8: padding a bool tensor would change its dtype on that process only
        values = (probs, batch["targets"].float(), batch["known"].to(torch.uint8), batch["index"])
        gathered = accelerator.gather(accelerator.pad_across_processes(values, dim=0, pad_index=-1))
        for key, value in zip(parts, gathered):
            parts[key].append(value.cpu())
        bar.update(int((parts["index"][-1] >= 0).sum()))
    bar.close()
    model.train(was_training)
    out = {key: torch.cat(values).numpy() for key, values in parts.items()}
    out["known"] = out["known"].astype(bool)
    # first occurrence of each real index (padding has -1), in index order
    index, first = np.unique(out["index"], return_index=True)
    first = first[index >= 0]
    return {key: value[first] for key, value in out.items()}


def score(predictions: dict[str, np.ndarray], classes: list[str], bootstrap: int = 0, seed: int = 0) -> EvalResult:
    return evaluate_predictions(predictions["probs"], predictions["targets"], predictions["known"], classes,
                                bootstrap=bootstrap, seed=seed)


def check_eval_config(config: EvalConfig, classes: list[str], frame: pd.DataFrame | None = None) -> None:
    """Fail before training on eval.study_level / eval.classes values that evaluation could not honour;
    with the evaluated split's `frame`, also on images without a study id under eval.study_level."""
    if config.study_level not in ("", "max", "mean"):
        raise ValueError(f"eval.study_level={config.study_level!r}; choose from '' (per image), 'max', 'mean'")
    unknown = [name for name in config.classes if name not in classes]
    if unknown:
        raise ValueError(f"eval.classes: {unknown} not among the data's classes {list(classes)}")
    if config.study_level and frame is not None and (frame["study_id"].astype(str) == "").any():
        missing = int((frame["study_id"].astype(str) == "").sum())
        raise ValueError(f"eval.study_level={config.study_level}: {missing} of {len(frame)} images have no study id "
                         "(NIH, CSV and the synthetic set have none per view); set eval.study_level='' for "
                         "image-level metrics")


def evaluation_view(predictions: dict[str, np.ndarray], frame: pd.DataFrame, classes: list[str],
                    config: EvalConfig) -> tuple[dict[str, np.ndarray], list[str]]:
    """The predictions as they are scored: only eval.classes, and with eval.study_level each study's views
    aggregated (max or mean of the probabilities; see spml.metrics.study_level).

    predictions: predict_split output, `index` (N,) = rows of `frame` (the split's rows, with study_id).
    Returns ({probs, targets, known: (S, C')}, the C' class names); S = N images or the number of studies.
    """
    check_eval_config(config, classes, frame.iloc[predictions["index"]])
    columns = [classes.index(name) for name in config.classes] if config.classes else list(range(len(classes)))
    probs, targets, known = (predictions[key][:, columns] for key in ("probs", "targets", "known"))
    if config.study_level:
        study_ids = frame["study_id"].to_numpy()[predictions["index"]]
        probs, targets, known = study_level(probs, targets, known, study_ids, config.study_level)
    return {"probs": probs, "targets": targets, "known": known}, [classes[c] for c in columns]


def evaluate_split(predictions: dict[str, np.ndarray], frame: pd.DataFrame, classes: list[str], config: EvalConfig,
                   bootstrap: int = 0, seed: int = 0) -> tuple[EvalResult, dict[str, np.ndarray], list[str]]:
    """Score the evaluation view of a split (see evaluation_view): (result, scored predictions, their classes).
    summary["level"] says what a row was: "image", "study:max" or "study:mean"."""
    view, view_classes = evaluation_view(predictions, frame, classes, config)
    result = score(view, view_classes, bootstrap, seed)
    result.summary["level"] = f"study:{config.study_level}" if config.study_level else "image"
    return result, view, view_classes


def write_report(result: EvalResult, predictions: dict[str, np.ndarray], classes: list[str], out_dir: Path) -> None:
    """metrics.json, per_class.csv, predictions.csv, roc.png and pr.png into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(json.loads(result.to_json())["summary"], indent=2),
                                          encoding="utf-8")
    result.per_class.to_csv(out_dir / "per_class.csv", index=False)
    plot_curves(predictions["probs"], predictions["targets"], predictions["known"], classes, out_dir)
