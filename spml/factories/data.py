"""data.* -> the data layer's plain arguments: the reader of data.dataset, the split, the image settings, the
masking and the label policy; `build_data(config)` is the run's one data entry point."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from spml.config import Config, DataConfig
from spml.data.build import DataBundle, ImageSettings, LabelPolicy, Masking, check_cache_sources
from spml.data.build import build_data as build_bundle
from spml.data.cache import ImageCache
from spml.data.images import Intensity
from spml.data.readers import READERS
from spml.data.readers.csv import CSVLayout
from spml.data.splits import FILE_SPLITS, assign_splits
from spml.data.synthetic import SyntheticSpec
from spml.data.table import LabelTable, check_images, dataset_root


def reader_arguments(data: DataConfig) -> dict[str, Any]:
    """Every argument a reader may take, from data.*; each reader is offered the ones it names.

    Args:
        data: the data section.

    Returns:
        {root, labels, views, classes, official_split (data.split is official|given), allow_outside_root,
        image_format (data.mimic_format), layout (data.csv as a CSVLayout), num_images, images_per_patient, seed}.
    """
    return {
        "root": data.root,
        "labels": data.labels,
        "views": tuple(data.views),
        "classes": tuple(data.classes),
        "official_split": data.split in FILE_SPLITS,
        "allow_outside_root": data.allow_outside_root,
        "image_format": data.mimic_format,
        "layout": CSVLayout(**dataclasses.asdict(data.csv)),
        **dataclasses.asdict(data.synthetic),
    }


def read_table(data: DataConfig) -> LabelTable:
    """The reader of data.dataset (a READERS name), without the image-existence check.

    Args:
        data: the data section.

    Returns:
        The reader's LabelTable.
    """
    reader = READERS.get(data.dataset)
    return reader(**READERS.accepted(data.dataset, reader_arguments(data)))


def read_checked(data: DataConfig) -> LabelTable:
    """The table of data.dataset after the image-existence check (data.missing).

    The check is of the files or, with a data.cache, of the cache's entries (a cache built from part of a dataset
    serves that part under data.missing=drop), whose source files must not have changed since they were decoded
    (spml.data.build.check_cache_sources).

    Args:
        data: the data section.

    Returns:
        The checked LabelTable.
    """
    table = read_table(data)
    if not data.cache:
        return check_images(table, data.missing)
    cache = ImageCache(data.cache, data.size, image_intensity(data))
    table = check_images(table, data.missing, cache.holds, cache.dir)
    check_cache_sources(cache, table.frame["path"].tolist())
    return table


def split_table(table: LabelTable, data: DataConfig) -> np.ndarray:
    """spml.data.splits.assign_splits with data.split, data.val_fraction, data.test_fraction, data.split_seed and
    data.allow_patient_overlap.

    Args:
        table: a reader's LabelTable.
        data: the data section.

    Returns:
        (N,) "train" | "val" | "test" per row.
    """
    return assign_splits(
        table, data.split, data.val_fraction, data.test_fraction, data.split_seed, data.allow_patient_overlap
    )


def read_split(data: DataConfig) -> tuple[LabelTable, np.ndarray]:
    """The table after the image-existence check (data.missing) and its split names (data.split).

    Args:
        data: the data section.

    Returns:
        (the LabelTable, (N,) "train" | "val" | "test" per row).
    """
    table = read_checked(data)
    return table, split_table(table, data)


def synthetic_spec(data: DataConfig) -> SyntheticSpec:
    """The synthetic set's settings from data.synthetic.

    Args:
        data: the data section.

    Returns:
        The SyntheticSpec.
    """
    return SyntheticSpec(**dataclasses.asdict(data.synthetic))


def image_intensity(data: DataConfig) -> Intensity:
    """The intensity policy of data.intensity and data.intensity_percentiles (spml.data.images).

    Args:
        data: the data section.

    Returns:
        The Intensity.
    """
    return Intensity(data.intensity, tuple(data.intensity_percentiles))


def image_settings(data: DataConfig) -> ImageSettings:
    """Where the images of data.dataset come from.

    The phantoms, data.cache or the files (decoded at data.size under data.intensity*), and data.bad_images /
    data.bad_image_budget.

    Args:
        data: the data section.

    Returns:
        The ImageSettings.
    """
    return ImageSettings(
        data.size,
        data.cache,
        image_intensity(data),
        synthetic_spec(data) if data.dataset == "synthetic" else None,
        data.bad_images,
        data.bad_image_budget,
    )


def label_policy(data: DataConfig) -> LabelPolicy:
    """The label policy of data.uncertainty, data.uncertain_ones and data.blank.

    Args:
        data: the data section.

    Returns:
        The LabelPolicy.
    """
    return LabelPolicy(data.uncertainty, tuple(data.uncertain_ones), data.blank)


def masking(data: DataConfig) -> Masking:
    """data.masked_labels, data.mask_* and the dataset root that masked files key their rows by.

    Args:
        data: the data section.

    Returns:
        The Masking.
    """
    return Masking(
        data.masked_labels,
        data.mask_scheme,
        data.mask_seed,
        data.mask_no_positive,
        dict(data.mask_params),
        data.mask_val,
        dataset_root(data.root, data.labels),
    )


def build_data(config: Config) -> DataBundle:
    """Read, check, split and label the data of `config` (spml.data.build's module docstring): data.intensity*
    are checked before anything is read.

    Args:
        config: the run's config (mode and data section).

    Returns:
        The DataBundle (train, val, test datasets, classes, the table, the masking manifest, pos_counts, ...).
    """
    images = image_settings(config.data)
    table, split = read_split(config.data)
    return build_bundle(table, split, config.mode, images, masking(config.data), label_policy(config.data))
