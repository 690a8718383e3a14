"""Patient-wise train/val/test splits: seeded random, official, and multi-label iterative stratification.

Every function returns one split name per table row ("train" | "val" | "test"); no patient is in two
splits. data.split names a scheme of the SPLIT_SCHEMES registry (like the masking schemes of
spml.data.masking): random and stratified assign patients; official and given take the split the dataset's
files give (the reader's OFFICIAL_SPLIT column: NIH lists, MIMIC split csv, CheXpert valid.csv, a CSV's split
column), official carving val from the train patients when the files give no val rows, given exactly as
written. A patient in two splits of a file's split is an error unless data.allow_patient_overlap.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from spml.data.table import OFFICIAL_SPLIT, DataError, LabelTable, row_error
from spml.registry import Registry

SPLITS = ("train", "val", "test")
FILE_SPLITS = ("official", "given")  # data.split schemes that read the split from the dataset's files
# Accepted spellings of a split name in a label file (compared in lower case, spaces stripped). "dev" is not
# accepted: some datasets use it for validation, others for test.
SPLIT_SPELLINGS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "validate": "val",
    "test": "test",
    "testing": "test",
}


def parse_split_names(values: pd.Series, file: str, column: str) -> np.ndarray:
    """Split names from a label file's split column (SPLIT_SPELLINGS, any case).

    An empty or other value is a DataError naming the row.

    Args:
        values: the column's cells.
        file: the file (named in errors).
        column: the column (named in errors).

    Returns:
        (N,) "train" | "val" | "test", object array.
    """
    names = values.str.strip().str.lower().map(SPLIT_SPELLINGS)
    bad = names.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise row_error(
            file,
            row + 1,
            column,
            f"unknown split {values.iloc[row]!r} ({int(bad.sum())} such rows); "
            f"write one of {sorted(SPLIT_SPELLINGS)} (any case)",
        )
    return names.to_numpy(dtype=object)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """DataError unless each fraction is in [0, 1) and their sum below 1.

    Args:
        val_fraction: data.val_fraction.
        test_fraction: data.test_fraction.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}: each must be in "
            "[0, 1) and their sum below 1"
        )


def random_split(patient_ids: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Patients (sorted, then permuted by RandomState(seed)) go to test, val, train in the given fractions of patients.

    Args:
        patient_ids: (N,) patient id per image.
        val_fraction: share of the patients in val.
        test_fraction: share of the patients in test.
        seed: the permutation's seed.

    Returns:
        (N,) split names.
    """
    check_fractions(val_fraction, test_fraction)
    patients, inverse = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    order = np.random.RandomState(seed).permutation(len(patients))
    n_test, n_val = round(test_fraction * len(patients)), round(val_fraction * len(patients))
    patient_split = np.full(len(patients), "train", dtype=object)
    patient_split[order[:n_test]] = "test"
    patient_split[order[n_test : n_test + n_val]] = "val"
    return patient_split[inverse]


def iterative_stratification(
    counts: np.ndarray, sizes: np.ndarray, fractions: Sequence[float], seed: int
) -> np.ndarray:
    """Sechidis et al. (2011) iterative stratification of groups (here: patients) into folds.

    The rarest remaining class is distributed first, each of its groups (in random order) to the fold that most
    lacks that class (ties: the fold that most lacks images, then random); groups without positives fill the
    remaining fold sizes.

    Args:
        counts: (G, C) positive images per group and class.
        sizes: (G,) images per group.
        fractions: (K,) share of images per fold.
        seed: the seed of the random orders and ties.

    Returns:
        (G,) fold index.
    """
    rng = np.random.RandomState(seed)
    fractions = np.asarray(fractions, dtype=np.float64)
    counts, sizes = np.asarray(counts, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    wanted_labels = fractions[:, None] * counts.sum(0)[None, :]  # (K, C), updated as groups are placed
    wanted_images = fractions * sizes.sum()  # (K,)
    fold = np.full(len(counts), -1)
    has_label = counts > 0
    while True:
        remaining = has_label[fold < 0].sum(0)
        if not remaining.any():
            break
        label = int(np.argmin(np.where(remaining > 0, remaining, np.inf)))
        groups = np.flatnonzero((fold < 0) & has_label[:, label])
        groups = groups[rng.permutation(len(groups))]
        tie_break = rng.random_sample((len(groups), len(fractions)))
        need_label, need_images = wanted_labels[:, label].tolist(), wanted_images.tolist()
        for group, noise in zip(groups.tolist(), tie_break.tolist()):  # sequential by nature; small lists
            k = max(range(len(fractions)), key=lambda j: (need_label[j], need_images[j], noise[j]))
            fold[group] = k
            need_label[k] -= counts[group, label]
            need_images[k] -= sizes[group]
            wanted_labels[k] -= counts[group]
        wanted_images = np.asarray(need_images)
    rest = np.flatnonzero(fold < 0)
    rest = rest[rng.permutation(len(rest))]
    # groups without positives: fill each fold up to its remaining image quota, in order of the cumsum
    quota = np.clip(wanted_images, 0, None)
    bounds = np.cumsum(quota) / max(quota.sum(), 1e-12) * sizes[rest].sum()
    position = np.cumsum(sizes[rest]) - sizes[rest] / 2
    fold[rest] = np.minimum(np.searchsorted(bounds, position), len(fractions) - 1)
    return fold


def stratified_split(
    patient_ids: Sequence[str], positives: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """Split names from iterative stratification over patients.

    Args:
        patient_ids: (N,) patient id per image.
        positives: (N, C) bool per image.
        val_fraction: share of the images in val.
        test_fraction: share of the images in test.
        seed: the stratification's seed.

    Returns:
        (N,) split names.
    """
    check_fractions(val_fraction, test_fraction)
    patients, inverse = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    counts = np.zeros((len(patients), positives.shape[1]))
    np.add.at(counts, inverse, np.asarray(positives, dtype=np.float64))
    sizes = np.bincount(inverse, minlength=len(patients))
    fractions = [1 - val_fraction - test_fraction, val_fraction, test_fraction]
    fold = iterative_stratification(counts, sizes, fractions, seed)
    return np.asarray(SPLITS, dtype=object)[fold][inverse]


def file_split(frame: pd.DataFrame, scheme: str) -> np.ndarray:
    """A copy of the reader's OFFICIAL_SPLIT column; a DataError when the dataset's files give no split.

    Args:
        frame: the table's frame.
        scheme: the data.split scheme (named in the error).

    Returns:
        (N,) split names.
    """
    if OFFICIAL_SPLIT not in frame.columns:
        raise DataError(
            f"data.split={scheme}: this dataset's files give no split (NIH lists, MIMIC split csv, "
            "CheXpert valid.csv, a CSV's split column: data.csv.split_column); use data.split=random "
            "or stratified"
        )
    return frame[OFFICIAL_SPLIT].to_numpy(dtype=object).copy()


def official_split(frame: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """Split names from the reader's OFFICIAL_SPLIT column.

    Without official val rows, val is val_fraction of the official train patients (seeded, patient-wise).

    Args:
        frame: the table's frame.
        val_fraction: share of the train patients carved into val.
        seed: the carving's seed.

    Returns:
        (N,) split names.
    """
    split = file_split(frame, "official")
    if not (split == "val").any():
        train = split == "train"
        carved = random_split(frame["patient_id"].to_numpy()[train], val_fraction, 0.0, seed)
        split[train] = carved
    return split


# data.split name -> scheme(table, val_fraction, test_fraction, seed) -> (N,) split names
SPLIT_SCHEMES = Registry("split scheme")


@SPLIT_SCHEMES.register("random")
def split_random(table: LabelTable, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """The "random" scheme: random_split over the table's patients.

    Args:
        table: the reader's LabelTable.
        val_fraction: share of the patients in val.
        test_fraction: share of the patients in test.
        seed: the split seed.

    Returns:
        (N,) split names.
    """
    return random_split(table.frame["patient_id"], val_fraction, test_fraction, seed)


@SPLIT_SCHEMES.register("stratified")
def split_stratified(table: LabelTable, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """The "stratified" scheme: stratified_split over the table's patients and its positive (value 1) entries.

    Args:
        table: the reader's LabelTable.
        val_fraction: share of the patients in val.
        test_fraction: share of the patients in test.
        seed: the split seed.

    Returns:
        (N,) split names.
    """
    return stratified_split(table.frame["patient_id"], table.values() == 1, val_fraction, test_fraction, seed)


@SPLIT_SCHEMES.register("official")
def split_official(table: LabelTable, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """The "official" scheme: official_split (test_fraction unused).

    Args:
        table: the reader's LabelTable.
        val_fraction: share of the patients in val.
        test_fraction: share of the patients in test.
        seed: the split seed.

    Returns:
        (N,) split names.
    """
    return official_split(table.frame, val_fraction, seed)


@SPLIT_SCHEMES.register("given")
def split_given(table: LabelTable, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """The split exactly as the dataset's files give it; each of train, val and test must have rows.

    Args:
        table: the reader's LabelTable.
        val_fraction: share of the patients in val.
        test_fraction: share of the patients in test.
        seed: the split seed.

    Returns:
        (N,) split names.
    """
    split = file_split(table.frame, "given")
    for name in SPLITS:
        if not (split == name).any():
            carve = " (data.split=official carves val from the train patients)" if name == "val" else ""
            raise DataError(
                f"data.split=given: {table.source} gives no {name} rows; the file's split must name "
                f"train, val and test rows{carve}"
            )
    return split


def shared_patients(table: LabelTable, split: np.ndarray) -> pd.Series:
    """Patients with images in more than one split -> the sorted split names they are in.

    Args:
        table: the LabelTable.
        split: (N,) split names.

    Returns:
        {patient: (split names)}, sorted by patient.
    """
    frame = pd.DataFrame({"patient": table.frame["patient_id"].to_numpy(), "split": np.asarray(split, dtype=object)})
    counts = frame.groupby("patient", sort=True)["split"].nunique()
    shared = frame[frame["patient"].isin(counts.index[counts > 1])]
    return shared.groupby("patient", sort=True)["split"].agg(lambda names: tuple(sorted(set(names))))


def patient_overlap_message(table: LabelTable, split: np.ndarray, shared: pd.Series) -> str:
    """One line naming the first shared patient, an image of it in each of its splits, and the count.

    Args:
        table: the LabelTable.
        split: (N,) split names.
        shared: shared_patients' result (not empty).

    Returns:
        The message.
    """
    patient, names = shared.index[0], shared.iloc[0]
    rows = table.frame["patient_id"].to_numpy() == patient
    examples = ", ".join(f"{name} ({table.frame['path'].to_numpy()[rows & (split == name)][0]!r})" for name in names)
    return (
        f"patient {patient!r} of {table.source} has images in {examples}; {len(shared)} patient(s) are in more "
        "than one split, so test images of a patient could have been trained on"
    )


def assign_splits(
    table: LabelTable,
    scheme: str = "random",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    allow_patient_overlap: bool = False,
) -> np.ndarray:
    """Patient-wise split of the table's rows (data.split and the data.* keys of the same names).

    Args:
        table: a reader's LabelTable (official/given read its official_split column).
        scheme: a SPLIT_SCHEMES name: random, stratified, official (val carved from train when the files have
            none), given (as the files write it).
        val_fraction, test_fraction: shares of the patients (random, stratified; official: val only).
        seed: the split seed (data.split_seed).
        allow_patient_overlap: accept a patient in two splits (else a DataError; spml.data.build records it).

    Returns:
        (N,) object array of "train" | "val" | "test".

    >>> from spml.data.synthetic import read_synthetic
    >>> split = assign_splits(read_synthetic(num_images=200), "random", 0.1, 0.2, seed=0)
    >>> sorted(set(split))
    ['test', 'train', 'val']
    """
    if scheme not in SPLIT_SCHEMES:
        raise DataError(f"data.split={scheme!r}; choose from {SPLIT_SCHEMES.names()}")
    if scheme not in FILE_SPLITS and OFFICIAL_SPLIT in table.frame.columns:
        warnings.warn(
            f"{table.source} gives its own split (a CSV's split column, data.csv.split_column), which "
            f"data.split={scheme} ignores; data.split=given uses it (data.csv.split_column= reads "
            "no split column)",
            stacklevel=2,
        )
    split = SPLIT_SCHEMES.get(scheme)(table, val_fraction, test_fraction, seed)
    shared = shared_patients(table, split)
    if len(shared) and not allow_patient_overlap:
        raise DataError(
            f"data.split={scheme}: {patient_overlap_message(table, split, shared)}; fix the "
            "split, or set data.allow_patient_overlap=true to accept it"
        )
    return split


def split_prevalence(table: LabelTable, split: np.ndarray) -> pd.DataFrame:
    """Per-class prevalence (share of images with value 1) per split.

    Args:
        table: the LabelTable.
        split: (N,) split names.

    Returns:
        index = classes + "images" + "patients" (counts), columns = the splits present, then "all".
    """
    split = np.asarray(split, dtype=object)
    names = [s for s in SPLITS if (split == s).any()]
    columns = {}
    for name, rows in [*((s, split == s) for s in names), ("all", np.ones(len(split), bool))]:
        frame = table.frame[rows]
        prevalence = (frame[list(table.classes)] == 1).mean()
        columns[name] = pd.concat(
            [prevalence, pd.Series({"images": len(frame), "patients": frame["patient_id"].nunique()})]
        )
    return pd.DataFrame(columns)
