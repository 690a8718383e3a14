"""Run logging: scalars to `<run>/log.csv` (long format: step,name,value) and TensorBoard, rank 0 only."""
from __future__ import annotations

import csv
from pathlib import Path

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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
