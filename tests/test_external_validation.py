"""External validation through tools/evaluate.py --data: a run scored on another labelled set read by any reader,
classes paired by name, spelling, synonym or a mapping file, the unpaired ones reported and never scored.

Two tiny runs are trained once per module (resnet10t, 32 px, one short epoch): one on the synthetic set, one on an
NIH-format fixture. The external sets are files other tools write: a second synthetic set exported with pandas and
Pillow as PNGs + a CSV (another seed), and a CheXpert-format folder (train.csv with CheXpert paths, -1 and blanks).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

import spml
from spml.config import load_config
from spml.data.images import load_gray
from spml.data.readers.chexpert import CLASSES as CHEXPERT_CLASSES
from spml.data.readers.nih import CLASSES as NIH_CLASSES
from spml.data.synthetic import synthetic_source
from spml.factories.data import read_table, synthetic_spec
from tests.conftest import REPO
from tests.cxr_files import write_chexpert, write_nih
from tests.reliability.conftest import cli, error_line, load_tool, tools  # noqa: F401  (fixtures)

SMALL = [
    "--mode",
    "supervised",
    "data.size=32",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.num_workers=0",
    "model.backbone=resnet10t",
    "train.epochs=1",
    "train.log_every=2",
    "eval.bootstrap=0",
    "optim.warmup_epochs=0",
]
CSV_PRESET = str(REPO / "configs/datasets/csv.yaml")
CHEXPERT_PRESET = str(REPO / "configs/datasets/chexpert.yaml")
SITE2_SPLITS = {0: "Test", 1: "valid"}  # patient number % 5 -> split as the file spells it (else "train")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "run"
    assert (
        load_tool("train").main([*SMALL, "data.synthetic.num_images=300", "train.max_steps=6", f"train.out={out}"]) == 0
    )
    return out


@pytest.fixture(scope="module")
def site2(tmp_path_factory) -> Path:
    """Another synthetic set (seed 1, 90 images) exported as 32 px PNGs and labels.csv (path, patient_id, split,
    one 0/1 column per finding in reverse order, Mass left out), written with Pillow and pandas."""
    config = load_config([], ["data.size=32", "data.synthetic.num_images=90", "data.synthetic.seed=1"]).data
    table = read_table(config)
    images = synthetic_source(synthetic_spec(config), table, config.size)
    folder = tmp_path_factory.mktemp("exports") / "site2"
    (folder / "png").mkdir(parents=True)
    rows = []
    for i, patient in enumerate(table.frame["patient_id"]):
        Image.fromarray(images.load(i)).save(folder / "png" / f"film{i:03d}.png")
        split = SITE2_SPLITS.get(int(patient.lstrip("P")) % 5, "train")
        rows.append(
            {
                "path": f"png/film{i:03d}.png",
                "patient_id": patient,
                "split": split,
                **{name: int(table.frame[name][i]) for name in reversed(table.classes) if name != "Mass"},
            }
        )
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def nih_run(tmp_path_factory) -> Path:
    root = write_nih(tmp_path_factory.mktemp("nih") / "nih", patients=40)
    out = root.parent / "run"
    assert (
        load_tool("train").main(
            [
                *SMALL,
                "--config",
                str(REPO / "configs/datasets/nih.yaml"),
                f"data.root={root}",
                "data.split=random",
                "data.views=[]",
                "data.batch_size=8",
                f"train.out={out}",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory) -> Path:
    return write_chexpert(tmp_path_factory.mktemp("chexpert") / "site3")


def reference_probs(run: Path, paths: list[Path]) -> np.ndarray:
    """(N, C) probabilities of the run's latest weights, each image decoded on its own at the run's size."""
    model = spml.load_model(run)
    images = torch.from_numpy(np.stack([load_gray(path, model.image_size) for path in paths]))[:, None]
    with torch.no_grad():
        return torch.sigmoid(model(images)).numpy()


def test_synthetic_run_scored_on_another_synthetic_set_exported_as_csv(cli, synthetic_run, site2):
    code, out, err = cli(
        "evaluate",
        str(synthetic_run),
        "--data",
        CSV_PRESET,
        "--data",
        f"data.root={site2}",
        "--data",
        f"data.labels={site2 / 'labels.csv'}",
    )
    assert code == 0, err
    folder = synthetic_run / "external-csv_site2"
    for name in (
        "metrics.json",
        "per_class.csv",
        "roc.png",
        "pr.png",
        "class_mapping.csv",
        "report.md",
        "external.json",
    ):
        assert (folder / name).exists(), name
    labels = pd.read_csv(site2 / "labels.csv")
    mapping = pd.read_csv(folder / "class_mapping.csv", keep_default_na=False)
    classes = json.loads((synthetic_run / "data_stats.json").read_text())["classes"]
    scored = mapping[mapping["scored"]]
    assert (scored["match"] == "exact").all() and (scored["run_class"] == scored["external_class"]).all()
    assert list(scored["run_class"]) == [name for name in classes if name != "Mass"]  # header columns, detected
    assert mapping.loc[~mapping["scored"], "run_class"].tolist() == ["Mass"]
    assert "scored 9 classes" in out and "run classes left out (no external class of that name" in out
    # independent reference: every PNG decoded on its own, scored against the CSV with scikit-learn
    probs = reference_probs(synthetic_run, [site2 / path for path in labels["path"]])
    per_class = pd.read_csv(folder / "per_class.csv")
    assert len(per_class) == 9
    for row in per_class.to_dict("records"):
        truth, score = labels[row["class"]].to_numpy(), probs[:, classes.index(row["class"])]
        assert row["external_class"] == row["class"] and row["n_pos"] == truth.sum()
        assert row["auroc"] == pytest.approx(roc_auc_score(truth, score), abs=1e-6)
        assert row["ap"] == pytest.approx(average_precision_score(truth, score), abs=1e-6)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_images"] == len(labels) and metrics["level"] == "image"


def test_one_split_of_the_external_set_with_tta(cli, synthetic_run, site2):
    code, out, err = cli(
        "evaluate",
        str(synthetic_run),
        "--data",
        CSV_PRESET,
        "--data",
        f"data.root={site2}",
        "--data",
        f"data.labels={site2 / 'labels.csv'}",
        "--data",
        "data.split=given",
        "--split",
        "test",
        "--name",
        "site2",
        "--tta",
    )
    assert code == 0, err
    folder = synthetic_run / "external-site2-tta-test"
    labels = pd.read_csv(site2 / "labels.csv")
    test = labels[labels["split"] == "Test"]
    assert 0 < len(test) < len(labels)
    assert json.loads((folder / "metrics.json").read_text())["n_images"] == len(test)
    per_class = pd.read_csv(folder / "per_class.csv")
    assert per_class["n_pos"].tolist() == test[per_class["class"]].sum().tolist()
    record = json.loads((folder / "external.json").read_text())
    assert record["split"] == "test" and record["tta"] == ["identity", "hflip", "scale_up", "shift"]
    assert record["decoded_as_run"]["size"] == 32


def chexpert_frontal(root: Path) -> pd.DataFrame:
    frame = pd.read_csv(root / "train.csv")  # blanks read as NaN
    return frame[frame["Frontal/Lateral"] == "Frontal"]


def test_nih_run_scored_on_chexpert_files_with_the_synonym_table(cli, nih_run, chexpert):
    code, out, err = cli("evaluate", str(nih_run), "--data", CHEXPERT_PRESET, "--data", f"data.root={chexpert}")
    assert code == 0, err
    folder = nih_run / "external-chexpert_site3"
    exact = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pneumonia", "Pneumothorax"]
    nih_only = [name for name in NIH_CLASSES if name not in (*exact, "Effusion")]
    chexpert_only = [name for name in CHEXPERT_CLASSES if name not in (*exact, "Pleural Effusion")]
    assert f"run classes left out (no external class of that name, spelling or synonym): {', '.join(nih_only)}" in out
    assert (
        f"external classes left out (no run class of that name, spelling or synonym): {', '.join(chexpert_only)}" in out
    )
    assert "Effusion = Pleural Effusion (synonym)" in out
    mapping = pd.read_csv(folder / "class_mapping.csv", keep_default_na=False)
    scored = mapping[mapping["scored"]]
    assert dict(zip(scored["run_class"], scored["external_class"])) == {
        **{name: name for name in exact},
        "Effusion": "Pleural Effusion",
    }
    assert sorted(mapping.loc[~mapping["scored"] & (mapping["run_class"] != ""), "run_class"]) == sorted(nih_only)
    assert sorted(mapping.loc[mapping["run_class"] == "", "external_class"]) == sorted(chexpert_only)
    report = (folder / "report.md").read_text()
    assert all(f"external class {name}:" in report for name in chexpert_only)
    # counts from train.csv itself: frontal views (the preset's data.views), -1 unknown (ignore), blank negative
    frontal = chexpert_frontal(chexpert)
    per_class = pd.read_csv(folder / "per_class.csv").set_index("class")
    for run_class, external_class in zip(scored["run_class"], scored["external_class"]):
        values = frontal[external_class]
        assert per_class.loc[run_class, "external_class"] == external_class
        assert per_class.loc[run_class, "n_pos"] == (values == 1).sum()
        assert per_class.loc[run_class, "n_neg"] == ((values == 0) | values.isna()).sum()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_images"] == len(frontal) and metrics["n_classes"] == 7


def test_a_mapping_file_pairs_and_leaves_out_classes_scored_per_study(cli, nih_run, chexpert, tmp_path):
    mapping_file = tmp_path / "nih_to_chexpert.yaml"
    mapping_file.write_text("Pleural_Thickening: Pleural Other\nEffusion: null\n")
    code, out, err = cli(
        "evaluate",
        str(nih_run),
        "--data",
        CHEXPERT_PRESET,
        "--data",
        f"data.root={chexpert}",
        "--mapping",
        str(mapping_file),
        "--study-level",
        "max",
        "--name",
        "site3",
    )
    assert code == 0, err
    folder = nih_run / "external-site3-study-max"
    per_class = pd.read_csv(folder / "per_class.csv").set_index("class")
    assert per_class.loc["Pleural_Thickening", "external_class"] == "Pleural Other"
    assert per_class.loc["Pleural_Thickening", "match"] == "user" and "Effusion" not in per_class.index
    record = json.loads((folder / "external.json").read_text())
    assert record["run_left_out"]["Effusion"] == f"left out by {mapping_file}"
    assert "Pleural Effusion" in record["external_left_out"] and "Pleural Other" not in record["external_left_out"]
    frontal = chexpert_frontal(chexpert)
    studies = frontal["Path"].str.rsplit("/", n=1).str[0]
    assert studies.nunique() < len(frontal)  # some studies have two frontal views
    assert (
        record["level"] == "study:max"
        and json.loads((folder / "metrics.json").read_text())["n_images"] == studies.nunique()
    )


@pytest.mark.parametrize(
    "mapping, flags, message",
    [
        ("Efusion: Pleural Effusion", (), "'Efusion' is not a class of the run"),
        ("Effusion: Effusion", (), "'Effusion' maps to 'Effusion', which is not a class of the external set"),
        ("Mass: [Lung Lesion, Lung Opacity]", (), "one run class can be scored against one external class only"),
        ("Pleural_Thickening: Pleural Effusion", (), "both pair with external class 'Pleural Effusion'; many-to-one"),
        ("", ("--classes", "Mass,Edema"), "['Mass'] are not scored on the external set"),
        ("", ("--data", "data.masked_labels=masked.csv"), "scored on its full labels"),
        ("", ("--data", "root=/elsewhere"), "start with 'data.'"),
        ("", ("--data", "data.dataset=synthetic"), "data.root are set but data.dataset is synthetic"),
        ("", ("--name", "../up"), "--name '../up'"),
    ],
)
def test_bad_external_settings_are_one_line_errors(cli, nih_run, chexpert, tmp_path, mapping, flags, message):
    args = ["--data", CHEXPERT_PRESET, "--data", f"data.root={chexpert}", *flags]
    if mapping:
        (tmp_path / "map.yaml").write_text(mapping + "\n")
        args += ["--mapping", str(tmp_path / "map.yaml")]
    code, _, err = cli("evaluate", str(nih_run), *args)
    assert code == 2 and message in error_line(err)


def test_sets_without_a_common_class_and_flags_without_data_are_refused(cli, nih_run, site2, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("path,X,Y\n" + "".join(f"{site2}/png/film{i:03d}.png,{i % 2},0\n" for i in range(6)))
    code, _, err = cli(
        "evaluate",
        str(nih_run),
        "--data",
        "data.dataset=csv",
        "--data",
        f"data.labels={other}",
        "--data",
        "data.allow_outside_root=true",
    )
    assert code == 2 and "has a counterpart among the external classes ['X', 'Y']" in error_line(err)
    config = tmp_path / "train.yaml"
    config.write_text("data:\n  dataset: csv\nmodel:\n  backbone: resnet18\n")
    code, _, err = cli("evaluate", str(nih_run), "--data", str(config))
    assert code == 2 and "holds only a data: section; found ['model']" in error_line(err)
    code, _, err = cli("evaluate", str(nih_run), "--mapping", str(config))
    assert code == 2 and "go with --data" in error_line(err)
