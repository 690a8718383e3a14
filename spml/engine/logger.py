"""Run logging: scalars to `<run>/log.csv` (long format: step,name,value) and TensorBoard, rank 0 only."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter


class RunLogger:
    """Appends scalars; long format keeps the CSV valid when new names appear (val metrics, components)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "log.csv"
        self.writer = SummaryWriter(str(run_dir / "tensorboard")) if enabled else None
        if enabled and not self.path.exists():
            self.path.write_text("step,name,value\n", encoding="utf-8")

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows((step, name, f"{value:.6g}") for name, value in values.items())
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's hyper-parameters (a nested dict, e.g. the resolved config) with its final metrics, for
        TensorBoard's HPARAMS tab; lists and dicts are written as JSON text."""
        if not self.enabled:
            return
        flat = {key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
                for key, value in _flatten(hparams).items()}
        finite = {key: float(value) for key, value in metrics.items() if value is not None and math.isfinite(value)}
        self.writer.add_hparams(flat, finite, run_name=".")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"data": {"size": 64}} -> {"data.size": 64}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
