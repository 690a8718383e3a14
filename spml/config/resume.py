"""The config of a resumed run: the run folder's config.yaml is the truth; a resume may change only the keys that
cannot change what the run computes (RESUME_KEYS), and it writes into the folder it was given."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spml.config.loader import ConfigError, load_config, to_dict
from spml.config.schema import Config

# key -> why changing it on resume leaves every trained step and the result's meaning as they are
RESUME_KEYS = {
    "train.max_steps": "where this attempt stops (a time-limited job); the schedule follows train.epochs",
    "train.log_every": "how often log rows are written (and a multi-process run checks for a stop signal)",
    "train.checkpoint_every": "how often `latest` is saved; saving draws no random number",
    "data.num_workers": "loader processes; loading draws no random number (the order comes from the seeded "
    "sampler, augmentation runs in the objective)",
    "data.worker_start": "how loader processes start; they compute what they computed",
    "data.eval_batch_size": "evaluation batch size; the evaluated model is batch-independent",
    "eval.bootstrap": "resamples of the final evaluation's confidence intervals",
    "eval.tta": "whether the final evaluation also writes eval-tta/",
}
WHY_NOT = {  # keys users ask for most, with what to do instead
    "train.epochs": "the learning-rate schedule in the checkpoint was built for the recorded epochs, so extra epochs "
    "would train at its final rate; to stop earlier set train.max_steps, to train longer start a "
    "new run",
    "data.root": "the run's data is read from the recorded root; if the dataset moved, link it to the old path",
}


def resume_config(
    run_dir: str | Path, files: Iterable[str | Path] = (), overrides: Iterable[str] = (), mode: str | None = None
) -> tuple[Config, dict[str, tuple[Any, Any]]]:
    """The config to continue `run_dir` with and what differs from its config.yaml, {dotted key: (recorded, now)}.

    `files`, `mode` and `overrides` apply on top of the recorded config (as in `load_config`) and may change only
    RESUME_KEYS; anything else is a ConfigError naming the keys and the allowed set, raised before anything is
    written. `train.out` becomes `run_dir` as given (a moved folder continues where it is now; the recorded path
    is then listed as a change); setting train.out on resume is an error.

    Args:
        run_dir: the run folder resumed.
        files: YAML config files applied on top of the recorded config.
        overrides: dotted key=value overrides.
        mode: the training mode, or None to keep the recorded one.

    Returns:
        (the config, {dotted key: (recorded, now)} of what differs).
    """
    run_dir = Path(run_dir)
    recorded = load_config(run_dir=run_dir)
    config = load_config(files, overrides, run_dir=run_dir, mode=mode)
    if config.train.out != recorded.train.out:
        raise ConfigError(
            f"train.out={config.train.out}: --resume {run_dir} writes into {run_dir}; do not set "
            "train.out when resuming"
        )
    changes = differences(to_dict(recorded), to_dict(config))
    refused = [key for key in changes if key not in RESUME_KEYS]
    if refused:
        details = "; ".join(
            f"{key}: {changes[key][0]!r} recorded, {changes[key][1]!r} asked"
            + (f" ({WHY_NOT[key]})" if key in WHY_NOT else "")
            for key in refused
        )
        raise ConfigError(
            f"--resume {run_dir}: {details}. A resume keeps the run's config.yaml and may change only "
            f"{sorted(RESUME_KEYS)}; for other settings start a new run (another train.out)"
        )
    if str(run_dir) != recorded.train.out:
        changes["train.out"] = (recorded.train.out, str(run_dir))
    return dataclasses.replace(config, train=dataclasses.replace(config.train, out=str(run_dir))), changes


def differences(recorded: dict[str, Any], now: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted key: (recorded value, new value)} of the leaves that differ between two nested dicts.

    Args:
        recorded: the recorded config as a nested dict.
        now: the new config as a nested dict.
        prefix: the dotted prefix of the keys (for the recursion).

    Returns:
        {dotted key: (recorded value, new value)}, sorted by key.
    """
    changes = {}
    for key in recorded.keys() | now.keys():
        old, new = recorded.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes.update(differences(old, new, f"{prefix}{key}."))
        elif old != new:
            changes[f"{prefix}{key}"] = (old, new)
    return dict(sorted(changes.items()))
