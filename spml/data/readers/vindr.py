"""VinDr-CXR (Nguyen et al. 2022, PhysioNet vindr-cxr 1.0.0): image-level labels of 28 findings and diagnoses.

annotations/image_labels_train.csv holds one row per image and radiologist (image_id, rad_id, one 0/1 column per
label; three readers per training image); annotations/image_labels_test.csv one consensus row per test image (five
readers), without rad_id and with "Other disease" for the training file's "Other diseases". Images are
train/<image_id>.dicom and test/<image_id>.dicom under the root. No patient id is published: each image is its own
patient.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from spml.data.labels import parse_label_values, select_classes
from spml.data.readers import READERS
from spml.data.table import (
    DataError,
    LabelTable,
    check_paths,
    dataset_root,
    first_existing,
    make_table,
    read_csv,
    resolve_image_paths,
)

KEYS = ("image_id", "rad_id")
RENAMED = {"Other disease": "Other diseases"}  # the test file's name -> the training file's
SPLIT_FILES = {"train": "image_labels_train.csv", "test": "image_labels_test.csv"}


def label_file(root: str, split: str) -> str:
    """root/annotations/<file> or root/<file> (plain or .gz) for the split's label file.

    Args:
        root: the dataset folder.
        split: "train" | "test".

    Returns:
        The file's path (an error when none exists).
    """
    names = [
        os.path.join(root, folder, SPLIT_FILES[split] + gz) for folder in ("annotations", "") for gz in ("", ".gz")
    ]
    return first_existing(names, f"VinDr-CXR {SPLIT_FILES[split]}", "data.labels or data.root")


def image_votes(file: str, classes: Sequence[str], agreement: int) -> tuple[pd.DataFrame, tuple[str, ...], str]:
    """One label file -> image-level labels by reader agreement.

    An image is positive for a class when at least `agreement` of its readers (rows with its image_id) marked it.

    Args:
        file: the label file.
        classes: the labels to read; empty = every label column of the file.
        agreement: readers who must mark a finding.

    Returns:
        (frame of image_id + one 0/1 column per class, the classes, sha256).
    """
    frame, digest = read_csv(file, KEYS[:1])
    frame = frame.rename(columns=RENAMED)
    available = [name for name in frame.columns if name not in KEYS]
    chosen = select_classes(classes, available, available)
    values = pd.DataFrame(parse_label_values(frame, chosen, file), columns=list(chosen))
    if np.isnan(values.to_numpy()).any() or (values.to_numpy() < 0).any():
        raise DataError(f"{file}: VinDr-CXR labels are 0 or 1; found blanks or -1 in {list(chosen)}")
    values.insert(0, "image_id", frame["image_id"].str.strip())
    votes = values.groupby("image_id", sort=False).sum()
    return (votes >= agreement).astype(np.float64).reset_index(), chosen, digest


@READERS.register("vindr")
def read_vindr(
    root: str = "",
    labels: str = "",
    views: Sequence[str] = (),
    classes: Sequence[str] = (),
    official_split: bool = False,
    allow_outside_root: bool = False,
    agreement: int = 1,
) -> LabelTable:
    """VinDr-CXR image labels -> LabelTable (values 0/1).

    Args:
        root: the dataset folder (train/, test/, annotations/); "" = the label file's folder.
        labels: the training label file; "" = root/annotations/image_labels_train.csv.
        views: must be empty (the files name no view).
        classes: the labels to read, in this order; empty = every label column of the file.
        official_split: add image_labels_test.csv (beside the training file) as the test split.
        allow_outside_root: accept image paths that resolve outside `root`.
        agreement: readers who must mark a finding for a training image to be positive (1 = any of the three,
            2 = majority); the test file's consensus rows are taken as written.

    Returns:
        The LabelTable: one row per image, its path root/<split>/<image_id>.dicom, patient_id = image_id.
    """
    if views:
        raise DataError("data.views: VinDr-CXR's label files name no view; leave data.views empty")
    if agreement < 1:
        raise DataError(f"agreement={agreement}: at least one reader must mark a finding")
    root = dataset_root(root, labels)
    files = {"train": labels or label_file(root, "train")}
    if official_split:
        folder = os.path.dirname(os.path.abspath(files["train"]))
        files["test"] = first_existing(
            [os.path.join(folder, SPLIT_FILES["test"] + gz) for gz in ("", ".gz")],
            "VinDr-CXR image_labels_test.csv (the official test split)",
            "data.split",
        )
    parts, digests = [], []
    for split, file in files.items():  # the test file must hold the training file's classes
        votes, classes, digest = image_votes(file, classes, agreement)
        parts.append(votes.assign(split=split))
        digests.append(digest)
    frame = pd.concat(parts, ignore_index=True)
    check_paths(frame["image_id"], " + ".join(files.values()), "image_id")
    written = frame["split"] + "/" + frame["image_id"] + ".dicom"
    paths = resolve_image_paths(written, root, files["train"], "image_id", allow_outside_root)
    meta = {"path": paths, "patient_id": frame["image_id"].to_numpy(), "view": np.full(len(frame), "", dtype=object)}
    return make_table(
        meta,
        frame[list(classes)].to_numpy(),
        classes,
        os.path.abspath(files["train"]),
        digests[0],
        frame["split"].to_numpy(dtype=object) if official_split else None,
    )
