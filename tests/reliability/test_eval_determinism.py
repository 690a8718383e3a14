"""Evaluation determinism: the same checkpoint and data give byte-identical reports (metrics with bootstrap
intervals, per-class table) run after run, equal to the training run's own final evaluation, and
the same with 2 processes (torchrun, gloo) as with 1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from spml.config import load_config
from spml.factories.data import build_data
from tests.conftest import REPO
from tests.reliability.conftest import csv_run_args

REPORTS = ("metrics.json", "per_class.csv")


def reports(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in REPORTS}


def test_the_same_checkpoint_gives_identical_reports_run_after_run(cli, reference_run, tmp_path):
    for name in ("first", "second"):
        code, _, err = cli("evaluate", str(reference_run), "--bootstrap", "20", "--out", str(tmp_path / name))
        assert code == 0, err
    assert reports(tmp_path / "first") == reports(tmp_path / "second")
    assert json.loads((tmp_path / "first" / "metrics.json").read_text())["bootstrap"] == 20
    # bootstrap off: the same numbers as the training run's final test evaluation (same weights, same data)
    code, _, err = cli("evaluate", str(reference_run), "--out", str(tmp_path / "plain"))
    assert code == 0, err
    assert reports(tmp_path / "plain") == reports(reference_run / "eval")


def test_two_processes_give_the_same_reports_as_one_with_bad_images_skipped(cli, dataset_dir, tmp_path):
    """Uneven batches across processes: bad test images left out under data.bad_images=skip, batches of 3."""
    run = tmp_path / "run"
    code, _, err = cli("train", *csv_run_args(dataset_dir, run))
    assert code == 0, err
    test_paths = build_data(load_config([run / "config.yaml"])).frames["test"]["path"].tolist()
    for path in test_paths[:3]:  # cut inside the pixel data: met while evaluating, not by the header check
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) * 2 // 5])
    flags = ["data.bad_images=skip", "data.eval_batch_size=3", "--bootstrap", "20"]
    code, _, err = cli("evaluate", str(run), *flags, "--out", str(tmp_path / "one"))
    assert code == 0, err
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tools" / "evaluate.py"),
        str(run),
        *flags,
        "--out",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert reports(tmp_path / "two") == reports(tmp_path / "one")
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["n_images"] == len(test_paths) - 3
