"""Load a finished (or interrupted) run for evaluation and prediction."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from spml.config import Config, DataConfig, load_config
from spml.data.synthetic import lesion_masks
from spml.diagnostics import Explainer
from spml.engine import checkpoint as ckpt
from spml.objectives import DataStats, Objective, build_objective


def load_run(run_dir: str | Path, which: str = "latest",
             overrides: tuple[str, ...] = ()) -> tuple[Config, DataStats, Objective]:
    """(config, training data stats incl. classes, objective with the `which` checkpoint's weights, in eval mode).

    which: latest | best. Needs only the run folder, not the dataset: the checkpoint holds every weight, so
    the initial-weight files the run started from (model.pretrained, model.prototypes) are not read again.
    """
    run_dir = Path(run_dir)
    for name in ("config.yaml", "data_stats.json"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no {name})")
    config = load_config([run_dir / "config.yaml"], ("model.pretrained=", "model.prototypes=", *overrides))
    stats = DataStats.from_json(json.loads((run_dir / "data_stats.json").read_text(encoding="utf-8")))
    objective = build_objective(config, stats)
    root = run_dir / "checkpoints"
    if not (root / f"{which}.json").exists():
        raise FileNotFoundError(f"{root / (which + '.json')} not found (checkpoints: latest or best)")
    state, _ = ckpt.load_state(ckpt.read_pointer(root, which))
    objective.load_state_dict(state["objective"])
    return config, stats, objective.eval()


class ImageClassifier(nn.Module):
    """An objective's evaluation network as a plain classifier (the weights `Objective.predict` uses: the
    EMA copy when model.ema_decay > 0): uint8 (0..255) or float ([0, 1]) images (B, 1, S, S) -> logits (B, C),
    normalised as in training. `layer` is the backbone, whose output (the last feature map) Grad-CAM explains.
    """

    def __init__(self, objective: Objective):
        super().__init__()
        self.objective = objective
        self.network = objective.eval_ema.module if objective.eval_ema is not None else objective.classifier

    @property
    def layer(self) -> nn.Module:
        return self.network.backbone

    def forward(self, images: Tensor) -> Tensor:
        x = self.objective.to_input(images) if images.dtype == torch.uint8 else images.float()
        return self.network(self.objective.model_input(x)).float()


def split_explainer(objective: Objective, dataset: Dataset, frame: pd.DataFrame, data: DataConfig,
                    classes: tuple[str, ...] | list[str]) -> Explainer:
    """Heatmap inputs for a split: the objective's evaluation network, its backbone as Grad-CAM's layer, the
    split's images by row and, on the synthetic set, the findings' masks (spml.data.synthetic.lesion_masks)."""
    model = ImageClassifier(objective).eval()

    def images(rows: np.ndarray) -> np.ndarray:
        return np.stack([dataset[int(i)]["image"].numpy() for i in rows])

    def masks(rows: np.ndarray) -> np.ndarray:
        return lesion_masks(data, frame.iloc[rows], list(classes))

    return Explainer(model, model.layer, images, masks if data.dataset == "synthetic" else None)
