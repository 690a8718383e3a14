"""MIMIC-CXR-JPG: per-study chexpert/negbio labels joined to the images of metadata.csv, official split csv.
The images are the .jpg files of MIMIC-CXR-JPG, or with data.mimic_format=dcm the .dcm files of the MIMIC-CXR
DICOM release (same files/pXX/p<subject>/s<study>/<dicom_id> layout, same label and metadata files)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from spml.data.labels import parse_label_values, select_classes
from spml.data.readers import READERS
from spml.data.readers.chexpert import CLASSES
from spml.data.table import (
    DataError,
    LabelTable,
    check_paths,
    dataset_root,
    first_existing,
    make_table,
    read_csv,
    resolve_image_paths,
    row_error,
    view_mask,
)

PREFIX = "mimic-cxr-2.0.0-"
KEYS = ["subject_id", "study_id"]
IMAGE_FORMATS = ("jpg", "dcm")  # MIMIC-CXR-JPG, the MIMIC-CXR DICOM release
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}


def mimic_file(root: str, name: str, key: str) -> str:
    """root/mimic-cxr-2.0.0-<name>.csv (or .csv.gz), the first that exists; an error naming `key` otherwise.

    Args:
        root: the dataset folder.
        name: the file's kind (metadata, split, chexpert, negbio).
        key: the config key named in the error.

    Returns:
        The file's path.
    """
    candidates = [os.path.join(root, f"{PREFIX}{name}.csv{gz}") for gz in ("", ".gz")]
    return first_existing(candidates, f"MIMIC-CXR {name} file", key)


def read_study_labels(file: str, classes: Sequence[str]) -> tuple[pd.DataFrame, tuple[str, ...], str]:
    """Per-study label file -> (frame of subject_id, study_id + float class columns, classes, sha256).

    A study listed twice is a DataError.

    Args:
        file: the label file.
        classes: the findings to read; empty = CheXpert's CLASSES.

    Returns:
        (frame, classes read, sha256 of the file's bytes).
    """
    frame, digest = read_csv(file, KEYS)
    classes = select_classes(classes, [c for c in frame.columns if c not in KEYS], CLASSES)
    keys = frame[KEYS].apply(lambda column: column.str.strip())
    repeated = keys.duplicated(keep=False).to_numpy()
    if repeated.any():
        rows = (np.flatnonzero(repeated)[:2] + 1).tolist()
        raise DataError(
            f"{file}: columns {KEYS}: duplicate study rows at data rows {rows} "
            f"({int(repeated.sum())} rows are duplicates)"
        )
    values = pd.DataFrame(parse_label_values(frame, classes, file), columns=list(classes))
    return pd.concat([keys, values], axis=1), classes, digest


def joined_split(file: str, images: pd.DataFrame) -> np.ndarray:
    """train / val (from "validate") / test per image, joined on dicom_id.

    Args:
        file: mimic-cxr-2.0.0-split.csv(.gz).
        images: the images (a dicom_id column).

    Returns:
        (N,) split name per image.
    """
    frame, _ = read_csv(file, ["dicom_id", "split"])
    names = frame["split"].str.strip()
    bad = ~names.isin(list(SPLIT_NAMES))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise row_error(file, row + 1, "split", f"unknown split {names.iloc[row]!r}; allowed {list(SPLIT_NAMES)}")
    lookup = pd.Series(names.map(SPLIT_NAMES).to_numpy(), index=frame["dicom_id"].str.strip())
    if lookup.index.duplicated().any():
        raise DataError(f"{file}: column 'dicom_id': {lookup.index[lookup.index.duplicated()][0]!r} listed twice")
    split = images["dicom_id"].map(lookup)
    if split.isna().any():
        raise DataError(
            f"{int(split.isna().sum())} images are not in {file}, e.g. "
            f"{images['dicom_id'][split.isna()].head(3).tolist()}"
        )
    return split.to_numpy(dtype=object)


@READERS.register("mimic")
def read_mimic(
    root: str = "",
    labels: str = "",
    views: Sequence[str] = (),
    classes: Sequence[str] = (),
    official_split: bool = False,
    image_format: str = "jpg",
    allow_outside_root: bool = False,
) -> LabelTable:
    """Per-study labels given to each image of the study; paths root/files/pXX/p<subject>/s<study>/<dicom>.jpg
    (.dcm with image_format="dcm", data.mimic_format).

    Args:
        root: the folder holding files/ and the mimic-cxr-2.0.0-*.csv(.gz) files; "" = the label file's folder.
        labels: the per-study label file; "" = root's mimic-cxr-2.0.0-chexpert (else -negbio) file.
        views: keep only these ViewPosition values (e.g. ["PA", "AP"]); empty keeps every image.
        classes: the findings to read, in this order; empty = CheXpert's CLASSES.
        official_split: join mimic-cxr-2.0.0-split.csv into the official_split column.
        image_format: "jpg" (MIMIC-CXR-JPG) or "dcm" (the DICOM release).
        allow_outside_root: accept image paths that resolve outside `root`.

    Returns:
        The LabelTable: one row per labelled image, one float column per class (1, 0, -1, NaN).
    """
    if image_format not in IMAGE_FORMATS:
        raise DataError(f"data.mimic_format={image_format!r}; choose from {list(IMAGE_FORMATS)}")
    root = dataset_root(root, labels)
    if labels:
        label_file = labels
    else:
        label_file = first_existing(
            [os.path.join(root, f"{PREFIX}{kind}.csv{gz}") for kind in ("chexpert", "negbio") for gz in ("", ".gz")],
            "MIMIC-CXR label file",
            "data.labels or data.root",
        )
    study_labels, classes, digest = read_study_labels(label_file, classes)
    meta_file = mimic_file(root, "metadata", "data.root")
    images, _ = read_csv(meta_file, ["dicom_id", *KEYS, "ViewPosition"])
    images = images.apply(lambda column: column.str.strip())
    check_paths(images["dicom_id"], meta_file, "dicom_id")
    subject = images["subject_id"]
    relative = (
        "files"
        + os.sep
        + "p"
        + subject.str[:2]
        + os.sep
        + "p"
        + subject
        + os.sep
        + "s"
        + images["study_id"]
        + os.sep
        + images["dicom_id"]
        + "."
        + image_format
    )
    images["path"] = resolve_image_paths(relative, root, meta_file, "dicom_id", allow_outside_root)
    keep = view_mask(images["ViewPosition"], views, meta_file, "ViewPosition")
    joined = images[keep].merge(study_labels, on=KEYS, how="left", indicator=True, validate="many_to_one")
    unlabelled = (joined.pop("_merge") == "left_only").to_numpy()
    if unlabelled.all():
        raise DataError(f"no image of {meta_file} has a study in {label_file} (joined on {KEYS})")
    if unlabelled.any():
        warnings.warn(
            f"{int(unlabelled.sum())} images of {meta_file} have no study row in {label_file}; they are left out",
            stacklevel=2,
        )
        joined = joined[~unlabelled].reset_index(drop=True)
    split = joined_split(mimic_file(root, "split", "data.split"), joined) if official_split else None
    meta = {
        "path": joined["path"].to_numpy(),
        "patient_id": joined["subject_id"].to_numpy(),
        "study_id": joined["study_id"].to_numpy(),
        "view": joined["ViewPosition"].to_numpy(),
    }
    return make_table(meta, joined[list(classes)].to_numpy(), classes, os.path.abspath(label_file), digest, split)
