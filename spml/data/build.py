"""`build_data(config) -> DataBundle`: the one data entry point of the engine.

Label table (READERS) -> image-existence check (data.missing; skipped with a data.cache, whose own
check covers the files) -> patient-wise split -> uncertainty policy -> training labels:

* spml mode: `observed` of the train split comes from data.masked_labels (checked against its manifest)
  or, without a file, from masking the train split in memory (data.mask_scheme, data.mask_seed,
  data.mask_params; rows without an observed positive are dropped). Train rows absent from the masked
  labels leave the train split. Val/test keep their full labels.
* supervised mode: full targets, or with data.masked_labels its 1/0/blank as targets/known.

`expected_positives` (EPR/ROLE's k) is the mean number of known positives per image of the train split
in supervised mode, and of the (fully labelled) validation split in spml mode, so hidden train labels
never leak into training.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spml.config import Config, DataConfig
from spml.data import synthetic  # noqa: F401  (registers the "synthetic" reader)
from spml.data.dataset import CacheSource, CXRDataset, FileSource
from spml.data.labels import apply_uncertainty
from spml.data.masking import align_masked, load_masked_rows, mask_table, read_manifest
from spml.data.readers import READERS
from spml.data.splits import SPLITS, assign_splits
from spml.data.table import DataError, LabelTable, check_images, dataset_root

log = logging.getLogger(__name__)
MODES = ("spml", "supervised")


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


def read_table(config: DataConfig) -> LabelTable:
    """The reader of data.dataset, without the image-existence check."""
    return READERS.get(config.dataset)(config)


def train_labels(config: Config, table: LabelTable, train_rows: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """Masked labels of the train rows (positions in `table`) -> ((n, C) 1/0/NaN, (n,) the row has masked
    labels, manifest | None). A masked file was made from the whole table, so it is aligned on that."""
    data, root = config.data, dataset_root(config.data)
    if data.masked_labels:
        values, present = load_masked_rows(data.masked_labels, table, root)
        return values[train_rows], present[train_rows], read_manifest(data.masked_labels)
    if config.mode == "supervised":
        return np.zeros((len(train_rows), 0)), np.ones(len(train_rows), bool), None
    train = table.subset(train_rows)
    frame, manifest = mask_table(train, data.mask_scheme, data.mask_seed, data.mask_no_positive, root,
                                 **data.mask_params)
    values, present = align_masked(frame, train, root)
    return values, present, manifest


def make_dataset(config: DataConfig, table: LabelTable, targets: np.ndarray, known: np.ndarray,
                 observed: np.ndarray | None) -> CXRDataset:
    """CXRDataset of one split; images from the synthetic generator, the uint8 cache or the files."""
    paths = table.frame["path"].tolist()
    if config.dataset == "synthetic":
        source = synthetic.synthetic_source(config, table)
    elif config.cache:
        source = CacheSource(config.cache, paths, config.size)
    else:
        source = FileSource(paths, config.size)
    return CXRDataset(source, targets.astype(np.float32), known.astype(bool), observed,
                      bad_images=config.bad_images, bad_image_budget=config.bad_image_budget)


def build_data(config: Config) -> DataBundle:
    """Read, check, split and label the data of `config` (see the module docstring)."""
    if config.mode not in MODES:
        raise DataError(f"mode={config.mode!r}; choose from {list(MODES)}")
    data = config.data
    table = read_table(data)
    if not data.cache:
        table = check_images(table, data.missing)
    split = assign_splits(table, data)
    targets, known = apply_uncertainty(table.values(), table.classes, data.uncertainty, data.uncertain_ones,
                                       data.blank)
    parts = {name: np.flatnonzero(split == name) for name in SPLITS}
    masked, present, manifest = train_labels(config, table, parts["train"])
    rows = {name: parts[name] for name in SPLITS}
    rows["train"] = parts["train"][present]
    masked = masked[present]
    if not present.all():
        log.info("%d of %d train rows have no masked labels and leave the train split", (~present).sum(), len(present))
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
            log.warning("%d train rows have no observed positive (masked file %s, no_positive=%s)", unobserved_rows,
                        data.masked_labels, manifest.get("no_positive") if manifest else None)
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
    datasets["train"] = make_dataset(data, subsets["train"], train_targets, train_known, observed)
    log.info("data %s: %s images (train %d, val %d, test %d), %d classes", data.dataset, len(table.frame),
             *(len(rows[name]) for name in SPLITS), len(table.classes))
    return DataBundle(datasets["train"], datasets["val"], datasets["test"], table.classes, table, manifest,
                      pos_counts.astype(np.int64), expected_positives,
                      {name: subsets[name].frame for name in SPLITS})
