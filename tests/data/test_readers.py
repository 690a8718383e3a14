"""Readers: the real NIH / CheXpert label files against published counts, tiny MIMIC/CSV files, bad input."""

import csv
import functools
import gzip
import os

import numpy as np
import pandas as pd
import pytest

from spml.config import ConfigError
from spml.data.labels import apply_uncertainty
from spml.data.table import META_COLUMNS, OFFICIAL_SPLIT, DataError, check_images
from spml.factories.data import read_table

# REFERENCE.md section 3 (NIH v2020)
NIH_COUNTS = {
    "Infiltration": 19894,
    "Effusion": 13317,
    "Atelectasis": 11559,
    "Nodule": 6331,
    "Mass": 5782,
    "Pneumothorax": 5302,
    "Consolidation": 4667,
    "Pleural_Thickening": 3385,
    "Cardiomegaly": 2776,
    "Emphysema": 2516,
    "Edema": 2303,
    "Fibrosis": 1686,
    "Pneumonia": 1431,
    "Hernia": 227,
}


def read(kit, *overrides):
    config = kit.config(*overrides)
    return read_table(config)


@functools.cache
def raw_rows(path):
    """Independent reference: the file through the standard csv module."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------------------------- NIH
def test_nih_real_counts(nih_table):
    frame = nih_table.frame
    assert len(frame) == 112_120 and frame["patient_id"].nunique() == 30_805
    assert list(frame.columns[:6]) == list(META_COLUMNS) and nih_table.classes == tuple(sorted(NIH_COUNTS))
    assert {c: int(frame[c].sum()) for c in nih_table.classes} == NIH_COUNTS
    assert int((frame[list(nih_table.classes)].sum(axis=1) == 0).sum()) == 60_361  # "No Finding" rows
    assert set(np.unique(nih_table.values())) == {0.0, 1.0}
    assert all(os.path.isabs(p) for p in frame["path"].head(100))
    assert len(nih_table.source_hash) == 64


def test_nih_real_images_found_and_missing_reported(nih_table, kit):
    on_disk = set(os.listdir(kit.NIH_IMAGES / "images"))
    with pytest.raises(DataError, match=r"111309 of 112120 image files .* do not exist.*data.missing=drop"):
        check_images(nih_table, "error")
    with pytest.warns(UserWarning, match="dropped 111309"):
        kept = check_images(nih_table, "drop")
    assert len(kept.frame) == len(on_disk) == 811 and kept.frame.attrs["missing_dropped"] == 111_309
    assert sorted(os.path.basename(p) for p in kept.frame["path"]) == sorted(on_disk)
    assert all(os.path.dirname(p) == str(kit.NIH_IMAGES / "images") for p in kept.frame["path"])


def test_nih_view_filter_matches_an_independent_count(kit):
    rows = raw_rows(kit.NIH_LABELS)
    table = read(kit, "dataset=nih", f"labels={kit.NIH_LABELS}", "views=[PA]")
    assert len(table.frame) == sum(r["View Position"] == "PA" for r in rows)
    assert set(table.frame["view"]) == {"PA"}


def test_nih_images_in_several_folders_v2017_file_and_sex_column(tmp_path, kit):
    text = kit.nih_rows(
        ("a.png", "Mass|Nodule", "1", "PA"), ("b.png", "No Finding", "1", "AP"), ("c.png", "Hernia", "2", "PA")
    )
    kit.write(tmp_path / "Data_Entry_2017.csv", text.replace("Patient Gender", "Patient Sex"))
    kit.write(tmp_path / "images_001" / "images" / "a.png", b"")
    kit.write(tmp_path / "images_002" / "b.png", b"")
    table = read(kit, "dataset=nih", f"root={tmp_path}")
    assert table.frame["path"].tolist()[:2] == [
        str(tmp_path / "images_001/images/a.png"),
        str(tmp_path / "images_002/b.png"),
    ]
    assert table.frame["sex"].tolist() == ["M"] * 3
    with pytest.raises(DataError, match=r"1 of 3 image files.*c\.png"):
        check_images(table, "error")
    values = table.frame.set_index(table.frame["path"].map(os.path.basename))[list(table.classes)]
    assert values.loc["a.png"].sum() == 2 and values.loc["a.png", "Mass"] == 1 and values.loc["b.png"].sum() == 0
    with_no_finding = read(kit, "dataset=nih", f"root={tmp_path}", "classes=[Hernia, No Finding]")
    assert with_no_finding.values().tolist() == [[0, 0], [0, 1], [1, 0]]


def test_nih_official_lists(tmp_path, kit):
    kit.write(
        tmp_path / "Data_Entry_2017_v2020.csv.gz",
        gzip.compress(kit.nih_rows(("a.png", "Mass", "1", "PA"), ("b.png", "Edema", "2", "PA")).encode()),
    )
    with pytest.raises(DataError, match="train_val_list.txt"):
        read(kit, "dataset=nih", f"root={tmp_path}", "split=official")
    kit.write(tmp_path / "train_val_list.txt", "a.png\n")
    kit.write(tmp_path / "test_list.txt", "b.png\n")
    table = read(kit, "dataset=nih", f"root={tmp_path}", "split=official")
    assert table.frame[OFFICIAL_SPLIT].tolist() == ["train", "test"]


@pytest.mark.parametrize(
    "findings, message",
    [
        ("Mass|Nodules", r"data row 2 \(line 3\), column 'Finding Labels': unknown finding name 'Nodules'"),
        ("mass", "unknown finding name 'mass'"),
        ("No Finding|Mass", "'No Finding' together with findings"),
        ("", "no finding names"),
    ],
)
def test_nih_bad_finding_labels(tmp_path, kit, findings, message):
    rows = kit.nih_rows(("a.png", "Mass", "1", "PA"), ("b.png", findings, "1", "PA"))
    file = kit.write(tmp_path / "labels.csv", rows)
    with pytest.raises(DataError, match=message) as info:
        read(kit, "dataset=nih", f"labels={file}")
    assert file in str(info.value)


# ----------------------------------------------------------------------------------------------- CheXpert
def test_chexpert_real_counts(chexpert_table, kit):
    frame = chexpert_table.frame
    assert len(frame) == 223_414 and frame["patient_id"].nunique() == 64_540
    assert set(np.unique(chexpert_table.values()[~np.isnan(chexpert_table.values())])) == {-1.0, 0.0, 1.0}
    assert frame["path"].iloc[0] == str(kit.CHEXPERT_LABELS.parent / "train/patient00001/study1/view1_frontal.jpg")
    assert frame["study_id"].iloc[0] == "patient00001/study1" and frame["patient_id"].iloc[0] == "patient00001"
    reference = pd.read_csv(kit.CHEXPERT_LABELS)  # pandas' own number parsing: blank -> NaN
    np.testing.assert_array_equal(chexpert_table.values(), reference[list(chexpert_table.classes)].to_numpy())


def test_chexpert_frontal_filter(kit):
    frontal = read(kit, "dataset=chexpert", f"labels={kit.CHEXPERT_LABELS}", "views=[frontal]")
    assert len(frontal.frame) == 191_027 and frontal.frame["patient_id"].str.startswith("patient").all()


def test_chexpert_projection_filter(tmp_path, kit):
    file = kit.write(
        tmp_path / "train.csv",
        kit.CHEXPERT_HEADER
        + "".join(
            kit.chexpert_row(f"CheXpert-v1.0-small/train/patient0000{i}/study1/view1.jpg", view=view)
            for i, view in enumerate(["Frontal,AP", "Frontal,PA", "Lateral,", "Frontal,PA"])
        ),
    )
    pa = read(kit, "dataset=chexpert", f"labels={file}", "views=[frontal, PA]")
    assert pa.frame["patient_id"].tolist() == ["patient00001", "patient00003"]
    lateral = read(kit, "dataset=chexpert", f"labels={file}", "views=[lateral]")
    assert lateral.frame["view"].tolist() == ["Lateral"]
    with pytest.raises(DataError, match=r"data.views=\['LL'\] keeps no row"):
        read(kit, "dataset=chexpert", f"labels={file}", "views=[LL]")


def test_chexpert_prefixes_and_official_valid(tmp_path, kit):
    kit.write(
        tmp_path / "train.csv",
        kit.CHEXPERT_HEADER
        + kit.chexpert_row("CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg", "1,,,,,,,,,,,,,")
        + kit.chexpert_row(
            "CheXpert-v1.0-small/train/patient00002/study3/view2_lateral.jpg", ",,,,,-1,,,,,,,,", "Lateral,"
        ),
    )
    kit.write(
        tmp_path / "valid.csv",
        kit.CHEXPERT_HEADER
        + kit.chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "0,,,,,,,,,,,,,1"),
    )
    table = read(kit, "dataset=chexpert", f"root={tmp_path}", "split=official")
    assert table.frame["path"].tolist() == [
        str(tmp_path / "train/patient00001/study1/view1_frontal.jpg"),
        str(tmp_path / "train/patient00002/study3/view2_lateral.jpg"),
        str(tmp_path / "valid/patient64541/study1/view1_frontal.jpg"),
    ]
    assert table.frame[OFFICIAL_SPLIT].tolist() == ["train", "train", "test"]
    assert table.frame["view"].tolist() == ["AP", "Lateral", "AP"]
    assert table.frame["Edema"].tolist()[1] == -1 and np.isnan(table.frame["Edema"].tolist()[0])
    assert len(read(kit, "dataset=chexpert", f"root={tmp_path}").frame) == 2


def test_chexpert_image_listed_under_both_prefixes_is_a_duplicate(tmp_path, kit):
    file = kit.write(
        tmp_path / "train.csv",
        kit.CHEXPERT_HEADER
        + kit.chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
        + kit.chexpert_row("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg")
        + kit.chexpert_row("CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg"),
    )
    with pytest.raises(
        DataError,
        match=r"column 'Path': duplicate image rows: data rows \[1, 3\] "
        r"\('CheXpert-v1.0-small/train/.*', 'CheXpert-v1.0/train/.*'\)",
    ):
        read(kit, "dataset=chexpert", f"labels={file}")


@pytest.mark.parametrize("value", ["2", "yes", "1.5"])
def test_chexpert_unknown_label_value(tmp_path, kit, value):
    file = kit.write(
        tmp_path / "train.csv",
        kit.CHEXPERT_HEADER
        + kit.chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
        + kit.chexpert_row("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg", f",,{value},,,,,,,,,,,"),
    )
    message = rf"data row 2 \(line 3\), column 'Cardiomegaly': unknown label value '{value}'"
    with pytest.raises(DataError, match=message):
        read(kit, "dataset=chexpert", f"labels={file}")


# ----------------------------------------------------------------------------------------------- MIMIC
def mimic_root(tmp_path, kit, gz=False):
    labels = (
        "subject_id,study_id,No Finding,Atelectasis,Cardiomegaly,Consolidation,Edema,"
        "Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,Pleural Effusion,Pleural Other,"
        "Pneumonia,Pneumothorax,Support Devices\n"
        "10000032,50414267,1.0,,,,,,,,,,,,,\n"
        "10000032,53189527,,-1.0,1.0,,,,,,,,,,,\n"
        "11000011,51000000,,,,,0.0,,,,,,,,,1.0\n"
    )
    meta = (
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n"
        "d1,10000032,50414267,CHEST,PA,3056,2544\n"
        "d2,10000032,50414267,CHEST,LATERAL,3056,2544\n"
        "d3,10000032,53189527,CHEST,AP,3056,2544\n"
        "d4,11000011,51000000,CHEST,AP,3056,2544\n"
    )
    split = (
        "dicom_id,study_id,subject_id,split\nd1,50414267,10000032,train\nd2,50414267,10000032,train\n"
        "d3,53189527,10000032,validate\nd4,51000000,11000011,test\n"
    )
    suffix = ".gz" if gz else ""
    for name, text in (("chexpert", labels), ("metadata", meta), ("split", split)):
        kit.write(tmp_path / f"mimic-cxr-2.0.0-{name}.csv{suffix}", gzip.compress(text.encode()) if gz else text)
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_mimic_join_views_paths_split(tmp_path, kit, gz):
    root = mimic_root(tmp_path, kit, gz)
    table = read(kit, "dataset=mimic", f"root={root}", "views=[PA, AP]", "split=official")
    frame = table.frame
    assert frame["path"].tolist() == [
        str(root / "files/p10/p10000032/s50414267/d1.jpg"),
        str(root / "files/p10/p10000032/s53189527/d3.jpg"),
        str(root / "files/p11/p11000011/s51000000/d4.jpg"),
    ]
    assert frame[OFFICIAL_SPLIT].tolist() == ["train", "val", "test"]
    assert frame["patient_id"].tolist() == ["10000032", "10000032", "11000011"]
    assert frame["No Finding"].tolist()[0] == 1 and frame["Atelectasis"].tolist()[1] == -1
    assert frame["Support Devices"].tolist()[2] == 1 and frame["Edema"].tolist()[2] == 0
    every_view = read(kit, "dataset=mimic", f"root={root}")
    lateral = every_view.frame[every_view.frame["view"] == "LATERAL"]  # study labels given to every image
    assert lateral["No Finding"].tolist() == [1.0]


def test_mimic_dicom_release_paths(tmp_path, kit):
    root = mimic_root(tmp_path, kit)
    table = read(kit, "dataset=mimic", f"root={root}", "views=[PA]", "mimic_format=dcm")
    assert table.frame["path"].tolist() == [str(root / "files/p10/p10000032/s50414267/d1.dcm")]
    with pytest.raises(ConfigError, match=r"data.mimic_format: 'png' is not one of \['jpg', 'dcm'\]"):
        read(kit, "dataset=mimic", f"root={root}", "mimic_format=png")


def test_mimic_duplicate_study_and_bad_split(tmp_path, kit):
    root = mimic_root(tmp_path, kit)
    split = (root / "mimic-cxr-2.0.0-split.csv").read_text().replace("validate", "valid")
    kit.write(root / "mimic-cxr-2.0.0-split.csv", split)
    with pytest.raises(DataError, match=r"split.csv: data row 3 \(line 4\), column 'split': unknown split 'valid'"):
        read(kit, "dataset=mimic", f"root={root}", "split=official")
    labels = (root / "mimic-cxr-2.0.0-chexpert.csv").read_text()
    kit.write(root / "mimic-cxr-2.0.0-chexpert.csv", labels + labels.splitlines()[1] + "\n")
    with pytest.raises(DataError, match=r"duplicate study rows at data rows \[1, 4\]"):
        read(kit, "dataset=mimic", f"root={root}")


# ----------------------------------------------------------------------------------------------- generic CSV
def test_csv_label_columns_and_delimited_column(tmp_path, kit):
    file = kit.write(
        tmp_path / "labels.csv",
        "image,pid,A,B,findings\nx/1.png,p1,1,,A|B\n/abs/2.png,p1,0,-1,No Finding\n3.png,p2,,1,B\n",
    )
    with pytest.raises(DataError, match=r"data row 2 \(line 3\), column 'image': image path '/abs/2.png' is outside"):
        read(kit, "dataset=csv", f"labels={file}", "csv.path_column=image", "csv.label_columns=[A, B]")
    columns = read(
        kit,
        "dataset=csv",
        f"labels={file}",
        "csv.path_column=image",
        "csv.patient_column=pid",
        "csv.label_columns=[A, B]",
        "allow_outside_root=true",
    )
    assert columns.frame["path"].tolist() == [str(tmp_path / "x/1.png"), "/abs/2.png", str(tmp_path / "3.png")]
    np.testing.assert_array_equal(columns.values(), [[1, np.nan], [0, -1], [np.nan, 1]])
    assert columns.frame["patient_id"].tolist() == ["p1", "p1", "p2"]
    names = read(
        kit,
        "dataset=csv",
        f"labels={file}",
        "csv.path_column=image",
        "csv.label_column=findings",
        "allow_outside_root=true",
    )
    assert names.classes == ("A", "B") and names.values().tolist() == [[1, 1], [0, 0], [0, 1]]
    assert names.frame["patient_id"].nunique() == 3  # no patient column: one patient per image
    with pytest.raises(DataError, match="unknown finding name 'B'"):
        read(
            kit,
            "dataset=csv",
            f"labels={file}",
            "csv.path_column=image",
            "csv.label_column=findings",
            "classes=[A]",
            "allow_outside_root=true",
        )
    with pytest.raises(DataError, match="set one of data.csv.label_columns .* not both"):
        read(
            kit,
            "dataset=csv",
            f"labels={file}",
            "csv.path_column=image",
            "csv.label_columns=[A]",
            "csv.label_column=findings",
            "allow_outside_root=true",
        )


# ----------------------------------------------------------------------------------------------- bad input
CSV_LAYOUT = ("dataset=csv", "csv.label_columns=[A, B]")


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the file is empty"),
        ("path,A,B\n", "has no data rows"),
        ("path;A;B\n1.png;1;0\n", "semicolon-separated"),
        ("path\tA\tB\n1.png\t1\t0\n", "tab-separated"),
        ("path,A\n1.png,1\n", r"missing column\(s\) \['B'\]"),
        ("path,A,B\n1.png,1,0\n,0,1\n", r"data row 2 \(line 3\), column 'path': empty image path"),
        ("path,A,B\n1.png,1,0\n2.png,0,1\n1.png,0,0\n", r"duplicate image rows: '1.png' at data rows \[1, 3\]"),
        (b"path,A,B\n1.png,1,0\n2\xe9.png,0,1\n", r"byte 0xe9 at byte offset 20 \(line 3\)"),
    ],
)
def test_bad_csv_input_names_file_row_column(tmp_path, kit, content, message):
    file = kit.write(tmp_path / "labels.csv", content)
    with pytest.raises(DataError, match=message) as info:
        read(kit, *CSV_LAYOUT, f"labels={file}")
    assert str(file) in str(info.value)


def test_missing_label_file_and_unknown_class(tmp_path, kit):
    with pytest.raises(DataError, match="no NIH label file found"):
        read(kit, "dataset=nih", f"root={tmp_path}")
    with pytest.raises(DataError, match=r"data.classes: unknown class\(es\) \['Nodules'\]"):
        read(kit, "dataset=chexpert", f"labels={kit.CHEXPERT_LABELS}", "classes=[Edema, Nodules]")


# ----------------------------------------------------------------------------------------------- policies
def test_uncertainty_policies():
    values = np.array([[1, 0, -1, np.nan], [-1, -1, np.nan, 1]])
    classes = ("Atelectasis", "Edema", "Fracture", "Pneumonia")
    targets, known = apply_uncertainty(values, classes, "ignore", blank="zero")
    assert targets.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]] and targets.dtype == np.float32
    assert known.tolist() == [[True, True, False, True], [False, False, True, True]]
    targets, known = apply_uncertainty(values, classes, "ones", blank="unknown")
    assert targets.tolist() == [[1, 0, 1, 0], [1, 1, 0, 1]]
    assert known.tolist() == [[True, True, True, False], [True, True, False, True]]
    targets, known = apply_uncertainty(values, classes, "zeros")
    assert targets.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]] and known.all()
    targets, _ = apply_uncertainty(values, classes, "mixed", uncertain_ones=("Atelectasis", "Edema"))
    assert targets.tolist() == [[1, 0, 0, 0], [1, 1, 0, 1]]
    with pytest.raises(DataError, match="data.uncertainty='u-ones'"):
        apply_uncertainty(values, classes, "u-ones")
    with pytest.raises(DataError, match="data.uncertain_ones"):
        apply_uncertainty(values, classes, "mixed", uncertain_ones=("Cardiomegaly",))
