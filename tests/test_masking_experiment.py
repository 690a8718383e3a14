"""tools/masking_experiment.py: masking of the train (and val) split only, the grid of methods, clean test
evaluation, resume; data.mask_val in build_data; the real NIH files end to end."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from spml.config import load_config
from spml.data.masking import read_masked, row_keys
from spml.data.table import DataError, dataset_root
from spml.experiments.masking import write_masked_splits
from spml.factories.data import build_data, read_split
from tests.conftest import REPO, SHARED_DATA, TINY

RUN = [*TINY, "train.epochs=1"]
NIH_LABELS = SHARED_DATA / "nih" / "Data_Entry_2017_v2020.csv.gz"
NIH_ROOT = SHARED_DATA / "nih1000"
NIH = [
    "--dataset",
    "nih",
    "--root",
    str(NIH_ROOT),
    "--labels",
    str(NIH_LABELS),
    "data.split=random",
    "data.missing=drop",
    *[o for o in RUN if not o.startswith("data.dataset=")],
]


@pytest.fixture
def experiment(capsys):
    """experiment(out, *argv) -> (exit code, stdout, stderr) of tools/masking_experiment.py main, in this process
    (the runs themselves are tools/train.py subprocesses)."""
    spec = importlib.util.spec_from_file_location("masking_experiment_tool", REPO / "tools/masking_experiment.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def run(out, *args: str) -> tuple[int, str, str]:
        code = tool.main(["--out", str(out), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def split_of_keys(config) -> dict[str, str]:
    """Masked-file key -> split name, for every row of the data of `config`, split as training splits it."""
    table, split = read_split(config.data)
    return dict(
        zip(row_keys(table.frame["path"].to_numpy(), dataset_root(config.data.root, config.data.labels)), split)
    )


def clean_test_positives(config) -> list[int]:
    """Certain positives per class of the test split, from the label table itself."""
    table, split = read_split(config.data)
    return (table.values()[split == "test"] == 1).sum(0).tolist()


def test_synthetic_experiment_scores_clean_test_labels_and_resumes(experiment, tmp_path):
    out = tmp_path / "exp"
    code, _, err = experiment(out, "--methods", "full,an", *RUN)
    assert code == 0, err[-2000:]
    results = pd.read_csv(out / "results.csv")
    assert list(results["variant"]) == ["full", "an"] and (results["status"] == "done").all()
    assert results["mAP"].between(0, 1).all() and results["mean_auroc"].between(0, 1).all()
    markdown = (out / "results.md").read_text()
    assert markdown.splitlines()[0].endswith("clean test, rows without a positive: keep")
    assert "recovery" in markdown.splitlines()[2]
    assert markdown.splitlines()[4].endswith("| 1.00 |") and markdown.splitlines()[5].endswith("| 0.00 |")
    assert (out / "results.png").stat().st_size > 1000
    report = (out / "report.html").read_text()  # the grid's one-file report: its table with the recovery
    assert "<td>1.00</td>" in report and "against the best full-label variant: full" in report
    assert "grid: 100%" in err  # a run-level progress bar

    config = load_config([REPO / "configs/datasets/synthetic.yaml"], RUN)
    masked, manifest = read_masked(out / "masked_labels.csv")
    splits = split_of_keys(config)
    assert {splits[key] for key in masked["path"]} == {"train"} and list(manifest["splits"]) == ["train"]
    test_positives = clean_test_positives(config)
    assert sum(test_positives) > 0
    for method in ("full", "an"):  # both scored on the full labels of the same test rows
        per_class = pd.read_csv(out / method / "seed0" / "eval" / "per_class.csv")
        assert per_class["n_pos"].tolist() == test_positives
    an_stats = json.loads((out / "an" / "seed0" / "data_stats.json").read_text())
    assert an_stats["pos_counts"] == list(manifest["observed_positives"].values())

    code, printed, _ = experiment(out, "--methods", "full,an", *RUN)
    assert code == 0 and printed.count("[skip]") == 2 and "[run ]" not in printed
    assert "identical file already there" in printed
    code, _, err = experiment(out, "--methods", "full,an", "--mask-seed", "7", *RUN)
    assert code == 2 and "exists but was masked" in err


def test_rows_without_a_positive_are_kept_unless_a_config_or_flag_says_drop(experiment, tmp_path):
    """The quick start keeps them (every method trains on the same images); the dataset presets do not decide."""
    labels = tmp_path / "labels.csv"
    labels.write_text("path,A\n1.png,1\n")
    base = ("--dataset", "csv", "--labels", str(labels), "--methods", "full,an", "--dry-run")
    code, printed, _ = experiment(tmp_path / "exp", *base)
    assert code == 0 and "(no positive: keep)" in printed and printed.count("data.mask_no_positive=keep") == 2
    drop = tmp_path / "drop.yaml"
    drop.write_text("data:\n  mask_no_positive: drop\n")
    for extra in (("--config", str(drop)), ("data.mask_no_positive=drop",), ("--no-positive", "drop")):
        code, printed, _ = experiment(tmp_path / "exp", *base, *extra)
        assert code == 0 and "(no positive: drop)" in printed and "mask_no_positive=keep" not in printed


def test_unknown_method_is_a_one_line_error(experiment, tmp_path):
    code, _, error = experiment(tmp_path / "exp", "--methods", "full,an,nope", "--dry-run")
    error = error.strip()
    assert (
        code == 2
        and len(error.splitlines()) == 1
        and "'nope'" in error
        and "full, full_flips, full_consistency, mpc, mpc_paper, boostlu, an," in error
        and "ll_r" in error
    )


def test_mask_val_masks_val_rows_only_and_keeps_train_and_test(tiny_config, tmp_path):
    drop = "data.mask_no_positive=drop"
    clean = build_data(tiny_config("spml", drop))
    both = build_data(tiny_config("spml", drop, "data.mask_val=true"))
    np.testing.assert_array_equal(both.train.observed, clean.train.observed)  # train masking independent of val's
    np.testing.assert_array_equal(both.test.targets, clean.test.targets)
    np.testing.assert_array_equal(both.test.known, clean.test.known)
    assert 0 < len(both.val) < len(clean.val)  # val rows without a positive leave the split
    val_targets = np.asarray(both.val.targets)
    assert (val_targets.sum(1) == 1).all() and np.asarray(both.val.known).all()
    assert list(both.manifest["splits"]) == ["train", "val"]

    config = tiny_config("spml", drop, "data.mask_val=true")
    masked_file = tmp_path / "masked.csv"
    write_masked_splits(config, masked_file)
    masked, _ = read_masked(masked_file)
    table, split = read_split(config.data)
    row = pd.Index(row_keys(table.frame["path"].to_numpy(), "")).get_indexer(masked["path"])
    val = split[row] == "val"
    observed_val = masked[list(table.classes)].to_numpy()[val] == 1
    np.testing.assert_array_equal(val_targets, observed_val)  # the val split's targets are the file's val rows
    assert (table.values()[row[val]][observed_val] == 1).all()  # observed positives are true positives
    from_file = build_data(tiny_config("spml", drop, "data.mask_val=true", f"data.masked_labels={masked_file}"))
    np.testing.assert_array_equal(from_file.train.observed, both.train.observed)
    np.testing.assert_array_equal(from_file.val.targets, both.val.targets)
    with pytest.raises(DataError, match="other split settings"):
        build_data(tiny_config("spml", drop, "data.split_seed=5", f"data.masked_labels={masked_file}"))
    write_masked_splits(tiny_config("spml", drop), tmp_path / "train_only.csv")
    train_only = f"data.masked_labels={tmp_path / 'train_only.csv'}"
    with pytest.raises(DataError, match="holds no val rows"):
        build_data(tiny_config("spml", drop, "data.mask_val=true", train_only))


@pytest.mark.skipif(not (NIH_LABELS.exists() and NIH_ROOT.is_dir()), reason=f"real NIH files not in {SHARED_DATA}")
def test_real_nih_files_masked_trained_and_scored_on_clean_test(experiment, tmp_path):
    out = tmp_path / "nih"
    code, _, err = experiment(out, *NIH, "--methods", "an", "--mask-val")
    assert code == 0, err[-2000:]
    config = load_config(
        [REPO / "configs/datasets/nih.yaml"],
        ["data.dataset=nih", f"data.root={NIH_ROOT}", f"data.labels={NIH_LABELS}", *NIH[6:]],
    )
    table, split = read_split(config.data)
    assert len(table.frame) == 811
    keys = row_keys(table.frame["path"].to_numpy(), dataset_root(config.data.root, config.data.labels))
    masked, manifest = read_masked(out / "masked_labels.csv")
    row = pd.Index(keys).get_indexer(masked["path"])
    assert (row >= 0).all() and set(split[row]) == {"train", "val"}  # no test row in the file
    full = table.values()[row]
    observed = masked[list(table.classes)].to_numpy() == 1
    assert (observed.sum(1) <= 1).all() and (full[observed] == 1).all()  # one true positive kept per row ...
    assert ((observed.sum(1) == 0) == ~(full == 1).any(1)).all()  # ... rows without a finding kept unobserved
    hidden = (full == 1) & ~observed
    assert hidden.sum() == sum(manifest["hidden_positives"].values()) > 0
    assert manifest["rows_in"] == int(np.isin(split, ["train", "val"]).sum())
    per_class = pd.read_csv(out / "an" / "seed0" / "eval" / "per_class.csv")
    assert per_class["n_pos"].tolist() == (table.values()[split == "test"] == 1).sum(0).tolist()
    assert (
        json.loads((out / "an" / "seed0" / "eval" / "metrics.json").read_text())["n_images"] == (split == "test").sum()
    )


def test_full_label_variants_composite_methods_and_the_fair_reference(tmp_path):
    from spml.experiments.masking import compared_method, parse_methods, plan_runs, reference

    methods = parse_methods("full,full_flips,full_consistency,an,boostlu,mpc_paper,mpc")
    runs = {
        run.variant: run
        for run in plan_runs(methods, [3], tmp_path, ("base.yaml",), ("x=1",), tmp_path / "masked.csv", False)
    }
    flips, consistency = runs["full_flips"].overrides, runs["full_consistency"].overrides
    assert "mode=supervised" in flips and "augment.degrees=0" in flips and "augment.scale=[1.0, 1.0]" in flips
    assert "supervised.objective=consistency" in consistency and not any("masked_labels" in o for o in consistency)
    assert {"spml.objective=loss", "loss.name=ll_r", "model.head=boostlu"} <= set(runs["boostlu"].overrides)
    assert runs["mpc_paper"].configs[-1].endswith("configs/presets/mpc_paper.yaml")
    assert all(run.overrides[-2:] == ("train.seed=3", f"train.out={run.run_dir}") for run in runs.values())
    assert reference(methods) == {"full": ["full", "full_flips", "full_consistency"], "an": ["an"]}
    assert reference(["full_flips", "em"]) == {} and compared_method(methods) == "mpc"
    assert compared_method(["full", "an", "em"]) == ""


def test_cluster_launcher_runs_the_experiment_as_jobs_and_report_only_collects(experiment, tmp_path):
    """--launcher submitit-debug: the masked file is written by the launcher, each run is a job (run in this process
    by submitit's debug executor); --report-only writes the results again from the run folders, training nothing."""
    out = tmp_path / "exp"
    code, printed, err = experiment(out, "--methods", "an", "--launcher", "submitit-debug", *RUN)
    assert code == 0, err[-2000:]
    assert "[job ]" in printed and printed.count("[done]") == 1 and ": done" in printed
    assert (out / "masked_labels.csv").exists() and (out / "an/seed0/job.json").exists()
    results = pd.read_csv(out / "results.csv")
    (out / "results.csv").unlink()
    code, printed, _ = experiment(out, "--methods", "an", "--report-only", *RUN)
    assert code == 0 and "[run" not in printed and "[job" not in printed
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), results)
