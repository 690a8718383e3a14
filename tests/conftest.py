"""Shared fixtures: tiny configs on the synthetic set, so end-to-end tests take seconds; 2-process CPU runs."""

import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from spml.config import load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY = [
    "data.dataset=synthetic",
    "data.size=32",
    "data.synthetic.num_images=400",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.num_workers=0",
    "model.backbone=test_efficientnet",
    "train.epochs=2",
    "train.log_every=5",
    "eval.bootstrap=0",
    "optim.warmup_epochs=0",
    "spml.mpc.warmup_epochs=0.5",
    "spml.mpc.rampup_epochs=0.5",
    "spml.mpc.memory_size=64",
    "augment.elastic.kernel_size=7",
    "spml.mpc.bt_dim_feedforward=64",
    # the end-of-run heatmaps, pointing game and HTML report cost seconds per run: tests/test_run_report.py
    # trains with them on, the other tests without
    "eval.heatmaps=0",
    "eval.pointing_game=false",
    "eval.report=false",
]


HELPERS = ("resource_tracker", "forkserver")  # multiprocessing's own helper processes live as long as pytest


def children() -> dict[int, str]:
    """{pid: command line} of this process's live descendants, multiprocessing's helpers left out."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())[:300]
            if child.status() != psutil.STATUS_ZOMBIE and not any(name in command for name in HELPERS):
                found[child.pid] = command
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """A test may not leave a process behind (a DataLoader worker, a training it launched): what is still alive
    10 s after the test (and a garbage collection, which ends the workers of dropped loaders) is killed, and the
    test fails naming it."""
    before = children()
    yield
    left = {pid: command for pid, command in children().items() if pid not in before}
    if not left:
        return
    gc.collect()
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {pid: command for pid, command in children().items() if pid in left}
    for pid in left:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"the test left these processes behind (now killed): {left}"


@pytest.fixture
def tiny_config(tmp_path):
    """factory(mode, *overrides) -> a Config of a seconds-long run writing into tmp_path."""

    def make(mode: str = "spml", *overrides: str):
        return load_config([], [*TINY, f"train.out={tmp_path / 'run'}", *overrides], mode=mode)

    return make


# a 2-process CPU (gloo) run may abort at interpreter exit after its work is done (docs/reliability.md, Known limits)
GLOO_ABORT = "terminate called without an active exception"


def torchrun_command(script: Path, *args: str, processes: int = 2, launcher: tuple[str, ...] = ()) -> list[str]:
    """torchrun (`launcher`: more of its options) running `script args` in `processes` processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        *launcher,
        str(script),
        *args,
    ]


def torchrun_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def torchrun(script: Path, *args: str, processes: int = 2, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node processes script args`, tried again (up to 3 times) on the known gloo abort."""
    for _ in range(3):
        proc = subprocess.run(
            torchrun_command(script, *args, processes=processes),
            cwd=cwd,
            env=torchrun_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if GLOO_ABORT not in proc.stderr:
            break
    return proc


TWO_PROCESS_RUN = ["--mode", "spml", *TINY]  # 2 epochs of 4 steps


@pytest.fixture(scope="session")
def two_process_run(tmp_path_factory) -> Path:
    """An uninterrupted TWO_PROCESS_RUN under torchrun (2 CPU processes, gloo)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = torchrun(REPO / "tools" / "train.py", *TWO_PROCESS_RUN, f"train.out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
