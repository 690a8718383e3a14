"""2-process DDP on the CPU (gloo, torchrun -> Accelerator): evaluation sees every sample exactly once."""

import json

import numpy as np

from tests.conftest import REPO, torchrun


def launch(tmp_path, processes: int) -> dict:
    out = tmp_path / f"eval{processes}.json"
    proc = torchrun(REPO / "tests/engine/ddp_eval_worker.py", str(out), processes=processes)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_process_evaluation_sees_every_sample_once(tmp_path):
    two = launch(tmp_path, 2)
    assert two["processes"] == 2
    assert sorted(two["index"]) == list(range(two["size"]))  # no sample lost or duplicated
    one = launch(tmp_path, 1)
    np.testing.assert_allclose(np.array(two["probs"]), np.array(one["probs"]), atol=1e-5)


def test_two_process_training_runs_end_to_end(two_process_run):
    assert json.loads((two_process_run / "eval" / "metrics.json").read_text())["n_images"] > 0
    assert (two_process_run / "checkpoints" / "latest.json").exists()
