"""Label-masking experiments: mask a dataset's train (and optionally val) split once, train full-label and
single-positive methods on it, compare them on the clean test split (tools/masking_experiment.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from spml.config import Config, ConfigError
from spml.config.loader import read_config_file
from spml.data.masking import mask_splits, masked_csv_bytes, read_manifest, write_masked
from spml.data.table import DataError, dataset_root, file_sha256
from spml.experiments.grid import PlannedRun
from spml.factories.data import read_split
from spml.losses import SPML_LOSSES
from spml.utils.text import slug

FULL = "full"  # mode=supervised on the clean labels with the default weak augmentation
# The full-label variants (mode=supervised on the clean labels): recovery is measured against the best of those run
# (the fair reference, docs/results.md): the default weak augmentation, flips only, and MPC's strong-view stream.
FULL_METHODS = {
    FULL: (),
    "full_flips": ("augment.degrees=0", "augment.translate=0", "augment.scale=[1.0, 1.0]"),
    "full_consistency": ("supervised.objective=consistency",),
}
MPC = "mpc"  # the MPC objective (spml.objective=mpc) with the schema defaults
PRESETS = Path(__file__).resolve().parents[1] / "configs" / "presets"
# Single-positive methods that are more than a loss name: (config files, overrides)
COMPOSITE_METHODS = {
    MPC: ((), ("spml.objective=mpc",)),
    "mpc_paper": ((str(PRESETS / "mpc_paper.yaml"),), ("spml.objective=mpc",)),
    "boostlu": ((), ("spml.objective=loss", "loss.name=ll_r", "model.head=boostlu")),
}
AN = "an"  # assume negative: the lower reference


def method_names() -> list[str]:
    """The methods a masking experiment can run.

    Returns:
        The full-label variants, MPC, the paper's MPC preset, BoostLU and every registered single-positive loss
        (spml.losses.SPML_LOSSES).
    """
    return [*FULL_METHODS, *COMPOSITE_METHODS, *SPML_LOSSES.names()]


def parse_methods(text: str) -> list[str]:
    """'full,an,em' -> ['full', 'an', 'em']; unknown or repeated names are a ConfigError listing the valid ones.

    Args:
        text: the --methods value.

    Returns:
        The method names.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    valid = method_names()
    for name in names:
        if name not in valid:
            raise ConfigError(f"--methods: unknown method {name!r}; valid: {', '.join(valid)}")
    if not names or len(set(names)) < len(names):
        raise ConfigError(f"--methods {text!r}: name each method once, from: {', '.join(valid)}")
    return names


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2] (distinct integers; a ConfigError otherwise).

    Args:
        text: the --seeds value.

    Returns:
        The seeds.
    """
    try:
        seeds = [int(seed) for seed in text.split(",") if seed.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seeds {text!r}: give each seed once")
    return seeds


NO_POSITIVE_DEFAULT = "keep"  # as the quick start: every method, `full` included, trains on the same images


def no_positive_default(config_files: list[str], overrides: list[str]) -> str | None:
    """NO_POSITIVE_DEFAULT, or None when a --config file or an override sets data.mask_no_positive itself.

    The dataset presets do not count: they describe the data, not the experiment.

    Args:
        config_files: the --config files.
        overrides: the overrides.

    Returns:
        "keep" or None.
    """
    if any(item.startswith("data.mask_no_positive=") for item in overrides):
        return None
    if any("mask_no_positive" in (read_config_file(path).get("data") or {}) for path in config_files):
        return None
    return NO_POSITIVE_DEFAULT


def masked_splits(config: Config) -> tuple[str, ...]:
    """The splits to mask: train, and val under data.mask_val.

    Args:
        config: the experiment's config.

    Returns:
        The split names.
    """
    return ("train", "val") if config.data.mask_val else ("train",)


def write_masked_splits(config: Config, path: Path) -> tuple[dict[str, Any], bool]:
    """Mask the train split (and the val split under data.mask_val) of `config`'s data into `path` + its manifest.

    The masking uses data.mask_scheme, data.mask_seed, data.mask_no_positive and data.mask_params; the manifest adds
    the split settings. Same data split as training (spml.factories.data.read_split); test rows are never in the file.
    An identical file already at `path` is kept (written False); a different one is an error, since the runs beside
    it were trained on it.

    Args:
        config: the experiment's config.
        path: the masked label file.

    Returns:
        (manifest, written).
    """
    data = config.data
    table, split = read_split(data)
    frame, manifest = mask_splits(
        table,
        split,
        masked_splits(config),
        data.mask_scheme,
        data.mask_seed,
        data.mask_no_positive,
        dataset_root(data.root, data.labels),
        **data.mask_params,
    )
    manifest["split"] = {
        "split": data.split,
        "split_seed": data.split_seed,
        "val_fraction": data.val_fraction,
        "test_fraction": data.test_fraction,
        "views": list(data.views),
        "missing": data.missing,
    }
    sha = hashlib.sha256(masked_csv_bytes(frame)).hexdigest()
    expected = json.loads(json.dumps({**manifest, "masked_sha256": sha}))
    if path.exists():
        if file_sha256(str(path)) == expected["masked_sha256"] and read_manifest(path) == expected:
            return expected, False
        raise DataError(
            f"{path} exists but was masked from other data, split, scheme or seed, and the runs in "
            f"{path.parent} were trained on it: choose another --out or delete that folder"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_masked(frame, manifest, path), True


def plan_runs(
    methods: list[str],
    seeds: list[int],
    out: Path,
    configs: tuple[str, ...],
    overrides: tuple[str, ...],
    masked_file: Path,
    mask_val: bool,
) -> list[PlannedRun]:
    """One run per method x seed in <out>/<method>/seed<seed>.

    The FULL_METHODS: mode=supervised on the clean labels (loss.name as configured, bce by default) with their own
    overrides; `mpc`: mode=spml spml.objective=mpc (its base loss: loss.name as configured, em by default),
    `mpc_paper` the same with configs/presets/mpc_paper.yaml, `boostlu` LL-R with the boostlu head; any other:
    mode=spml spml.objective=loss loss.name=<method>; each spml method with data.masked_labels=<masked_file>
    (+ data.mask_val=true). A seed sets train.seed only: the split and the masked labels are the same for every run.

    Args:
        methods: the method names.
        seeds: the seeds.
        out: the experiment's folder.
        configs: config files of every run.
        overrides: overrides of every run.
        masked_file: the masked label file.
        mask_val: the val split is masked too.

    Returns:
        The PlannedRuns.
    """
    runs = []
    for method in methods:
        method_configs: tuple[str, ...] = ()
        if method in FULL_METHODS:
            specific: tuple[str, ...] = ("mode=supervised", *FULL_METHODS[method])
        else:
            method_configs, objective = COMPOSITE_METHODS.get(
                method, ((), ("spml.objective=loss", f"loss.name={method}"))
            )
            specific = (
                "mode=spml",
                *objective,
                f"data.masked_labels={masked_file.resolve()}",
                *(("data.mask_val=true",) if mask_val else ()),
            )
        for seed in seeds:
            run_dir = out / slug(method) / f"seed{seed}"
            runs.append(
                PlannedRun(
                    method,
                    seed,
                    run_dir,
                    configs + method_configs,
                    (*overrides, *specific, f"train.seed={seed}", f"train.out={run_dir}"),
                )
            )
    return runs


def reference(methods: list[str]) -> dict[str, list[str]]:
    """Recovery ratio references when an AN run and at least one full-label variant are run.

    Args:
        methods: the method names run.

    Returns:
        {"full": the full-label variants run (FULL_METHODS), "an": [AN]}, or {} without both.
    """
    full = [method for method in methods if method in FULL_METHODS]
    return {"full": full, "an": [AN]} if full and AN in methods else {}


def compared_method(methods: list[str]) -> str:
    """The method whose paired differences to the other single-positive methods the results report.

    Args:
        methods: the method names run.

    Returns:
        mpc when run, else "".
    """
    return MPC if MPC in methods else ""
