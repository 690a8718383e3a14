"""Evaluation shared by training and tools/evaluate.py: predict, gather across processes, score, report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from spml.metrics import EvalResult, evaluate_predictions
from spml.objectives import Objective
from spml.plots import plot_curves


@torch.no_grad()
def predict_split(objective: Objective, loader: DataLoader, accelerator: Accelerator,
                  tta: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Probabilities, targets, known and indices of a (prepared) loader, each sample exactly once.

    Returns numpy arrays on every process: probs (N,C) float32, targets (N,C), known (N,C) bool, index (N,).
    """
    model = accelerator.unwrap_model(objective)
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"probs": [], "targets": [], "known": [], "index": []}
    for batch in loader:
        with accelerator.autocast():
            logits = model.predict(batch["image"], tta)
        gathered = accelerator.gather_for_metrics(
            (torch.sigmoid(logits.float()), batch["targets"], batch["known"], batch["index"]))
        for key, value in zip(parts, gathered):
            parts[key].append(value.cpu())
    model.train(was_training)
    out = {key: torch.cat(values).numpy() for key, values in parts.items()}
    order = np.argsort(out["index"], kind="stable")  # gathered order interleaves processes
    return {key: value[order] for key, value in out.items()}


def score(predictions: dict[str, np.ndarray], classes: list[str], bootstrap: int = 0, seed: int = 0) -> EvalResult:
    return evaluate_predictions(predictions["probs"], predictions["targets"], predictions["known"], classes,
                                bootstrap=bootstrap, seed=seed)


def write_report(result: EvalResult, predictions: dict[str, np.ndarray], classes: list[str], out_dir: Path) -> None:
    """metrics.json, per_class.csv, predictions.csv, roc.png and pr.png into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(json.loads(result.to_json())["summary"], indent=2),
                                          encoding="utf-8")
    result.per_class.to_csv(out_dir / "per_class.csv", index=False)
    plot_curves(predictions["probs"], predictions["targets"], predictions["known"], classes, out_dir)
