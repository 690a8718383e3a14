"""Run logging: scalars to `<run>/log.csv` (long format: step,name,value) and TensorBoard, rank 0 only."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from spml.io import write_text_atomic

HEADER = "step,name,value\n"


class RunLogger:
    """Appends scalars; long format keeps the CSV valid when new names appear (val metrics, components).

    A resumed run calls `rewind(step)` first: what an interrupted attempt logged after the checkpoint it resumes
    from (rows with a larger step) is dropped from log.csv, and TensorBoard is told to hide its events from step + 1
    on (`purge_step`), so both continue as if the attempt had stopped at the checkpoint. Every value of step `s` is
    logged before a checkpoint at step `s` is written (the Checkpoint callback runs after the loggers).
    """

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled, self.run_dir = enabled, Path(run_dir)
        self.path = self.run_dir / "log.csv"
        self.writer: SummaryWriter | None = None
        self.purge_step: int | None = None
        if enabled and not self.path.exists():
            self.path.write_text(HEADER, encoding="utf-8")

    def rewind(self, step: int) -> None:
        """Drop the rows logged after `step` (atomically) and hide TensorBoard events after it."""
        if not self.enabled:
            return
        rows = list(csv.reader(io.StringIO(self.path.read_text(encoding="utf-8"))))[1:]
        kept = [row for row in rows if int(row[0]) <= step]
        if len(kept) < len(rows):
            text = io.StringIO()
            csv.writer(text).writerows(kept)
            write_text_atomic(self.path, HEADER + text.getvalue())
        self.purge_step = step + 1

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows((step, name, f"{value:.6g}") for name, value in values.items())
        if self.writer is None:  # opened at the first value, so a resume can set its purge step first
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.purge_step)
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
