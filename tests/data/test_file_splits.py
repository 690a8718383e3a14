"""Splits taken from the files (data.split=given|official), the patient-overlap check, CSV label layouts found from
the header, and the val-split warnings in data_stats.json; training runs through tools/train.py."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spml.config import load_config
from spml.data.table import DataError
from spml.factories.data import read_split, read_table, split_table
from tests.conftest import REPO, SHARED_DATA
from tests.cxr_files import save_image, write_chexpert, write_mimic, write_nih
from tests.reliability.conftest import SMALL_RUN, cli, error_line, tools  # noqa: F401  (fixtures)

CSV_PRESET = str(REPO / "configs/datasets/csv.yaml")
# patient -> split as the file writes it (several accepted spellings): 12 train, 3 val, 3 test patients
SPELLING = {
    **dict.fromkeys(range(12), "train"),
    12: "Validation",
    13: "valid",
    14: "VAL",
    15: "test",
    16: "Test",
    17: "testing",
}


def given_split_rows() -> list[dict]:
    """Two images per patient. A: 1 of 24 train images positive, 3 of 6 val (a 12x prevalence shift), test 2 of 6.
    B: a third positive in train, val (2 images: few positives) and test."""
    rows = []
    for patient, split in SPELLING.items():
        for visit in range(2):
            i = 2 * patient + visit
            a = int(i == 0 or (split.lower().startswith("val") and i % 2 == 0) or i in (30, 33))
            b = int(i % 3 == 0)
            rows.append({"path": f"img{i:02d}.png", "patient_id": f"p{patient:02d}", "split": split, "A": a, "B": b})
    return rows


@pytest.fixture
def given_folder(tmp_path) -> Path:
    folder = tmp_path / "data"
    rows = given_split_rows()
    for i, row in enumerate(rows):
        save_image(folder / row["path"], i)
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


def given_args(folder: Path, out: Path, *extra: str) -> list[str]:
    """tools/train.py arguments: the csv.yaml preset with data.csv.label_columns alone, data.split=given."""
    return [
        "--mode",
        "supervised",
        "--config",
        CSV_PRESET,
        *SMALL_RUN,
        f"data.root={folder}",
        f"data.labels={folder / 'labels.csv'}",
        "data.csv.label_columns=[A,B]",
        "data.split=given",
        f"train.out={out}",
        *extra,
    ]


def test_given_split_trains_on_the_files_split_and_warns_about_its_val(cli, given_folder, tmp_path):
    code, _, err = cli("train", *given_args(given_folder, tmp_path / "run"))
    assert code == 0, err
    labels = pd.read_csv(given_folder / "labels.csv")
    split = labels["split"].str.lower().str[:2]
    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())
    assert stats["num_images"] == (split == "tr").sum() == 24
    per_class = pd.read_csv(tmp_path / "run" / "eval" / "per_class.csv")
    assert per_class["n_pos"].tolist() == labels.loc[split == "te", ["A", "B"]].sum().tolist()
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["n_images"] == 6
    warned = {item["warning"]: item for item in stats["warnings"]}
    assert warned["val_prevalence_shift"]["classes"] == ["A"]  # 3/6 in val against 1/24 in train; B is even
    assert warned["val_prevalence_shift"]["prevalence"]["A"] == {"train": round(1 / 24, 4), "val": 0.5}
    val_b = int(labels.loc[split == "va", "B"].sum())
    assert warned["few_val_positives"]["positives"] == {"A": 3, "B": val_b} and 0 < val_b < 5


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda rows: rows[1].update(split="test"),
            "patient 'p00' of {labels} has images in test ('{folder}/img01.png'), train ('{folder}/img00.png'); 1 "
            "patient(s) are in more than one split",
        ),
        (lambda rows: rows[3].update(split="tst"), "data row 4 (line 5), column 'split': unknown split 'tst'"),
        (lambda rows: rows[3].update(split=""), "data row 4 (line 5), column 'split': unknown split ''"),
        (
            lambda rows: [row.update(split="train") for row in rows if row["split"].lower().startswith("val")],
            "gives no val rows; the file's split must name train, val and test rows (data.split=official carves val",
        ),
        (lambda rows: [row.pop("split") for row in rows], "data.split=official|given needs a 'split' column"),
    ],
)
def test_bad_given_splits_are_refused_before_training(cli, given_folder, tmp_path, edit, message):
    rows = given_split_rows()
    edit(rows)
    pd.DataFrame(rows).to_csv(given_folder / "labels.csv", index=False)
    code, _, err = cli("train", *given_args(given_folder, tmp_path / "run"))
    expected = message.format(folder=given_folder, labels=given_folder / "labels.csv")
    assert code == 2 and expected in error_line(err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_patient_in_two_splits_trains_only_when_allowed_and_is_recorded(cli, given_folder, tmp_path):
    rows = given_split_rows()
    rows[1]["split"] = "test"
    pd.DataFrame(rows).to_csv(given_folder / "labels.csv", index=False)
    code, _, err = cli("train", *given_args(given_folder, tmp_path / "run", "data.allow_patient_overlap=true"))
    assert code == 0, err
    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())
    overlap = [item for item in stats["warnings"] if item["warning"] == "patient_overlap"]
    assert len(overlap) == 1 and overlap[0]["patients"] == 1 and "'p00'" in overlap[0]["message"]


def csv_config(folder: Path, *overrides: str):
    return load_config([CSV_PRESET], [f"data.root={folder}", f"data.labels={folder / 'labels.csv'}", *overrides]).data


def test_official_on_a_csv_carves_val_and_random_warns_that_it_ignores_the_column(given_folder):
    rows = [
        {**row, "split": "train" if row["split"].lower().startswith("val") else row["split"]}
        for row in given_split_rows()
    ]
    pd.DataFrame(rows).to_csv(given_folder / "labels.csv", index=False)
    table, split = read_split(csv_config(given_folder, "data.split=official", "data.val_fraction=0.25"))
    given = np.array([row["split"].lower()[:2] for row in rows])
    assert (split[given == "te"] == "test").all() and (split[given == "tr"] != "test").all()
    assert pd.Series(split).value_counts()["val"] == 2 * round(0.25 * 15)  # 25% of the 15 train patients
    assert table.frame.groupby("patient_id")["path"].count().eq(2).all()
    with pytest.warns(UserWarning, match="gives its own split .* which data.split=random ignores"):
        read_split(csv_config(given_folder, "data.split=random"))


def test_given_for_the_dataset_readers(tmp_path):
    """MIMIC's split file names train/validate/test: given takes it as written; NIH lists and CheXpert
    train/valid.csv have no val rows, which given refuses (official carves val)."""
    mimic = write_mimic(tmp_path / "mimic")
    config = load_config([], ["data.dataset=mimic", f"data.root={mimic}", "data.split=given"]).data
    table = read_table(config)
    files = pd.read_csv(mimic / "mimic-cxr-2.0.0-split.csv", dtype=str).set_index("dicom_id")["split"]
    dicom = table.frame["path"].str.rsplit("/", n=1).str[1].str.removesuffix(".jpg")
    expected = dicom.map(files).replace({"validate": "val"}).to_numpy()
    np.testing.assert_array_equal(split_table(table, config), expected)
    for name, writer in (("nih", write_nih), ("chexpert", write_chexpert)):
        root = writer(tmp_path / name)
        config = load_config([], [f"data.dataset={name}", f"data.root={root}", "data.split=given"]).data
        with pytest.raises(DataError, match="gives no val rows"):
            split_table(read_table(config), config)


# ----------------------------------------------------------------------------------------------- CSV layout
def write_csv(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.csv").write_text(text)
    return folder


def test_csv_layout_found_from_the_header(tmp_path):
    per_finding = write_csv(
        tmp_path / "a", "path,patient_id,split,Effusion,Mass,\n1.png,p1,train,1,,\n2.png,p2,test,0,-1,\n"
    )
    table = read_table(csv_config(per_finding))
    assert table.classes == ("Effusion", "Mass") and np.array_equal(
        table.values(), [[1, np.nan], [0, -1]], equal_nan=True
    )
    delimited = write_csv(
        tmp_path / "b", "path,patient_id,findings,age\n1.png,p1,Mass|Effusion,54\n2.png,p2,No Finding,60\n"
    )
    table = read_table(csv_config(delimited))
    assert table.classes == ("Effusion", "Mass") and table.values().tolist() == [[1, 1], [0, 0]]
    with_age = write_csv(tmp_path / "c", "path,patient_id,age,Effusion\n1.png,p1,54,1\n")
    with pytest.raises(
        DataError,
        match=r"column 'age': unknown label value '54' .*every column but the path, "
        r"patient, study and split columns was read as a finding: \['age', "
        r"'Effusion'\]; set data.csv.label_columns",
    ):
        read_table(csv_config(with_age))
    assert read_table(csv_config(with_age, "data.csv.label_columns=[Effusion]")).classes == ("Effusion",)
    studies = write_csv(tmp_path / "d", "path,patient_id,study,Effusion\n1.png,p1,s1,1\n2.png,p1,s1,0\n")
    table = read_table(csv_config(studies, "data.csv.study_column=study"))
    assert table.classes == ("Effusion",) and table.frame["study_id"].tolist() == ["s1", "s1"]


def test_val_warnings_stay_quiet_on_a_large_even_split(tiny_config):
    from spml.factories.data import build_data

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = build_data(
            tiny_config(
                "supervised", "data.synthetic.num_images=3000", "data.split=stratified", "data.val_fraction=0.3"
            )
        )
    assert not [item for item in bundle.warnings if item["warning"] in ("val_prevalence_shift", "few_val_positives")]
    assert not [w for w in caught if "val split" in str(w.message)]


@pytest.mark.skipif(not (SHARED_DATA / "nih1000").is_dir(), reason=f"real NIH files not in {SHARED_DATA}")
def test_the_real_nih_samples_random_val_split_is_warned():
    """The 811 real NIH films split at random: 155 val images from 21 patients, prevalences far from train's."""
    from spml.factories.data import build_data

    config = load_config(
        [REPO / "configs/datasets/nih.yaml"],
        [
            f"data.root={SHARED_DATA / 'nih1000'}",
            f"data.labels={SHARED_DATA / 'nih/Data_Entry_2017_v2020.csv.gz'}",
            "data.split=random",
            "data.missing=drop",
            "data.views=[]",
        ],
        mode="supervised",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = build_data(config)
    warned = {item["warning"]: item for item in bundle.warnings if item["split"] == "val"}
    val, train = bundle.frames["val"], bundle.frames["train"]
    assert val["patient_id"].nunique() == 21 and len(val) == 155
    shares = {name: ((val[name] == 1).mean(), (train[name] == 1).mean()) for name in bundle.classes}
    shifted = [name for name, (v, t) in shares.items() if v > 0 and t > 0 and not 1 / 3 <= v / t <= 3]
    assert warned["val_prevalence_shift"]["classes"] == shifted and "Pneumothorax" in shifted
    few = [name for name in bundle.classes if 0 < (val[name] == 1).sum() < 5]
    assert warned["few_val_positives"]["classes"] == few


# ------------------------------------------------------------------------------------- CheXpert official test set
def test_chexpert_official_split_with_the_test_set_is_train_valid_test(tmp_path):
    """test_labels.csv (one row per study) beside train.csv: data.split=official takes train.csv as train, valid.csv
    as val and the test studies' images, each with its study's labels, as test."""
    from tests.cxr_files import write_chexpert_test

    root = write_chexpert(tmp_path / "chexpert")
    labels = write_chexpert_test(root).set_index("Study")
    config = load_config(
        [], ["data.dataset=chexpert", f"data.root={root}", "data.split=official", "data.views=[frontal]"]
    ).data
    table, split = read_split(config)
    frame = table.frame.assign(split=split)
    train, valid = (pd.read_csv(root / name) for name in ("train.csv", "valid.csv"))
    for name, file in (("train", train), ("val", valid)):  # as the files give them, frontal views only
        frontal = file.loc[file["Frontal/Lateral"] == "Frontal", "Path"].str.split("/", n=1).str[1]
        assert sorted(frame.loc[frame["split"] == name, "path"]) == sorted(str(root / p) for p in frontal)
    test = frame[frame["split"] == "test"]
    on_disk = sorted(str(p) for p in (root / "test").rglob("*_frontal.jpg"))
    assert sorted(test["path"]) == on_disk and len(on_disk) >= len(labels)  # every frontal image of every study
    for path, row in zip(test["path"], test[list(table.classes)].to_numpy()):
        study = "CheXpert-v1.0/" + str(Path(path).parent.relative_to(root))
        np.testing.assert_array_equal(row, labels.loc[study, list(table.classes)].to_numpy(dtype=float))
    assert set(test["study_id"]) == {s.split("/", 2)[2] for s in labels.index}  # patientNNNNN/studyN
    for extra in (root / "test" / "patient64741" / "study1").iterdir():
        extra.unlink()
    with pytest.raises(DataError, match=r"test_labels.csv: data row 1 .*column 'Study': no image file"):
        read_split(config)
    (root / "test_labels.csv").unlink()  # without the test set: valid.csv is the test split, val comes from train
    table, split = read_split(config)
    assert sorted(table.frame["path"][split == "test"]) == sorted(
        str(root / p.split("/", 1)[1]) for p in valid.loc[valid["Frontal/Lateral"] == "Frontal", "Path"]
    )
    assert (split == "val").any() and set(table.frame["path"][split == "val"]) <= {
        str(root / p.split("/", 1)[1]) for p in train["Path"]
    }
