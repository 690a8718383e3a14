"""2-process DDP on the CPU (gloo, torchrun -> Accelerator): evaluation sees every sample exactly once."""
import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO


def launch(tmp_path, processes: int) -> dict:
    out = tmp_path / f"eval{processes}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--standalone",
           str(REPO / "tests/engine/ddp_eval_worker.py"), str(out)]
    for _ in range(3):  # known intermittent gloo abort at interpreter exit (docs/reliability.md, Known limits); retried
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        if "terminate called without an active exception" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_process_evaluation_sees_every_sample_once(tmp_path):
    two = launch(tmp_path, 2)
    assert two["processes"] == 2
    assert sorted(two["index"]) == list(range(two["size"]))  # no sample lost or duplicated
    one = launch(tmp_path, 1)
    np.testing.assert_allclose(np.array(two["probs"]), np.array(one["probs"]), atol=1e-5)


def test_two_process_training_runs_end_to_end(tmp_path):
    from tests.conftest import TINY

    out = tmp_path / "ddp_run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tools/train.py"), "--mode", "spml", *TINY, "train.epochs=1", f"train.out={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "eval" / "metrics.json").read_text())["n_images"] > 0
    assert (out / "checkpoints" / "latest.json").exists()
