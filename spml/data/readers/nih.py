"""NIH ChestX-ray14: Data_Entry_2017(_v2020).csv, images under images*/ (or one folder), official lists."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from spml.data.labels import parse_findings, select_classes
from spml.data.readers import READERS
from spml.data.table import (
    DataError,
    LabelTable,
    dataset_root,
    first_existing,
    make_table,
    read_csv,
    resolve_image_paths,
    row_error,
    view_mask,
)

CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
NO_FINDING = "No Finding"  # all zero; selectable as a class of its own through data.classes
LABEL_FILES = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
)
SPLIT_LISTS = {"train": "train_val_list.txt", "test": "test_list.txt"}
COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "View Position")
SEX_COLUMNS = ("Patient Gender", "Patient Sex")  # v2020 may say Sex


def image_folders(root: str) -> list[str]:
    """root/images*/ (and images*/images/, as the archives unpack), then root itself.

    Args:
        root: the dataset folder.

    Returns:
        The folders to look for images in, in order.
    """
    folders = []
    if os.path.isdir(root):
        with os.scandir(root) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir() and entry.name.startswith("images"):
                    folders.append(entry.path)
                    if os.path.isdir(os.path.join(entry.path, "images")):
                        folders.append(os.path.join(entry.path, "images"))
    return [*folders, root]


def image_paths(root: str, names: pd.Series) -> np.ndarray:
    """Absolute path of each image name.

    The folder that holds it (one scandir per folder; "./x.png" is looked up as "x.png"), else the first images*/
    folder (check_images then reports it missing).

    Args:
        root: the dataset folder.
        names: the image names (Image Index).

    Returns:
        (N,) paths, object array.
    """
    folders = image_folders(root)
    where: dict[str, str] = {}
    for folder in reversed(folders):  # earlier folders win
        if os.path.isdir(folder):
            with os.scandir(folder) as entries:
                where.update((entry.name, folder) for entry in entries if entry.is_file())
    default = folders[0]
    return np.array([os.path.join(where.get(os.path.normpath(name), default), name) for name in names], dtype=object)


def listed_split(root: str, names: pd.Series, file: str) -> np.ndarray:
    """ "train" (train_val_list.txt) / "test" (test_list.txt) per image name.

    A missing list, an image in both lists or in neither is a DataError.

    Args:
        root: the folder holding the lists.
        names: the image names.
        file: the label file (named in errors).

    Returns:
        (N,) split name per image, object array.
    """
    split = pd.Series("", index=names.index, dtype=object)
    for label, list_name in SPLIT_LISTS.items():
        list_path = os.path.join(root, list_name)
        if not os.path.isfile(list_path):
            raise DataError(
                f"data.split=official|given needs {list_path} (NIH official split list); "
                "or use data.split=random|stratified"
            )
        with open(list_path, encoding="utf-8") as handle:
            listed = {line.strip() for line in handle if line.strip()}
        member = names.isin(listed)
        if (member & (split != "")).any():
            raise DataError(f"{names[member & (split != '')].iloc[0]!r} is in both {list(SPLIT_LISTS.values())}")
        split[member] = label
    unlisted = split == ""
    if unlisted.any():
        raise DataError(
            f"{int(unlisted.sum())} images of {file} are in neither {list(SPLIT_LISTS.values())} "
            f"under {root}, e.g. {names[unlisted].head(3).tolist()}"
        )
    return split.to_numpy()


@READERS.register("nih")
def read_nih(
    root: str = "",
    labels: str = "",
    views: Sequence[str] = (),
    classes: Sequence[str] = (),
    official_split: bool = False,
    allow_outside_root: bool = False,
) -> LabelTable:
    """NIH ChestX-ray14 label file -> LabelTable (values 0/1 only).

    Args:
        root: the dataset folder (images under root/images*/ or root itself); "" = the label file's folder.
        labels: Data_Entry_2017(_v2020).csv(.gz); "" = the first of LABEL_FILES under root.
        views: keep only these View Position values (e.g. ["PA"]); empty keeps every row.
        classes: the findings to read, in this order (NIH's 14, or "No Finding"); empty = CLASSES.
        official_split: read train_val_list.txt / test_list.txt beside the images into the table's
            official_split column (data.split=official|given).
        allow_outside_root: accept image paths that resolve outside `root`.

    Returns:
        The LabelTable: one row per image of the kept views, one 0/1 column per class.
    """
    root = dataset_root(root, labels)
    file = labels or first_existing(
        [os.path.join(root, name) for name in LABEL_FILES], "NIH label file", "data.labels or data.root"
    )
    frame, digest = read_csv(file, COLUMNS)
    sex_column = next((name for name in SEX_COLUMNS if name in frame.columns), None)
    if sex_column is None:
        raise DataError(
            f"{file}: missing column {' or '.join(map(repr, SEX_COLUMNS))}; the header has {list(frame.columns)}"
        )
    names = frame["Image Index"].str.strip()
    paths = resolve_image_paths(names, root, file, "Image Index", allow_outside_root, image_paths(root, names))
    patients = frame["Patient ID"].str.strip()
    if (patients == "").any():
        raise row_error(file, int(np.flatnonzero((patients == "").to_numpy())[0]) + 1, "Patient ID", "empty")
    classes = select_classes(classes, (*CLASSES, NO_FINDING), CLASSES)
    values, _ = parse_findings(
        frame["Finding Labels"].str.strip(), classes, NO_FINDING, file, "Finding Labels", vocabulary=CLASSES
    )
    keep = view_mask(frame["View Position"].str.strip(), views, file, "View Position")
    split = listed_split(root, names, file) if official_split else None
    meta = {
        "path": paths,
        "patient_id": patients.to_numpy(),
        "view": frame["View Position"].str.strip().to_numpy(),
        "sex": frame[sex_column].str.strip().to_numpy(),
        "age": pd.to_numeric(frame["Patient Age"].str.extract(r"^\s*(\d+)")[0], errors="coerce").to_numpy(),
    }
    table = make_table(meta, values, classes, os.path.abspath(file), digest, split)
    return table.subset(keep)
