"""Label files that used to be read silently wrong, through tools/train.py (and tools/mask_labels.py) as a user
calls them: finding names on real NIH rows, image paths that name one file twice or leave the root, symlink
loops, empty label columns and classes without positives (data_stats.json), and supervised training on a
single-positive file."""

import gzip
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from spml.config import load_config
from spml.factories.data import build_data, read_table
from tests.conftest import SHARED_DATA
from tests.cxr_files import write_chexpert
from tests.reliability.conftest import CSV_RUN, SMALL_RUN, csv_run_args, error_line, load_tool

# ------------------------------------------------------------------------------------ finding names
NIH_STYLE_CSV = [
    "data.dataset=csv",
    "data.csv.path_column=Image Index",
    "data.csv.label_column=Finding Labels",
    "data.csv.patient_column=Patient ID",
]


def nih_labels(nih_sample, tmp_path, edits: dict[int, str] = {}) -> str:
    """The sample's real Data_Entry lines with the Finding Labels field of data rows `edits` (1-based) replaced."""
    _, lines = nih_sample
    lines = list(lines)
    for row, findings in edits.items():
        image, _, rest = lines[row].split(",", 2)
        lines[row] = f"{image},{findings},{rest}"
    path = tmp_path / "Data_Entry_2017_v2020.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def nih_args(nih_sample, labels: str, out, reader: str = "nih") -> list[str]:
    root, _ = nih_sample
    if reader == "nih":
        data = ["data.dataset=nih", f"data.root={root}"]
    else:
        data = [*NIH_STYLE_CSV, f"data.root={root / 'images'}"]
    return ["--mode", "supervised", *SMALL_RUN, *data, f"data.labels={labels}", f"train.out={out}"]


# case -> (data row, Finding Labels written there instead of the real ones, fragments of the error)
BAD_FINDINGS = {
    "lower case": (
        45,
        "effusion|Infiltration",
        ["data row 45 (line 46), column 'Finding Labels'", "'effusion'", "'Effusion'"],
    ),
    "space for underscore": (
        44,
        "Emphysema|Pleural Thickening",
        ["data row 44", "'Pleural Thickening'", "'Pleural_Thickening'"],
    ),
    "comma delimiter": (29, '"Cardiomegaly,Effusion,Emphysema,Mass"', ["data row 29", "','"]),
    "semicolon delimiter": (10, "Mass;Nodule", ["data row 10", "';'"]),
    "no-finding spelling": (11, "No finding", ["data row 11", "'No finding'", "'No Finding'"]),
    "empty name": (4, "Hernia||Infiltration", ["data row 4", "empty finding name", "two in a row"]),
}
NIH_HINTS = {
    "lower case": "did you mean 'Effusion'",
    "space for underscore": "did you mean 'Pleural_Thickening'",
    "comma delimiter": "seems to separate names with ','",
    "semicolon delimiter": "with ';'",
    "no-finding spelling": "did you mean 'No Finding'",
}


@pytest.mark.parametrize("reader", ["nih", "csv"])
@pytest.mark.parametrize("case", list(BAD_FINDINGS))
def test_misspelt_finding_names_are_errors_naming_row_and_known_name(cli, nih_sample, tmp_path, reader, case):
    row, findings, fragments = BAD_FINDINGS[case]
    labels = nih_labels(nih_sample, tmp_path, {row: findings})
    out = tmp_path / "run"
    code, _, err = cli("train", *nih_args(nih_sample, labels, out, reader))
    assert code == 2, err
    line = error_line(err)
    assert "Data_Entry_2017_v2020.csv" in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    if reader == "nih" and case in NIH_HINTS:  # a fixed class list: the message lists the known names and the nearest
        assert NIH_HINTS[case] in line and "known names: ['Atelectasis'" in line, line
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("reader", ["nih", "csv"])
def test_spaces_around_the_finding_delimiter_are_read_like_none(nih_sample, tmp_path, reader):
    clean = nih_labels(nih_sample, tmp_path / "clean")
    spaced = nih_labels(nih_sample, tmp_path / "spaced", {18: "Effusion| Infiltration", 29: "Cardiomegaly | Effusion"})
    tables = []
    for labels in (clean, spaced):
        config = load_config([], nih_args(nih_sample, labels, tmp_path / "run", reader)[2:], mode="supervised")
        tables.append(build_data(config).table)
    assert tables[0].classes == tables[1].classes and "Effusion" in tables[0].classes
    changed = np.zeros(len(tables[0].frame), bool)
    changed[[17, 28]] = True  # data rows 18 and 29; row 29 also lost Emphysema and Mass
    np.testing.assert_array_equal(tables[1].values()[~changed], tables[0].values()[~changed])
    np.testing.assert_array_equal(tables[1].values()[17], tables[0].values()[17])
    effusion = tables[0].classes.index("Effusion")
    assert tables[1].values()[28, effusion] == 1 and tables[1].values()[28].sum() == 2


# ------------------------------------------------------------------------------------ image paths
def add_row(dataset_dir, text: str) -> None:
    with open(dataset_dir / "labels.csv", "a") as handle:
        handle.write(text + "\n")


def refused(cli, dataset_dir, tmp_path, *extra) -> str:
    out = tmp_path / "run"
    code, _, err = cli("train", *csv_run_args(dataset_dir, out, *extra))
    assert code == 2, err
    assert not (out / "checkpoints").exists()
    return error_line(err)


def test_one_image_through_a_file_symlink_is_a_duplicate(cli, dataset_dir, tmp_path):
    os.symlink("img01.png", dataset_dir / "alias.png")
    add_row(dataset_dir, "alias.png,0,1")
    line = refused(cli, dataset_dir, tmp_path)
    assert "duplicate image rows: data rows [2, 41] ('img01.png', 'alias.png') are one image file" in line
    assert line.rstrip().endswith("(2 rows are duplicates)") and str(dataset_dir / "img01.png") in line


def test_one_image_through_a_folder_symlink_is_a_duplicate(cli, dataset_dir, tmp_path):
    os.symlink(dataset_dir, dataset_dir / "again")
    add_row(dataset_dir, "again/img07.png,1,1")
    line = refused(cli, dataset_dir, tmp_path)
    assert "data rows [8, 41] ('img07.png', 'again/img07.png') are one image file" in line


def test_symlink_loops_are_errors_naming_the_row(cli, dataset_dir, tmp_path):
    clean = (dataset_dir / "labels.csv").read_text()
    os.symlink("loop.png", dataset_dir / "loop.png")
    add_row(dataset_dir, "loop.png,1,0")
    line = refused(cli, dataset_dir, tmp_path)
    assert "data row 41 (line 42), column 'path': 'loop.png': symlink loop" in line
    os.symlink("ring", dataset_dir / "ring")  # a folder link that points at itself
    (dataset_dir / "labels.csv").write_text(clean)
    add_row(dataset_dir, "ring/img00.png,1,0")
    line = refused(cli, dataset_dir, tmp_path)
    assert "data row 41 (line 42), column 'path': 'ring/img00.png': symlink loop" in line


def test_paths_outside_the_root_are_refused_unless_allowed(cli, dataset_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(dataset_dir / "img05.png", elsewhere / "film.png")
    add_row(dataset_dir, "../elsewhere/film.png,1,0")
    line = refused(cli, dataset_dir, tmp_path)
    assert "data row 41 (line 42), column 'path': image path '../elsewhere/film.png' is outside data.root" in line
    assert "data.allow_outside_root=true" in line
    add_row(dataset_dir, f"{elsewhere / 'film2.png'},0,1")  # absolute paths too
    shutil.copy(elsewhere / "film.png", elsewhere / "film2.png")
    out = tmp_path / "allowed"
    code, _, err = cli("train", *csv_run_args(dataset_dir, out, "data.allow_outside_root=true"))
    assert code == 0, err
    assert (out / "eval" / "metrics.json").exists()


def test_an_image_folder_linked_from_another_disk_is_inside_the_root(dataset_dir, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    shutil.copy(dataset_dir / "img03.png", disk / "extra.png")
    os.symlink(disk, dataset_dir / "more")
    add_row(dataset_dir, "more/extra.png,1,1")
    config = load_config([], [*CSV_RUN[2:], f"data.labels={dataset_dir / 'labels.csv'}"], mode="supervised")
    paths = build_data(config).table.frame["path"].tolist()
    assert str(dataset_dir / "more" / "extra.png") in paths  # the path as written (the cache key), not the target


def test_the_table_keeps_normalised_written_paths(dataset_dir):
    text = (
        (dataset_dir / "labels.csv")
        .read_text()
        .replace("img02.png", "./img02.png")
        .replace("img03.png", "x/../img03.png")
    )
    (dataset_dir / "labels.csv").write_text(text)
    config = load_config([], [*CSV_RUN[2:], f"data.labels={dataset_dir / 'labels.csv'}"], mode="supervised")
    paths = build_data(config).table.frame["path"].tolist()
    assert str(dataset_dir / "img02.png") in paths and str(dataset_dir / "img03.png") in paths


# ------------------------------------------------------------------------------------ label coverage
def run_stats(run) -> dict:
    return json.loads((run / "data_stats.json").read_text())


def test_an_all_empty_label_column_is_unknown_and_recorded(cli, dataset_dir, tmp_path):
    lines = (dataset_dir / "labels.csv").read_text().splitlines()
    (dataset_dir / "labels.csv").write_text("\n".join([lines[0] + ",C", *(line + "," for line in lines[1:])]) + "\n")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"label column\(s\) \['C'\] .* empty in every row"):
        code, _, err = cli("train", *csv_run_args(dataset_dir, out, "data.csv.label_columns=[A,B,C]"))
    assert code == 0, err
    warned = run_stats(out)["warnings"]
    assert {"warning": "empty_label_column", "split": "all", "classes": ["C"]}.items() <= warned[0].items()
    assert all("C" not in item["classes"] for item in warned[1:])  # named once, not again per split
    per_class = pd.read_csv(out / "eval" / "per_class.csv", index_col="class")
    assert per_class.loc["C", "n_neg"] == per_class.loc["C", "n_pos"] == 0  # unknown, not 8 known negatives
    config = load_config(
        [],
        [*CSV_RUN[2:], "data.csv.label_columns=[A,B,C]", f"data.labels={dataset_dir / 'labels.csv'}"],
        mode="supervised",
    )
    with pytest.warns(UserWarning):
        bundle = build_data(config)
    assert not bundle.train.known[:, 2].any() and bundle.train.known[:, :2].all()


def test_classes_without_positives_per_split_are_recorded(cli, dataset_dir, tmp_path):
    config = load_config([], [*CSV_RUN[2:], f"data.labels={dataset_dir / 'labels.csv'}"], mode="supervised")
    frames = build_data(config).frames
    split = {os.path.basename(path): name for name, frame in frames.items() for path in frame["path"]}
    # A: positives only in the test split; B: positives only in the train split
    rows = ["path,A,B", *(f"{image},{int(where == 'test')},{int(where == 'train')}" for image, where in split.items())]
    (dataset_dir / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"\['A'\] have no known positive in the train split"):
        code, _, err = cli("train", *csv_run_args(dataset_dir, out))
    assert code == 0, err
    warned = {(item["warning"], item["split"]): item["classes"] for item in run_stats(out)["warnings"]}
    assert warned == {
        ("no_known_positive", "train"): ["A"],
        ("no_known_positive", "val"): ["A", "B"],
        ("no_known_positive", "test"): ["B"],
    }
    spml = tmp_path / "spml"
    code, _, err = cli(
        "train", *csv_run_args(dataset_dir, spml, "--mode", "spml", "spml.objective=loss", "loss.name=an")
    )
    assert code == 0, err
    warned = {(item["warning"], item["split"]): item["classes"] for item in run_stats(spml)["warnings"]}
    assert warned[("no_observed_positive", "train")] == ["A"]


# ------------------------------------------------------------------------------------ supervised + masked file
def test_supervised_training_on_a_single_positive_file_is_refused(cli, dataset_dir, tmp_path):
    masked = tmp_path / "single_positive.csv"
    labels = f"data.labels={dataset_dir / 'labels.csv'}"
    code, _, err = cli("mask_labels", "--dataset", "csv", "--out", str(masked), labels, "data.csv.label_columns=[A,B]")
    assert code == 0, err
    out = tmp_path / "run"
    code, _, err = cli("train", *csv_run_args(dataset_dir, out, f"data.masked_labels={masked}"))
    assert code == 2, err
    line = error_line(err)
    for fragment in (
        "single_positive.csv observes only positive labels",
        "'single_positive'",
        "--mode spml",
        "without data.masked_labels",
        "--scheme keep_fraction",
    ):
        assert fragment in line, (fragment, line)
    assert not (out / "checkpoints").exists()
    partial = tmp_path / "partial.csv"
    code, _, err = cli(
        "mask_labels",
        "--dataset",
        "csv",
        "--out",
        str(partial),
        "--scheme",
        "keep_fraction",
        "--fraction",
        "0.5",
        "--no-positive",
        "keep",
        labels,
        "data.csv.label_columns=[A,B]",
    )
    assert code == 0, err
    code, _, err = cli("train", *csv_run_args(dataset_dir, tmp_path / "partial_run", f"data.masked_labels={partial}"))
    assert code == 0, err


def test_the_cache_and_training_agree_on_normalised_paths(cli, dataset_dir, tmp_path, capsys):
    text = (dataset_dir / "labels.csv").read_text().replace("img02.png", "./img02.png")
    (dataset_dir / "labels.csv").write_text(text.replace("img03.png", "x/../img03.png"))
    cache = tmp_path / "cache"
    prepare = load_tool("prepare_data")
    args = [*CSV_RUN[2:], f"data.labels={dataset_dir / 'labels.csv'}"]
    assert prepare.main(["--out", str(cache), "--workers", "0", *args]) == 0, capsys.readouterr().err
    out = tmp_path / "run"
    code, _, err = cli("train", *csv_run_args(dataset_dir, out, f"data.cache={cache}"))
    assert code == 0, err


CHEXPERT_TRAIN = SHARED_DATA / "chexpert" / "train.csv.gz"


@pytest.mark.parametrize("cut", ["after AP/PA", "inside the last row"])
def test_a_chexpert_row_cut_short_is_an_error_naming_its_line(cli, tmp_path, cut):
    """Found before: a row of the real train.csv cut after `AP/PA` (its 14 label fields missing), or a partial
    copy that ends inside its last row, was read as all blank, so all negative under data.blank=zero, by training
    and by tools/mask_labels.py. Also: the same file with CR-only line ends reads as with LF."""
    if not CHEXPERT_TRAIN.exists():
        pytest.skip("the real CheXpert train.csv is not available")
    with gzip.open(CHEXPERT_TRAIN, "rt", encoding="utf-8") as handle:
        lines = [next(handle).rstrip("\n") for _ in range(41)]
    victim = 17 if cut == "after AP/PA" else 40  # 0-based: line victim + 1 of the file
    fields = lines[victim].split(",")
    lines[victim] = ",".join(fields[:5] if cut == "after AP/PA" else fields[:8])
    root = tmp_path / "chexpert"
    root.mkdir()
    (root / "train.csv").write_text("\r".join(lines) + ("\r" if cut == "after AP/PA" else ""))  # CR-only ends
    expected = f"{root / 'train.csv'}: line {victim + 1} has "
    code, _, err = cli(
        "train", "--mode", "supervised", "data.dataset=chexpert", f"data.root={root}", f"train.out={tmp_path / 'run'}"
    )
    assert code == 2 and expected in error_line(err) and "cut short" in error_line(err)
    code, _, err = cli("mask_labels", "--dataset", "chexpert", "--root", str(root), "--out", str(tmp_path / "m.csv"))
    assert code == 2 and expected in error_line(err)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "m.csv").exists()


def test_chexpert_no_finding_with_a_pathology_is_warned_and_counted(tmp_path):
    """Found before: accepted without a word, while the NIH reader refuses the same contradiction. The real
    train.csv has 8,808 rows with No Finding = 1 and a finding = 1, every one Support Devices (no pathology)."""
    root = write_chexpert(tmp_path / "chexpert")
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    frame["No Finding"] = ""  # (the synthetic writer draws it at random)
    frame.loc[[2, 5], list(frame.columns[6:])] = "0.0"
    frame.loc[2, ["No Finding", "Edema", "Support Devices"]] = ["1.0", "1.0", "1.0"]
    frame.loc[5, ["No Finding", "Support Devices"]] = ["1.0", "1.0"]  # devices: not a contradiction
    frame.to_csv(root / "train.csv", index=False)
    config = load_config([], ["data.dataset=chexpert", f"data.root={root}", "data.val_fraction=0.2"], mode="supervised")
    with pytest.warns(
        UserWarning,
        match=r"train.csv: 1 rows have No Finding = 1 and a pathology = 1, e.g. line 4 "
        r"\(\['Edema'\]\)",
    ):
        bundle = build_data(config)
    assert [w["count"] for w in bundle.warnings if w["warning"] == "no_finding_with_pathology"] == [1]
    if CHEXPERT_TRAIN.exists():  # the real file: no contradiction
        real = load_config([], ["data.dataset=chexpert", f"data.root={tmp_path}", f"data.labels={CHEXPERT_TRAIN}"])
        assert read_table(real.data).frame.attrs["no_finding_conflicts"] == 0


def test_nih_view_positions_in_lower_case_pass_the_view_filter(nih_sample, tmp_path):
    """Found before: `pa` / `ap` rows were dropped silently by data.views=[PA, AP] (letter case)."""
    root, lines = nih_sample
    header, rows = lines[0], lines[1:]
    position = header.split(",").index("View Position")
    lowered = [
        ",".join(v.lower() if i == position else v for i, v in enumerate(row.split(","))) if n % 3 == 0 else row
        for n, row in enumerate(rows)
    ]
    path = tmp_path / "Data_Entry_2017_v2020.csv"
    path.write_text("\n".join([header, *lowered]) + "\n")
    config = load_config([], ["data.dataset=nih", f"data.root={root}", f"data.labels={path}", "data.views=[PA, AP]"])
    assert len(read_table(config.data).frame) == len(rows)
