"""configs/benchmarks/: the SPML-CXR benchmark grids follow their protocol, and the CheXpert comparison runs with one
command at toy size, on this machine (--launcher local) and as cluster jobs (submitit's local executor standing in
for Slurm, whose sbatch script --dry-run shows), on a CheXpert tree with the official test set's layout."""

import subprocess
import sys

import pandas as pd
import pytest

from spml.config import load_config
from spml.experiments.grid import load_grid
from spml.experiments.launch import cluster_settings
from tests.conftest import REPO, TINY
from tests.cxr_files import write_chexpert, write_chexpert_test

METHODS = ["full labels", "AN", "AN-LS", "EM", "LL-R", "GR", "BoostLU", "MPC"]
DATASETS = {
    "chexpert": {"views": ("frontal",), "uncertainty": "ignore"},
    "mimic": {"views": ("PA", "AP"), "uncertainty": "ignore"},
    "nih": {"views": ("PA", "AP")},
}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_benchmark_grid_follows_the_protocol(dataset):
    grid = load_grid(REPO / "configs/benchmarks" / f"{dataset}.yaml")
    assert list(dict.fromkeys(run.variant for run in grid.runs)) == METHODS
    assert sorted({run.seed for run in grid.runs}) == [0, 1, 2, 3, 4] and len(grid.runs) == 40
    assert grid.reference == {"full": ["full labels"], "an": ["AN"]} and grid.compare == "MPC"
    assert cluster_settings(grid.cluster, dataset).gpus == 1
    for run in grid.runs:
        config = load_config(run.configs, run.overrides)  # the schema accepts every key and value
        data = config.data
        assert (config.data.dataset, data.size, data.split) == (dataset, 320, "official")
        assert all(getattr(data, key) == value for key, value in DATASETS[dataset].items())
        assert config.model.pretrained == "imagenet"  # the ImageNet weights of the pretrained-weights issue
        assert config.eval.study_level == "max" and config.train.out == str(run.run_dir)
        if config.mode == "spml":
            assert (data.mask_scheme, data.mask_seed, data.mask_no_positive) == ("single_positive", 1200, "keep")
        if config.loss.name == "gr":  # GR's schedule must span the run
            assert config.loss.params["num_epochs"] == config.train.epochs
    mpc = load_config(grid.runs[-1].configs, grid.runs[-1].overrides)
    assert (mpc.mode, mpc.spml.objective) == ("spml", "mpc")


def ablate(root, *extra: str) -> subprocess.CompletedProcess:
    """The benchmark's one command, with toy-size overrides (tiny backbone, 32 px, 1 epoch, no ImageNet weights)."""
    toy = [
        *TINY,
        "data.dataset=chexpert",
        f"data.root={root}",
        "model.pretrained=",
        "train.precision='no'",
        "model.channels_last=false",
        "train.epochs=1",
        "data.batch_size=8",
        "data.eval_batch_size=16",
    ]
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "tools/ablate.py"),
            str(REPO / "configs/benchmarks/chexpert.yaml"),
            "--out",
            str(root.parent / "bench"),
            *extra,
            *toy,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        check=False,
    )


def test_chexpert_comparison_runs_with_one_command_locally_and_as_cluster_jobs(tmp_path):
    root = write_chexpert(tmp_path / "chexpert")
    studies = write_chexpert_test(root)
    out = tmp_path / "bench"
    local = ablate(root, "--seed", "0", "--only", "full labels", "--only", "AN")
    assert local.returncode == 0, local.stderr[-3000:]
    for method in ("full_labels", "an"):  # scored on the official test set, per study
        assert pd.read_json(out / method / "seed0/eval/metrics.json", typ="series")["n_images"] == len(studies)
    jobs = ablate(
        root, "--launcher", "submitit-local", "--seed", "0", "--only", "AN", "--only", "GR", "--only", "full labels"
    )
    assert jobs.returncode == 0, jobs.stderr[-3000:]
    assert "[job ]" in jobs.stdout and jobs.stdout.count("[job ]") == 1  # AN and full labels had finished: one job
    results = pd.read_csv(out / "results.csv")
    assert list(results["variant"]) == ["full labels", "AN", "GR"] and (results["status"] == "done").all()
    assert "| GR |" in (out / "results.md").read_text() and "recovery" in (out / "results.md").read_text()
    dry = ablate(root, "--launcher", "slurm", "--dry-run", "--partition", "gpu")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "slurm launch, 37 of 40 runs unfinished" in dry.stdout and "GPU-hours in all" in dry.stdout
    for line in (
        "#SBATCH --array=0-36%37",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=720",
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=8",
    ):
        assert line in dry.stdout, line
