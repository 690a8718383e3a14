"""Run logging: scalars to `<run>/log.csv` (long format: step,name,value) and TensorBoard, rank 0 only."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from spml.utils.io import write_text_atomic

HEADER = "step,name,value\n"


class RunLogger:
    """Appends scalars; long format keeps the CSV valid when new names appear (val metrics, components).

    A resumed run calls `rewind(step)` first: what an interrupted attempt logged after the checkpoint it resumes
    from (rows with a larger step) is dropped from log.csv, and TensorBoard is told to hide its events from step + 1
    on (`purge_step`), so both continue as if the attempt had stopped at the checkpoint. Every value of step `s` is
    logged before a checkpoint at step `s` is written (the Checkpoint callback runs after the loggers).

    Args:
        run_dir: the run folder (log.csv and tensorboard/ go in it).
        enabled: whether this process logs (rank 0 only); when False every method does nothing.
    """

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled, self.run_dir = enabled, Path(run_dir)
        self.path = self.run_dir / "log.csv"
        self.writer: SummaryWriter | None = None
        self.purge_step: int | None = None
        if enabled and not self.path.exists():
            self.path.write_text(HEADER, encoding="utf-8")

    def rewind(self, step: int) -> None:
        """Drop the rows logged after `step` (atomically) and hide TensorBoard events after it.

        Args:
            step: the step of the checkpoint the run resumes from.
        """
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
        """Append scalars of one step to log.csv and TensorBoard.

        Args:
            step: the training step.
            values: name -> value.
        """
        if not self.enabled:
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows((step, name, f"{value:.6g}") for name, value in values.items())
        if self.writer is None:  # opened at the first value, so a resume can set its purge step first
            folder = self.run_dir / "tensorboard"
            _wait_to_sort_last(folder)
            self.writer = SummaryWriter(str(folder), purge_step=self.purge_step)
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's hyper-parameters (a nested dict, e.g. the resolved config) with its final metrics, for
        TensorBoard's HPARAMS tab; lists and dicts are written as JSON text.

        Args:
            hparams: the hyper-parameters, a nested dict (flattened to dotted keys).
            metrics: name -> final value; None and non-finite values are left out.
        """
        if not self.enabled:
            return
        flat = {
            key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for key, value in _flatten(hparams).items()
        }
        finite = {key: float(value) for key, value in metrics.items() if value is not None and math.isfinite(value)}
        self.writer.add_hparams(flat, finite, run_name=".")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _wait_to_sort_last(folder: Path) -> None:
    """Sleep (under a second) until a new event file's name sorts after every file in `folder`.

    TensorBoard reads a folder's event files in name order, and a name is `events.out.tfevents.<whole seconds>.
    <host>.<pid>...`: a resumed attempt that opens its file in the same second as the attempt it follows would sort
    by pid, possibly first, and its purge of the earlier attempt's late events would be read before those events.
    """
    seconds = (
        [
            int(name.split(".")[3])
            for name in os.listdir(folder)
            if name.startswith("events.out.tfevents.") and name.split(".")[3].isdigit()
        ]
        if folder.is_dir()
        else []
    )
    if seconds and time.time() < max(seconds) + 1:
        time.sleep(max(seconds) + 1 - time.time())


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"data": {"size": 64}} -> {"data.size": 64}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
