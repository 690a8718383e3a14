"""CheXpert(-v1.0-small): train.csv / valid.csv with 1/0/-1/blank observations, paths under the root; the official
test set's test_labels.csv (one row per study: Study + the observations) joined to the study folders' images."""

from __future__ import annotations

import os
import re
import warnings
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
    row_error,
)

CLASSES = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
PREFIX = r"^CheXpert-v1\.0(?:-small)?/"
ORIENTATIONS = {"frontal": "Frontal", "lateral": "Lateral"}  # data.views entries for Frontal/Lateral
# The 500-study test set whose labels are public: one row per study (Study = test/patientNNNNN/studyN, optionally
# prefixed CheXpert-v1.0/), its images in that folder under the root (view1_frontal.jpg, view2_lateral.jpg, ...).
TEST_FILES = ("test_labels.csv", "test_labels.csv.gz")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def view_filter(frame: pd.DataFrame, views: tuple[str, ...], file: str) -> np.ndarray:
    """Which rows pass data.views.

    "frontal"/"lateral" entries filter Frontal/Lateral, the others (AP, PA, ...) filter AP/PA; a row is kept when it
    passes both kinds that are given; letter case does not matter (`pa` is PA). A filter that keeps no row is a
    DataError.

    Args:
        frame: the label file's rows (Frontal/Lateral and AP/PA columns).
        views: the view entries (empty keeps all).
        file: the label file (named in errors).

    Returns:
        (N,) bool, True for a kept row.
    """
    keep = np.ones(len(frame), bool)
    orientation = [ORIENTATIONS[v.lower()] for v in views if v.lower() in ORIENTATIONS]
    projection = [v for v in views if v.lower() not in ORIENTATIONS]
    for column, wanted in (("Frontal/Lateral", orientation), ("AP/PA", projection)):
        if wanted:
            keep &= frame[column].str.strip().str.upper().isin([w.upper() for w in wanted]).to_numpy()
    if not keep.any():
        raise DataError(
            f"data.views={list(views)} keeps no row of {file}; Frontal/Lateral has "
            f"{sorted(frame['Frontal/Lateral'].unique())}, AP/PA has {sorted(frame['AP/PA'].unique())}"
        )
    return keep


def read_file(
    file: str, root: str, classes: Sequence[str], views: Sequence[str], allow_outside_root: bool, split: str | None
) -> tuple[LabelTable, np.ndarray]:
    """One CheXpert CSV (train.csv / valid.csv layout) -> (unfiltered LabelTable, view filter).

    Args:
        file: the CSV.
        root: as read_chexpert's.
        classes: as read_chexpert's.
        views: as read_chexpert's.
        allow_outside_root: as read_chexpert's.
        split: the official split name of its rows (None: no official_split column).

    Returns:
        (the LabelTable of every row, (N,) bool view filter).
    """
    frame, digest = read_csv(file, COLUMNS)
    return read_frame(frame, digest, file, root, classes, views, allow_outside_root, split)


def read_frame(
    frame: pd.DataFrame,
    digest: str,
    file: str,
    root: str,
    classes: Sequence[str],
    views: Sequence[str],
    allow_outside_root: bool,
    split: str | None,
) -> tuple[LabelTable, np.ndarray]:
    """The rows of a CheXpert label file (COLUMNS + observations, as strings) -> (unfiltered LabelTable, view filter).

    Args:
        frame: the rows, as strings.
        digest: sha256 of the file's bytes.
        file: the file (named in errors, recorded as the table's source).
        root: the folder the paths are relative to (after the CheXpert-v1.0(-small)/ prefix).
        classes: the findings to read; empty = CLASSES.
        views: the view filter's entries.
        allow_outside_root: accept image paths that resolve outside `root`.
        split: fills the table's official split column (None: no such column).

    Returns:
        (the LabelTable of every row, (N,) bool view filter).
    """
    classes = select_classes(classes, [c for c in frame.columns if c not in COLUMNS], CLASSES)
    relative = frame["Path"].str.strip().str.replace(PREFIX, "", regex=True)
    paths = resolve_image_paths(frame["Path"].str.strip(), root, file, "Path", allow_outside_root, relative)
    ids = relative.str.extract(r"(patient\d+)(?:/(study\d+))?")
    patients = ids[0]
    if patients.isna().any():
        row = int(np.flatnonzero(patients.isna().to_numpy())[0])
        raise row_error(file, row + 1, "Path", f"no patientNNNNN folder in {frame['Path'].iloc[row]!r}")
    projection = frame["AP/PA"].str.strip()
    meta = {
        "path": paths,
        "patient_id": patients.to_numpy(),
        "study_id": (patients + "/" + ids[1].fillna("")).to_numpy(),
        "view": projection.where(projection != "", frame["Frontal/Lateral"].str.strip()).to_numpy(),
        "sex": frame["Sex"].str.strip().to_numpy(),
        "age": pd.to_numeric(frame["Age"], errors="coerce").to_numpy(),
    }
    values = parse_label_values(frame, classes, file)
    splits = None if split is None else np.full(len(frame), split, dtype=object)
    table = make_table(meta, values, classes, os.path.abspath(file), digest, splits)
    table.frame.attrs[NO_FINDING_CONFLICTS] = no_finding_conflicts(frame, file)
    return table, view_filter(frame, tuple(views), file)


def study_images(file: str, root: str) -> tuple[pd.DataFrame, str]:
    """The official test file (`Study` + the observations, one row per study) joined to its images.

    One row per image file (IMAGE_SUFFIXES) in <root>/<Study>/ (the CheXpert-v1.0 prefix removed), in the train.csv
    layout (Path; Frontal/Lateral from the file name, "lateral" in it or else Frontal; AP/PA, Sex, Age unknown) with
    the study's labels. A study without an image file is a DataError naming its row.

    Args:
        file: test_labels.csv(.gz).
        root: the dataset folder.

    Returns:
        (frame of strings, sha256 of the test file's bytes).
    """
    frame, digest = read_csv(file, ("Study",))
    rows, paths, orientations = [], [], []
    for row, study in enumerate(frame["Study"].str.strip()):
        relative = re.sub(PREFIX, "", study).strip("/")
        folder = os.path.join(root, relative)
        names = (
            sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_SUFFIXES))
            if os.path.isdir(folder)
            else []
        )
        if not names:
            raise row_error(file, row + 1, "Study", f"no image file ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        for name in names:
            rows.append(row)
            paths.append(f"{relative}/{name}")
            orientations.append("Lateral" if "lateral" in name.lower() else "Frontal")
    images = frame.drop(columns="Study").iloc[rows].reset_index(drop=True)
    meta = pd.DataFrame({"Path": paths, "Sex": "", "Age": "", "Frontal/Lateral": orientations, "AP/PA": ""})
    return pd.concat([meta, images], axis=1), digest


NO_FINDING_CONFLICTS = "no_finding_conflicts"
NOT_PATHOLOGY = ("No Finding", "Support Devices")  # CheXpert's No Finding means no pathology; devices may be present


def no_finding_conflicts(frame: pd.DataFrame, file: str) -> int:
    """Rows with No Finding = 1 and a pathology = 1.

    The contradiction the NIH reader refuses; the real train.csv has none: its 8,808 rows with No Finding = 1 and a
    finding = 1 all name Support Devices, which is no pathology. Warned with the count and the first line;
    build_data records the count in data_stats.json.

    Args:
        frame: the label file's rows.
        file: the file (named in the warning).

    Returns:
        The number of such rows.
    """
    pathologies = [c for c in CLASSES if c not in NOT_PATHOLOGY and c in frame.columns]
    values = parse_label_values(frame, ["No Finding", *pathologies], file)
    conflicts = np.flatnonzero((values[:, 0] == 1) & (values[:, 1:] == 1).any(axis=1))
    if conflicts.size:
        row = int(conflicts[0])
        named = [c for c, v in zip(pathologies, values[row, 1:]) if v == 1]
        warnings.warn(
            f"{file}: {conflicts.size} rows have No Finding = 1 and a pathology = 1, e.g. line {row + 2} "
            f"({named}); their labels are used as written",
            stacklevel=3,
        )
    return int(conflicts.size)


@READERS.register("chexpert")
def read_chexpert(
    root: str = "",
    labels: str = "",
    views: Sequence[str] = (),
    classes: Sequence[str] = (),
    official_split: bool = False,
    allow_outside_root: bool = False,
) -> LabelTable:
    """CheXpert train.csv -> LabelTable (1/0/-1/blank). With `official_split` the files beside it give the split:
    with the official test set's test_labels.csv (TEST_FILES; study_images) train.csv is train, valid.csv val and
    the test set test; without it valid.csv is the test split (data.split=official then carves val from the
    train patients).

    Args:
        root: the folder the CSV's paths are relative to (after the CheXpert-v1.0(-small)/ prefix); "" = the
            label file's folder.
        labels: train.csv(.gz); "" = root/train.csv.
        views: "frontal"/"lateral" filter Frontal/Lateral, others (AP, PA, ...) filter AP/PA; empty keeps all.
        classes: the findings to read, in this order; empty = CLASSES.
        official_split: read the split files beside `labels` and write the official_split column.
        allow_outside_root: accept image paths that resolve outside `root`.

    Returns:
        The LabelTable, one float column per class: 1, 0, -1 uncertain, NaN not mentioned.
    """
    root = dataset_root(root, labels)
    file = labels or first_existing(
        [os.path.join(root, n) for n in ("train.csv", "train.csv.gz")], "CheXpert train.csv", "data.labels or data.root"
    )
    if not official_split:
        table, keep = read_file(file, root, classes, views, allow_outside_root, None)
        return table.subset(keep)
    folder = os.path.dirname(os.path.abspath(file))
    valid_file = first_existing(
        [os.path.join(folder, n) for n in ("valid.csv", "valid.csv.gz")],
        "CheXpert valid.csv (the official split's test set)",
        "data.split",
    )
    test_file = next((path for path in (os.path.join(folder, n) for n in TEST_FILES) if os.path.isfile(path)), None)
    args = (root, classes, views, allow_outside_root)
    parts = [read_file(file, *args, "train"), read_file(valid_file, *args, "val" if test_file else "test")]
    if test_file:
        parts.append(read_frame(*study_images(test_file, root), test_file, *args, "test"))
    train = parts[0][0]
    for table, _ in parts[1:]:
        if table.classes != train.classes:
            raise DataError(
                f"{table.source} has the classes {list(table.classes)}, {train.source} has "
                f"{list(train.classes)}: the split files must name the same observations"
            )
    frame = pd.concat([table.frame[keep] for table, keep in parts], ignore_index=True)
    frame.attrs[NO_FINDING_CONFLICTS] = sum(table.frame.attrs[NO_FINDING_CONFLICTS] for table, _ in parts)
    check_paths(frame["path"], " + ".join(table.source for table, _ in parts), "Path")
    return LabelTable(frame, train.classes, train.source, train.source_hash)
