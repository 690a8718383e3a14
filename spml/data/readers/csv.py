"""Any other dataset: a CSV with a path column and one column per finding or one delimited finding column
(layout in data.csv.*, or found from the header; relative paths are joined with data.root, default the CSV's
folder); optional patient, study and split columns."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spml.data.labels import parse_findings, parse_label_values, select_classes
from spml.data.readers import READERS
from spml.data.splits import parse_split_names
from spml.data.table import DataError, LabelTable, dataset_root, make_table, read_csv, resolve_image_paths, row_error

DELIMITED_COLUMNS = ("findings", "Finding Labels")  # header names read as delimited finding names
UNNAMED = re.compile(r"^Unnamed: \d+$")  # how pandas names a column whose header cell is empty


@dataclass(frozen=True)
class CSVLayout:
    """Column layout of a generic CSV label file (the data.csv.* keys).

    Label layout: `label_columns` (one 1/0/-1/blank column per finding), or `label_column` (one delimited column
    of finding names), or neither: then the header decides (a column of DELIMITED_COLUMNS holds delimited names,
    else every column but the path, patient, study and split columns is a finding column).

    Attributes:
        path_column: the image path column.
        patient_column: the patient id column (empty: every image is its own patient).
        study_column: the study id column (empty: no study ids).
        split_column: train/val/test per row (read when present).
        label_columns: one 1/0/-1/blank column per finding.
        label_column: one delimited column of finding names.
        label_delimiter: the delimiter of label_column.
        no_finding: value in label_column meaning "all negative".
    """

    path_column: str = "path"
    patient_column: str = ""  # empty: every image is its own patient
    study_column: str = ""  # empty: no study ids
    split_column: str = "split"  # train/val/test per row (read when present)
    label_columns: tuple[str, ...] = ()
    label_column: str = ""
    label_delimiter: str = "|"
    no_finding: str = "No Finding"  # value in label_column meaning "all negative"


def label_layout(layout: CSVLayout, header: list[str], file: str) -> tuple[tuple[str, ...], str]:
    """Where the labels are: exactly one of (label_columns, label_column) is set.

    Without data.csv.label_columns / label_column the header decides: a column of DELIMITED_COLUMNS holds delimited
    names; else every column that is not the path, patient, study or split column (nor unnamed) is a finding column.

    Args:
        layout: the configured layout.
        header: the file's column names.
        file: the file (named in errors).

    Returns:
        (label_columns, label_column).
    """
    if layout.label_columns and layout.label_column:
        raise DataError(
            "set one of data.csv.label_columns (one column per finding) and data.csv.label_column "
            "(one delimited column of finding names), not both"
        )
    if layout.label_columns or layout.label_column:
        return tuple(layout.label_columns), layout.label_column
    delimited = [name for name in DELIMITED_COLUMNS if name in header]
    if len(delimited) > 1:
        raise DataError(f"{file}: both {delimited} could hold the finding names; set data.csv.label_column")
    if delimited:
        return (), delimited[0]
    other = {layout.path_column, layout.patient_column, layout.study_column, layout.split_column}
    columns = tuple(name for name in header if name not in other and not UNNAMED.match(name))
    if not columns:
        raise DataError(f"{file}: no finding column in the header {header}; set data.csv.label_columns")
    return columns, ""


def split_column(frame: pd.DataFrame, column: str, required: bool, file: str) -> np.ndarray | None:
    """The file's split per row when it has the split `column`.

    spml.data.splits warns when data.split does not use it; a missing column is refused when `required`
    (data.split=official|given).

    Args:
        frame: the file's rows.
        column: the split column's name.
        required: the column must be present.
        file: the file (named in errors).

    Returns:
        (N,) train / val / test per row, or None without the column.
    """
    if not column or column not in frame.columns:
        if required:
            raise DataError(
                f"data.split=official|given needs a {column!r} column (data.csv.split_column) in "
                f"{file}; the header has {list(frame.columns)}"
            )
        return None
    try:
        return parse_split_names(frame[column], file, column)
    except DataError as err:
        raise DataError(f"{err}; or set data.csv.split_column= to read no split from the file") from None


@READERS.register("csv")
def read_generic_csv(
    labels: str,
    root: str = "",
    layout: CSVLayout = CSVLayout(),
    classes: Sequence[str] = (),
    views: Sequence[str] = (),
    official_split: bool = False,
    allow_outside_root: bool = False,
) -> LabelTable:
    """A CSV label file -> LabelTable; label columns hold 1/0/-1/blank, a label column holds delimited names.

    Args:
        labels: the CSV file.
        root: the folder relative image paths are joined with; "" = the CSV's folder.
        layout: which columns hold what (CSVLayout; the data.csv.* keys).
        classes: the findings to read, in this order; empty = every finding the file has.
        views: must be empty (the format has no view column; a given filter is an error, not ignored).
        official_split: the split column must be present (data.split=official|given).
        allow_outside_root: accept image paths that resolve outside `root`.

    Returns:
        The LabelTable (official_split column when the file has the split column).
    """
    if not labels:
        raise DataError("data.labels: set the CSV label file for data.dataset=csv")
    if views:
        raise DataError("data.views: the generic CSV format has no view column; leave data.views empty")
    file = labels
    frame, digest = read_csv(file, [layout.path_column])
    label_columns, label_column = label_layout(layout, list(frame.columns), file)
    id_columns = [name for name in (layout.patient_column, layout.study_column) if name]
    needed = [*id_columns, *label_columns, *([label_column] if label_column else [])]
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise DataError(f"{file}: missing column(s) {missing}; the header has {list(frame.columns)}")
    relative = frame[layout.path_column].str.strip()
    paths = resolve_image_paths(relative, dataset_root(root, labels), file, layout.path_column, allow_outside_root)
    for column in id_columns:
        empty = (frame[column].str.strip() == "").to_numpy()
        if empty.any():
            raise row_error(file, int(np.flatnonzero(empty)[0]) + 1, column, f"empty id ({int(empty.sum())} such rows)")
    # no patient column: every image is its own patient
    patients = frame[layout.patient_column].str.strip() if layout.patient_column else relative
    if label_column:
        requested = tuple(classes) or None
        values, classes = parse_findings(
            frame[label_column].str.strip(), requested, layout.no_finding, file, label_column, layout.label_delimiter
        )
    else:
        classes = select_classes(classes, label_columns, label_columns)
        try:
            values = parse_label_values(frame, classes, file)
        except DataError as err:
            if layout.label_columns:
                raise
            raise DataError(
                f"{err} (data.csv.label_columns is not set, so every column but the path, patient, "
                f"study and split columns was read as a finding: {list(label_columns)}; set "
                "data.csv.label_columns to the finding columns, or name an id column in "
                "data.csv.patient_column or data.csv.study_column)"
            ) from None
    if not classes:
        raise DataError(f"{file}: no finding names in column {label_column!r}")
    meta = {"path": paths, "patient_id": patients.to_numpy()}
    if layout.study_column:
        meta["study_id"] = frame[layout.study_column].str.strip().to_numpy()
    split = split_column(frame, layout.split_column, official_split, file)
    return make_table(meta, values, classes, os.path.abspath(file), digest, split)
