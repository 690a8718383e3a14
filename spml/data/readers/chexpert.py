"""CheXpert(-v1.0-small): train.csv / valid.csv with 1/0/-1/blank observations, paths under the root."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from spml.config import DataConfig
from spml.data.labels import parse_label_values, select_classes
from spml.data.readers import READERS
from spml.data.splits import FILE_SPLITS
from spml.data.table import DataError, LabelTable, check_paths, dataset_root, first_existing, make_table, read_csv, \
    resolve_image_paths, row_error

CLASSES = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
           "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
           "Fracture", "Support Devices")
COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
PREFIX = r"^CheXpert-v1\.0(?:-small)?/"
ORIENTATIONS = {"frontal": "Frontal", "lateral": "Lateral"}  # data.views entries for Frontal/Lateral


def view_filter(frame: pd.DataFrame, views: tuple[str, ...], file: str) -> np.ndarray:
    """(N,) bool. "frontal"/"lateral" entries filter Frontal/Lateral, the others (AP, PA, ...) filter AP/PA;
    a row is kept when it passes both kinds that are given; letter case does not matter (`pa` is PA)."""
    keep = np.ones(len(frame), bool)
    orientation = [ORIENTATIONS[v.lower()] for v in views if v.lower() in ORIENTATIONS]
    projection = [v for v in views if v.lower() not in ORIENTATIONS]
    for column, wanted in (("Frontal/Lateral", orientation), ("AP/PA", projection)):
        if wanted:
            keep &= frame[column].str.strip().str.upper().isin([w.upper() for w in wanted]).to_numpy()
    if not keep.any():
        raise DataError(f"data.views={list(views)} keeps no row of {file}; Frontal/Lateral has "
                        f"{sorted(frame['Frontal/Lateral'].unique())}, AP/PA has {sorted(frame['AP/PA'].unique())}")
    return keep


def read_file(file: str, root: str, config: DataConfig, split: str | None) -> tuple[LabelTable, np.ndarray]:
    """One CheXpert CSV -> (unfiltered LabelTable, view filter)."""
    frame, digest = read_csv(file, COLUMNS)
    classes = select_classes(config.classes, [c for c in frame.columns if c not in COLUMNS], CLASSES)
    relative = frame["Path"].str.strip().str.replace(PREFIX, "", regex=True)
    paths = resolve_image_paths(frame["Path"].str.strip(), root, file, "Path", config.allow_outside_root, relative)
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
    return table, view_filter(frame, config.views, file)


NO_FINDING_CONFLICTS = "no_finding_conflicts"
NOT_PATHOLOGY = ("No Finding", "Support Devices")  # CheXpert's No Finding means no pathology; devices may be present


def no_finding_conflicts(frame: pd.DataFrame, file: str) -> int:
    """Rows with No Finding = 1 and a pathology = 1 (the contradiction the NIH reader refuses; the real train.csv
    has none: its 8,808 rows with No Finding = 1 and a finding = 1 all name Support Devices, which is no
    pathology). Warned with the count and the first line; build_data records the count in data_stats.json."""
    pathologies = [c for c in CLASSES if c not in NOT_PATHOLOGY and c in frame.columns]
    values = parse_label_values(frame, ["No Finding", *pathologies], file)
    conflicts = np.flatnonzero((values[:, 0] == 1) & (values[:, 1:] == 1).any(axis=1))
    if conflicts.size:
        row = int(conflicts[0])
        named = [c for c, v in zip(pathologies, values[row, 1:]) if v == 1]
        warnings.warn(f"{file}: {conflicts.size} rows have No Finding = 1 and a pathology = 1, e.g. line {row + 2} "
                      f"({named}); their labels are used as written", stacklevel=3)
    return int(conflicts.size)


@READERS.register("chexpert")
def read_chexpert(config: DataConfig) -> LabelTable:
    """data.labels (default root/train.csv) -> LabelTable; with data.split=official (or given) valid.csv (beside
    it) is added as the test split (the official validation set; official then carves val from train)."""
    root = dataset_root(config)
    file = config.labels or first_existing([os.path.join(root, n) for n in ("train.csv", "train.csv.gz")],
                                           "CheXpert train.csv", "data.labels or data.root")
    if config.split not in FILE_SPLITS:
        table, keep = read_file(file, root, config, None)
        return table.subset(keep)
    folder = os.path.dirname(os.path.abspath(file))
    valid_file = first_existing([os.path.join(folder, n) for n in ("valid.csv", "valid.csv.gz")],
                                "CheXpert valid.csv (the official split's test set)", "data.split")
    train, train_keep = read_file(file, root, config, "train")
    test, test_keep = read_file(valid_file, root, config, "test")
    frame = pd.concat([train.frame[train_keep], test.frame[test_keep]], ignore_index=True)
    frame.attrs[NO_FINDING_CONFLICTS] = sum(t.frame.attrs[NO_FINDING_CONFLICTS] for t in (train, test))
    check_paths(frame["path"], f"{file} + {valid_file}", "Path")
    return LabelTable(frame, train.classes, train.source, train.source_hash)
