"""`build_data(config) -> DataBundle`: the one data entry point of the engine.

Label table (READERS) -> image-existence check (data.missing; skipped with a data.cache, whose own
check covers the files) -> patient-wise split -> uncertainty policy -> training labels -> header check:
every image of every split is opened and its header read before the first step (no decoding; with a
data.cache, the failures the cache recorded when it decoded the files). data.bad_images=error stops
naming the files and reasons; skip leaves them out of their split (the split assignment does not
change), counts them against data.bad_image_budget and lists them in `DataBundle.left_out` (the Trainer
writes them to <run>/skipped_images.csv).

* spml mode: `observed` of the train split comes from data.masked_labels (checked against its manifest)
  or, without a file, from masking the train split in memory (data.mask_scheme, data.mask_seed,
  data.mask_params; rows without an observed positive are dropped). Train rows absent from the masked
  labels leave the train split. Val keeps its full labels unless data.mask_val; test always does.
* supervised mode: full targets, or with data.masked_labels its 1/0/blank as targets/known.
* data.mask_val: the val split's labels are masked too (from the file, or in memory in spml mode); its
  observed positives are the targets and every other entry is a known negative (as AN assumes), so
  model selection and the class prior (data_stats) see only masked labels; val rows absent from the
  masked labels leave the val split. A masked file whose manifest lists `splits` (masking_experiment)
  may hold rows of those splits only.

`expected_positives` (EPR/ROLE's k) is the mean number of known positives per image of the train split
in supervised mode, and of the fully labelled validation split in spml mode (also under data.mask_val:
one scalar taken from clean labels, as the methods' papers assume k known), so hidden train labels
never leak into training.
"""
from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spml.config import Config, DataConfig
from spml.data import synthetic  # noqa: F401  (registers the "synthetic" reader)
from spml.data.cache import ImageCache
from spml.data.dataset import CacheSource, CXRDataset, FileSource
from spml.data.images import ImageError, Intensity, check_image
from spml.data.labels import apply_uncertainty
from spml.data.masking import align_masked, load_masked_rows, mask_splits, read_manifest
from spml.data.readers import READERS
from spml.data.splits import SPLITS, assign_splits
from spml.data.table import DataError, LabelTable, check_images, dataset_root

log = logging.getLogger(__name__)
MODES = ("spml", "supervised")
BAD_IMAGES = ("error", "skip")
HEADER_THREADS = 8  # header reads wait on file-system latency (network storage) more than on the CPU
LEFT_OUT_COLUMNS = ["split", "path", "reason"]


@dataclass
class DataBundle:
    train: CXRDataset
    val: CXRDataset
    test: CXRDataset
    classes: tuple[str, ...]
    table: LabelTable  # every row after data.missing, before splitting
    manifest: dict[str, Any] | None  # masking manifest of the train labels (None: full labels)
    pos_counts: np.ndarray  # (C,) observed (spml) or known (supervised) positives per class in train
    expected_positives: float  # mean positives per image (see the module docstring)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # each split's rows, in dataset order
    left_out: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LEFT_OUT_COLUMNS))  # header check


def read_table(config: DataConfig) -> LabelTable:
    """The reader of data.dataset, without the image-existence check."""
    return READERS.get(config.dataset)(config)


def read_split(config: DataConfig) -> tuple[LabelTable, np.ndarray]:
    """The table after the image-existence check (data.missing) and its (N,) split names (data.split)."""
    table = read_table(config)
    if not config.cache:
        table = check_images(table, config.missing)
    return table, assign_splits(table, config)


def masked_labels(config: Config, table: LabelTable, split: np.ndarray, names: tuple[str, ...]
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """Masked labels of the splits `names` -> ((N, C) 1/0/NaN aligned with `table`, (N,) the row has masked
    labels, manifest | None): data.masked_labels, else (spml mode) each split masked in memory; supervised
    mode without a file keeps full labels (all NaN, every row present)."""
    data, root = config.data, dataset_root(config.data)
    if data.masked_labels:
        values, present = load_masked_rows(data.masked_labels, table, root)
        manifest = read_manifest(data.masked_labels)
        allowed = list(manifest.get("splits", SPLITS))
        foreign = present & ~np.isin(split, allowed)
        if foreign.any():
            raise DataError(f"{data.masked_labels} was masked for the splits {allowed} but holds {int(foreign.sum())} "
                            f"rows of this run's {split[foreign][0]} split: it was made with other split settings "
                            "(data.split, data.split_seed, data.val_fraction, data.test_fraction, data.views, "
                            "data.missing)")
        missing = [name for name in names if name not in allowed]
        if missing:
            raise DataError(f"{data.masked_labels} holds no {missing[0]} rows (masked for {allowed}); data.mask_val "
                            "needs a file masked with the val split (tools/masking_experiment.py --mask-val)")
        return values, present, manifest
    if config.mode == "supervised":
        return np.full((len(table.frame), len(table.classes)), np.nan), np.ones(len(table.frame), bool), None
    frame, manifest = mask_splits(table, split, names, data.mask_scheme, data.mask_seed, data.mask_no_positive, root,
                                  **data.mask_params)
    values, present = align_masked(frame, table, root)
    return values, present, manifest


def image_intensity(config: DataConfig) -> Intensity:
    """The intensity policy of data.intensity and data.intensity_percentiles (spml.data.images)."""
    return Intensity(config.intensity, tuple(config.intensity_percentiles))


def header_problems(config: DataConfig, paths: list[str]) -> np.ndarray:
    """(N,) object array: why each image cannot be used ("" when it can), from opening each file and reading
    its header (no decoding); with data.cache, the reasons the cache recorded when it decoded the files."""
    if config.dataset == "synthetic":
        return np.full(len(paths), "", dtype=object)
    if config.cache:
        cache = ImageCache(config.cache, config.size, image_intensity(config))
        return cache.index["error"].to_numpy(dtype=object)[cache.rows(paths)]
    with ThreadPoolExecutor(HEADER_THREADS) as pool:
        return np.array(list(pool.map(header_problem, paths, chunksize=64)), dtype=object)


def header_problem(path: str) -> str:
    """Why the image at `path` cannot be used, from its header ("" when it can)."""
    try:
        check_image(path)
    except ImageError as err:
        return err.reason
    return ""


def leave_out_bad_images(config: DataConfig, table: LabelTable, rows: dict[str, np.ndarray]
                         ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The header check of every split's images under data.bad_images (see the module docstring)
    -> (rows of each split without the bad images, left-out images: split, path, reason)."""
    if config.bad_images not in BAD_IMAGES:
        raise DataError(f"data.bad_images={config.bad_images!r}; choose from {list(BAD_IMAGES)}")
    names = list(rows)
    positions = np.concatenate([rows[name] for name in names])
    paths = table.frame["path"].to_numpy(dtype=object)[positions]
    reasons = header_problems(config, paths.tolist())
    bad = reasons != ""
    splits = np.repeat(names, [len(rows[name]) for name in names])
    left_out = pd.DataFrame({"split": splits[bad], "path": paths[bad], "reason": reasons[bad]},
                            columns=LEFT_OUT_COLUMNS)
    if left_out.empty:
        return rows, left_out
    examples = "; ".join(f"{path}: {reason}" for path, reason in zip(left_out["path"][:3], left_out["reason"][:3]))
    counts = ", ".join(f"{name} {int((left_out['split'] == name).sum())}" for name in names)
    found = f"{len(left_out)} of {len(paths)} images cannot be used ({counts}), e.g. {examples}"
    if config.bad_images == "error":
        raise DataError(f"{found}. Found before training by reading every image header; fix or remove the files, "
                        "or set data.bad_images=skip to leave them out")
    if len(left_out) > config.bad_image_budget:
        raise DataError(f"{found}: over data.bad_image_budget={config.bad_image_budget} (found before training by "
                        "reading every image header); fix or remove the files, or raise data.bad_image_budget")
    message = f"data.bad_images=skip: {found}; they leave their splits before training"
    log.warning(message)
    warnings.warn(message, stacklevel=3)
    kept = {name: rows[name][~bad[splits == name]] for name in names}
    return kept, left_out


def make_dataset(config: DataConfig, table: LabelTable, targets: np.ndarray, known: np.ndarray,
                 observed: np.ndarray | None) -> CXRDataset:
    """CXRDataset of one split; images from the synthetic generator, the uint8 cache or the files."""
    paths = table.frame["path"].tolist()
    if config.dataset == "synthetic":
        source = synthetic.synthetic_source(config, table)
    elif config.cache:
        source = CacheSource(config.cache, paths, config.size, image_intensity(config))
    else:
        source = FileSource(paths, config.size, image_intensity(config))
    return CXRDataset(source, targets.astype(np.float32), known.astype(bool), observed,
                      bad_images=config.bad_images, bad_image_budget=config.bad_image_budget)


def build_data(config: Config) -> DataBundle:
    """Read, check, split and label the data of `config` (see the module docstring)."""
    if config.mode not in MODES:
        raise DataError(f"mode={config.mode!r}; choose from {list(MODES)}")
    data = config.data
    image_intensity(data)  # data.intensity* are checked for every dataset, before reading anything
    if data.mask_val and config.mode == "supervised" and not data.masked_labels:
        raise DataError("data.mask_val=true in supervised mode needs data.masked_labels (a file masked with the "
                        "val split)")
    table, split = read_split(data)
    targets, known = apply_uncertainty(table.values(), table.classes, data.uncertainty, data.uncertain_ones,
                                       data.blank)
    masked_splits = ("train", "val") if data.mask_val else ("train",)
    values, present, manifest = masked_labels(config, table, split, masked_splits)
    rows = {name: np.flatnonzero((split == name) & (present | (name not in masked_splits))) for name in SPLITS}
    for name in masked_splits:
        dropped = int(((split == name) & ~present).sum())
        if dropped:
            log.info("%d of %d %s rows have no masked labels and leave the %s split", dropped,
                     int((split == name).sum()), name, name)
    rows, left_out = leave_out_bad_images(data, table, rows)
    masked = values[rows["train"]]
    for name in SPLITS:
        if not len(rows[name]):
            raise DataError(f"the {name} split is empty (data.split={data.split}, data.val_fraction="
                            f"{data.val_fraction}, data.test_fraction={data.test_fraction}, {len(table.frame)} images)")
    train_targets, train_known = targets[rows["train"]], known[rows["train"]]
    observed = None
    if config.mode == "spml":
        observed = masked == 1
        unobserved_rows = int((~observed.any(1)).sum())
        if unobserved_rows:
            log.warning("%d train rows have no observed positive (%s, no_positive=%s)", unobserved_rows,
                        f"masked file {data.masked_labels}" if data.masked_labels else "masked in memory",
                        manifest.get("no_positive") if manifest else None)
        pos_counts = observed.sum(0)
        val_positives = (targets[rows["val"]] > 0.5) & known[rows["val"]]
        expected_positives = float(val_positives.sum(1).mean())
    else:
        if data.masked_labels:
            train_targets, train_known = (masked == 1).astype(np.float32), ~np.isnan(masked)
        positives = (train_targets > 0.5) & train_known
        pos_counts = positives.sum(0)
        expected_positives = float(positives.sum(1).mean())
    subsets = {name: table.subset(rows[name]) for name in SPLITS}
    datasets = {name: make_dataset(data, subsets[name], targets[rows[name]], known[rows[name]], None)
                for name in ("val", "test")}
    if data.mask_val:
        val_masked = values[rows["val"]] == 1
        datasets["val"] = make_dataset(data, subsets["val"], val_masked, np.ones_like(val_masked), None)
    datasets["train"] = make_dataset(data, subsets["train"], train_targets, train_known, observed)
    log.info("data %s: %s images (train %d, val %d, test %d), %d classes", data.dataset, len(table.frame),
             *(len(rows[name]) for name in SPLITS), len(table.classes))
    return DataBundle(datasets["train"], datasets["val"], datasets["test"], table.classes, table, manifest,
                      pos_counts.astype(np.int64), expected_positives,
                      {name: subsets[name].frame for name in SPLITS}, left_out)
