"""Splits: patient-wise (no patient in two splits), seeded, fractions, stratification, official splits."""

import time

import numpy as np
import pandas as pd
import pytest

from spml.data.splits import (
    SPLIT_SCHEMES,
    assign_splits,
    iterative_stratification,
    official_split,
    random_split,
    split_prevalence,
    stratified_split,
)
from spml.data.table import OFFICIAL_SPLIT, DataError


def patients_per_split(frame, split):
    return {name: set(frame["patient_id"][split == name]) for name in ("train", "val", "test")}


def assert_patient_wise(frame, split):
    groups = patients_per_split(frame, split)
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    assert set(split) == {"train", "val", "test"}


def test_random_split_on_real_nih(nih_table):
    frame = nih_table.frame
    split = random_split(frame["patient_id"], 0.1, 0.2, seed=3)
    assert_patient_wise(frame, split)
    groups = patients_per_split(frame, split)
    assert len(groups["test"]) == round(0.2 * 30_805) and len(groups["val"]) == round(0.1 * 30_805)
    np.testing.assert_array_equal(split, random_split(frame["patient_id"], 0.1, 0.2, seed=3))
    assert (split != random_split(frame["patient_id"], 0.1, 0.2, seed=4)).any()


def test_stratified_split_on_real_nih_is_fast_balanced_and_patient_wise(nih_table):
    frame = nih_table.frame
    start = time.perf_counter()
    split = stratified_split(frame["patient_id"], nih_table.values() == 1, 0.1, 0.2, seed=0)
    assert time.perf_counter() - start < 5
    assert_patient_wise(frame, split)
    shares = pd.Series(split).value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.01 and abs(shares["val"] - 0.1) < 0.01 and abs(shares["test"] - 0.2) < 0.01
    table = split_prevalence(nih_table, split)
    prevalence = table.loc[list(nih_table.classes)]
    relative_gap = (
        prevalence[["train", "val", "test"]].sub(prevalence["all"], axis=0).abs().div(prevalence["all"], axis=0)
    )
    assert relative_gap.to_numpy().max() < 0.1  # even Hernia (227 images) is spread in proportion
    random_split_rows = random_split(frame["patient_id"], 0.1, 0.2, seed=0)
    random = split_prevalence(nih_table, random_split_rows).loc[list(nih_table.classes)]
    random_gap = random[["val", "test"]].sub(random["all"], axis=0).abs().div(random["all"], axis=0)
    assert relative_gap[["val", "test"]].to_numpy().mean() < random_gap.to_numpy().mean()


def test_iterative_stratification_small_groups_exactly():
    # 4 groups with one positive of class 0 each, 4 negative groups: each of 2 equal folds gets 2 + 2
    counts = np.array([[1], [1], [1], [1], [0], [0], [0], [0]])
    fold = iterative_stratification(counts, np.ones(8), [0.5, 0.5], seed=0)
    assert np.bincount(fold[:4], minlength=2).tolist() == [2, 2]
    assert np.bincount(fold[4:], minlength=2).tolist() == [2, 2]


def test_split_prevalence_matches_direct_counts(nih_table):
    split = random_split(nih_table.frame["patient_id"], 0.1, 0.2, seed=0)
    table = split_prevalence(nih_table, split)
    test = nih_table.frame[split == "test"]
    assert table.loc["Hernia", "test"] == pytest.approx((test["Hernia"] == 1).mean())
    assert table.loc["images", "test"] == len(test) and table.loc["patients", "all"] == 30_805


def test_official_split_carves_val_from_train_patients():
    frame = pd.DataFrame(
        {"patient_id": [f"p{i // 2}" for i in range(40)], OFFICIAL_SPLIT: ["train"] * 30 + ["test"] * 10}
    )
    split = official_split(frame, 0.2, seed=0)
    assert (split[30:] == "test").all() and (split[:30] != "test").all()
    assert_patient_wise(frame, split)
    assert (split == "val").sum() == 2 * round(0.2 * 15)
    with pytest.raises(DataError, match="files give no split"):
        official_split(frame.drop(columns=OFFICIAL_SPLIT), 0.1, 0)


def test_official_split_with_val_rows_is_taken_as_given():
    frame = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], OFFICIAL_SPLIT: ["train", "val", "test", "train"]})
    assert official_split(frame, 0.5, seed=0).tolist() == ["train", "val", "test", "train"]


def test_split_schemes_are_a_registry(nih_table):
    assert SPLIT_SCHEMES.names() == ["given", "official", "random", "stratified"]
    np.testing.assert_array_equal(
        assign_splits(nih_table, "random", 0.1, 0.2, seed=3), SPLIT_SCHEMES.get("random")(nih_table, 0.1, 0.2, 3)
    )


def test_bad_split_settings(nih_table):
    # the config loader refuses such a data.split first (a Literal choice); assign_splits still does too
    with pytest.raises(
        DataError, match=r"data.split='patient'; choose from \['given', 'official', 'random', 'stratified'\]"
    ):
        assign_splits(nih_table, "patient")
    with pytest.raises(DataError, match="data.val_fraction=0.5, data.test_fraction=0.6"):
        assign_splits(nih_table, "random", val_fraction=0.5, test_fraction=0.6)
