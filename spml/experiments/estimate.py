"""GPU-hours of a grid before it runs: images x epochs / a measured images/s (tools/benchmark.py --json).

A run's hours = (train images x epochs) / its training images/s (the MPC rate for spml.objective=mpc runs and for
supervised.objective=consistency, which also trains a strong view; the supervised rate for the others) + (val
images x validations + test images) / the evaluation images/s. Its GPU-hours are that x its GPUs under linear
scaling, i.e. the same figure: the estimate does not depend on the GPUs per run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spml.config import ConfigError, load_config
from spml.experiments.grid import PlannedRun
from spml.factories.data import read_split

# Stated, not measured: the project's throughput targets for DenseNet-121 at 224 px, bf16, on one H100
# (docs/performance.md: supervised >= 2500, MPC >= 1100 images/s), scaled by pixels to 320 px (x 224^2 / 320^2),
# and evaluation at 3x the supervised step. Measure your own with tools/benchmark.py --json.
DEFAULT_RATES = {"supervised": 1225.0, "mpc": 540.0, "eval": 3675.0}
DEFAULT_SOURCE = (
    "stated default (DenseNet-121 targets of docs/performance.md for one H100, scaled to 320 px); "
    "measure yours: tools/benchmark.py --json FILE, then --throughput FILE"
)


@dataclass(frozen=True)
class Throughput:
    """Images/s of a supervised step, an MPC step and evaluation, and where the figures come from.

    Attributes:
        supervised: images/s of a supervised training step.
        mpc: images/s of an MPC training step.
        eval: images/s of evaluation.
        source: where the figures come from.
    """

    supervised: float
    mpc: float
    eval: float
    source: str


def read_throughput(path: str | Path | None) -> Throughput:
    """Throughput from tools/benchmark.py's --json output, or the stated defaults when `path` is None.

    The file's step.supervised, step.mpc and eval images_per_s are read; a missing section keeps its default.

    Args:
        path: the --json file (None: the defaults).

    Returns:
        The Throughput.
    """
    if path is None:
        return Throughput(**DEFAULT_RATES, source=DEFAULT_SOURCE)
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--throughput {path}: not a tools/benchmark.py --json file ({error})") from None
    step = results.get("step", {})
    rates = {
        "supervised": step.get("supervised", {}).get("images_per_s"),
        "mpc": step.get("mpc", {}).get("images_per_s"),
        "eval": results.get("eval", {}).get("images_per_s"),
    }
    if rates["supervised"] is None and rates["mpc"] is None:
        raise ConfigError(f"--throughput {path}: no step section (run tools/benchmark.py with --sections step,eval)")
    setup = results.get("setup", {})
    measured = ", ".join(f"{key} {setup[key]}" for key in ("backbone", "size", "batch", "device") if key in setup)
    return Throughput(
        **{key: float(value if value is not None else DEFAULT_RATES[key]) for key, value in rates.items()},
        source=f"measured: {path}" + (f" ({measured})" if measured else ""),
    )


def split_sizes(config, cache: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    """(train, val, test) images of `config`'s data as training splits it (read once per distinct data config).

    Args:
        config: a run's config.
        cache: {data config repr: sizes}, filled here.

    Returns:
        (train, val, test) image counts.
    """
    key = repr(config.data)
    if key not in cache:
        _, split = read_split(config.data)
        cache[key] = tuple(int((split == name).sum()) for name in ("train", "val", "test"))
    return cache[key]


def estimate(
    runs: list[PlannedRun],
    extra_overrides: list[str] | tuple[str, ...],
    rates: Throughput,
    train_images: int | None = None,
) -> pd.DataFrame:
    """One row per run: variant, seed, epochs, train/val/test images, rate (images/s), hours (= GPU-hours).

    Args:
        runs: the planned runs.
        extra_overrides: overrides applied to every run.
        rates: the throughput.
        train_images: replaces the data's train count (val and test are then not counted); None: read the data.

    Returns:
        The table.
    """
    rows, cache = [], {}
    for run in runs:
        config = load_config(run.configs, [*run.overrides, *extra_overrides])
        if train_images is None:
            train, val, test = split_sizes(config, cache)
        else:
            train, val, test = train_images, 0, 0
        two_views = (config.mode == "spml" and config.spml.objective == "mpc") or (
            config.mode == "supervised" and config.supervised.objective == "consistency"
        )
        rate = rates.mpc if two_views else rates.supervised
        epochs = config.train.epochs
        validations = epochs // max(1, config.train.eval_every) if val else 0
        seconds = train * epochs / rate + (val * validations + test) / rates.eval
        rows.append(
            {
                "variant": run.variant,
                "seed": run.seed,
                "epochs": epochs,
                "train": train,
                "val": val,
                "test": test,
                "images_per_s": rate,
                "hours": seconds / 3600,
            }
        )
    return pd.DataFrame(rows)


def estimate_text(table: pd.DataFrame, rates: Throughput, gpus: int) -> str:
    """The job list with each run's hours, and the total GPU-hours.

    Args:
        table: estimate's table.
        rates: the throughput (its source is named).
        gpus: GPUs the runs share (for the longest run's wall time).

    Returns:
        The text.
    """
    lines = [f"{'variant':40s} seed  epochs   train   val    test  images/s  GPU-hours"]
    for row in table.itertuples():
        lines.append(
            f"{row.variant[:40]:40s} {row.seed:4d} {row.epochs:7d} {row.train:7d} {row.val:5d} {row.test:7d} "
            f"{row.images_per_s:9.0f} {row.hours:10.2f}"
        )
    total, gpus = table["hours"].sum(), max(1, gpus)
    lines.append(
        f"{len(table)} jobs, {total:.1f} GPU-hours in all; the longest run takes about "
        f"{table['hours'].max() / gpus:.1f} h on {gpus} GPU(s) (linear scaling); images/s: {rates.source}"
    )
    return "\n".join(lines)
