"""Any other dataset: a CSV with a path column and one column per finding or one delimited finding column
(layout in data.csv.*; relative paths are joined with data.root, default the CSV's folder)."""
from __future__ import annotations

import os

import numpy as np

from spml.config import DataConfig
from spml.data.labels import parse_findings, parse_label_values, select_classes
from spml.data.readers import READERS
from spml.data.table import DataError, LabelTable, dataset_root, make_table, read_csv, resolve_image_paths, row_error


@READERS.register("csv")
def read_generic_csv(config: DataConfig) -> LabelTable:
    """data.labels -> LabelTable; label_columns hold 1/0/-1/blank, label_column holds delimited names."""
    layout = config.csv
    if not config.labels:
        raise DataError("data.labels: set the CSV label file for data.dataset=csv")
    if bool(layout.label_columns) == bool(layout.label_column):
        raise DataError("set exactly one of data.csv.label_columns (one column per finding) and "
                        "data.csv.label_column (one delimited column of finding names)")
    if config.views:
        raise DataError("data.views: the generic CSV format has no view column; leave data.views empty")
    label_columns = list(layout.label_columns) or [layout.label_column]
    required = [layout.path_column, *([layout.patient_column] if layout.patient_column else []), *label_columns]
    file = config.labels
    frame, digest = read_csv(file, required)
    relative = frame[layout.path_column].str.strip()
    paths = resolve_image_paths(relative, dataset_root(config), file, layout.path_column, config.allow_outside_root)
    if layout.patient_column:
        patients = frame[layout.patient_column].str.strip()
        if (patients == "").any():
            row = int(np.flatnonzero((patients == "").to_numpy())[0])
            raise row_error(file, row + 1, layout.patient_column, "empty patient id")
    else:
        patients = relative  # every image is its own patient
    if layout.label_column:
        requested = tuple(config.classes) or None
        values, classes = parse_findings(frame[layout.label_column].str.strip(), requested, layout.no_finding,
                                         file, layout.label_column, layout.label_delimiter)
    else:
        classes = select_classes(config.classes, layout.label_columns, layout.label_columns)
        values = parse_label_values(frame, classes, file)
    if not classes:
        raise DataError(f"{file}: no finding names in column {layout.label_column!r}")
    meta = {"path": paths, "patient_id": patients.to_numpy()}
    return make_table(meta, values, classes, os.path.abspath(file), digest)
