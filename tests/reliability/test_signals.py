"""Stop signals sent to real trainings (tools/train.py in a subprocess, and torchrun with 2 CPU processes): the
current step finishes, a checkpoint of that step is written, one line says how to resume, the exit code is
128 + the signal number, and the resumed run ends exactly as the uninterrupted one."""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spml.data.loader import make_eval_loader
from spml.engine.signals import SAME_STOP_S
from tests.conftest import GLOO_ABORT, REPO, TWO_PROCESS_RUN, torchrun, torchrun_command, torchrun_env
from tests.reliability.conftest import (
    STALLING_TRAIN,
    assert_same_log,
    final_results,
    latest_step,
    launch,
    progress_of,
    reaped,
    tiny_run_args,
    wait_for,
)

STOP_LINE = re.compile(
    r"stopped by (SIG\w+) at step (\d+) \(checkpoint written, test evaluation skipped\); "
    r"resume with: (python|<the same launcher>) tools/train.py --resume (\S+)"
)


def stop_line(err: str) -> tuple[str, int, str]:
    """(signal name, step, run folder) of the one stop line in a stopped run's stderr; no traceback."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if "resume with" in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    match = STOP_LINE.fullmatch(lines[0])
    assert match, lines[0]
    return match[1], int(match[2]), match[4]


@pytest.mark.parametrize("signum, workers", [(signal.SIGINT, 2), (signal.SIGTERM, 0)])
def test_a_stop_signal_checkpoints_the_step_and_the_resumed_run_ends_as_the_uninterrupted_one(
    cli, reference_run, tmp_path, signum, workers
):
    total = latest_step(reference_run / "checkpoints")
    target = random.Random(int(signum)).randint(2, total - 3)
    out, progress = tmp_path / "run", tmp_path / "progress"
    # checkpoints only at epoch ends (train.checkpoint_every=0): a checkpoint inside an epoch is the signal's
    with reaped(
        launch(
            ["--step-delay", "0.3", "--progress", str(progress), *tiny_run_args(out, f"data.num_workers={workers}")],
            STALLING_TRAIN,
        )
    ) as process:
        wait_for(lambda: progress_of(Path(f"{progress}-0"))["step"] >= target, process)
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)  # as Ctrl-C in a terminal: every process of the group (DataLoader workers)
        else:
            process.send_signal(signum)
        _, err = process.communicate(timeout=240)
    assert process.returncode == 128 + signum, err.decode()[-3000:]
    name, step, run = stop_line(err.decode())
    assert (name, Path(run)) == (signum.name, out) and target <= step < total
    assert latest_step(out / "checkpoints") == step and not (out / "eval").exists()
    code, _, err = cli("train", "--resume", str(out), "data.num_workers=0")
    assert code == 0, err
    assert final_results(out) == final_results(reference_run)
    assert_same_log(out, reference_run)


def test_a_second_signal_ends_the_process_at_once(tmp_path):
    out, progress, marker = tmp_path / "run", tmp_path / "progress", tmp_path / "writing"
    # the first signal's checkpoint is the run's first state.pt write: it stalls there until killed
    with reaped(
        launch(
            ["--stall", "1", str(marker), "--step-delay", "0.3", "--progress", str(progress), *tiny_run_args(out)],
            STALLING_TRAIN,
        )
    ) as process:
        wait_for(lambda: progress_of(Path(f"{progress}-0"))["step"] >= 2, process)
        process.send_signal(signal.SIGTERM)
        first = time.monotonic()
        wait_for(marker.exists, process)
        time.sleep(max(0.0, first + SAME_STOP_S + 0.5 - time.monotonic()))  # sooner: the same stop (a launcher's)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)  # instead of the stalled write's 600 s
    assert process.returncode == -signal.SIGTERM  # ended by the signal itself: exit status 143 in a shell
    assert latest_step(out / "checkpoints") == -1  # the interrupted write never became a checkpoint


def launch_two_processes(out: Path, progress: Path, logs: Path) -> subprocess.Popen:
    """TWO_PROCESS_RUN into `out` under torchrun, each step paced, each process reporting to progress-<rank> and
    writing its stderr under `logs` (apart from torchrun's own report of the exit codes)."""
    command = torchrun_command(
        STALLING_TRAIN,
        "--step-delay",
        "0.3",
        "--progress",
        str(progress),
        *TWO_PROCESS_RUN,
        f"train.out={out}",
        launcher=("--log-dir", str(logs), "--redirects", "2"),
    )
    return subprocess.Popen(
        command, cwd=REPO, env=torchrun_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def rank_stderr(logs: Path, rank: int) -> str:
    (path,) = logs.glob(f"*/attempt_0/{rank}/stderr.log")
    return path.read_text()


@pytest.mark.parametrize("receiver", ["torchrun", "rank 1"])
def test_two_processes_stop_at_one_step_on_a_signal_to_either(two_process_run, tmp_path, receiver):
    """torchrun forwards SIGTERM to both processes; a signal to one process alone (rank 1) stops both too: they agree
    at the next log step, both checkpoint that step and exit 143, and the resumed run ends as the uninterrupted one."""
    for attempt in range(3):  # a new try only for the known gloo abort at exit
        out, progress, logs = tmp_path / f"run{attempt}", tmp_path / f"progress{attempt}", tmp_path / f"logs{attempt}"
        ranks = [Path(f"{progress}-{rank}") for rank in (0, 1)]
        with reaped(launch_two_processes(out, progress, logs)) as process:
            wait_for(lambda: min(progress_of(path)["step"] for path in ranks) >= 2, process)
            os.kill(process.pid if receiver == "torchrun" else progress_of(ranks[1])["pid"], signal.SIGTERM)
            process.communicate(timeout=240)
        errors = [rank_stderr(logs, rank) for rank in (0, 1)]
        if not any(GLOO_ABORT in err for err in errors):
            break
    name, step, run = stop_line(errors[0])  # one line, by the main process; no traceback
    assert (name, Path(run)) == ("SIGTERM", out)
    assert "Traceback" not in errors[1] and "resume with" not in errors[1]
    reports = [progress_of(path) for path in ranks]
    assert [(r["step"], r["exit"]) for r in reports] == [(step, 128 + signal.SIGTERM)] * 2, reports
    folder = out / "checkpoints" / f"step-{step:07d}"
    assert latest_step(out / "checkpoints") == step and {"rng-0.pt", "rng-1.pt", "state.pt"} <= {
        p.name for p in folder.iterdir()
    }
    assert step < latest_step(two_process_run / "checkpoints") and not (out / "eval").exists()
    if receiver == "rank 1":
        return  # resuming is the same as after the first case
    proc = torchrun(REPO / "tools" / "train.py", "--resume", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert final_results(out) == final_results(two_process_run)


class SignalHandlers(torch.utils.data.Dataset):
    """Item i: whether the process that loads it ignores SIGINT and SIGTERM."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        ignored = all(signal.getsignal(signum) == signal.SIG_IGN for signum in (signal.SIGINT, signal.SIGTERM))
        return {"ignored": torch.tensor(ignored), "index": torch.tensor(index)}


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_leave_stop_signals_to_the_main_process(context):
    """Ctrl-C reaches every process of the group and schedulers signal every process of a job: a worker that ended
    on it would break the main process's clean stop (spawned workers do not inherit its handlers)."""
    loader = make_eval_loader(SignalHandlers(), batch_size=1, num_workers=1)
    loader.multiprocessing_context = context
    assert [bool(batch["ignored"]) for batch in loader] == [True, True]


def test_ctrl_c_under_accelerate_launch_checkpoints_the_step(tmp_path):
    """`accelerate launch` (the README's first command) answers Ctrl-C by sending SIGTERM to the training as well,
    a moment after the terminal's SIGINT (and kills the process tree 5 s later): one stop, not an abort.
    Found before: the SIGTERM counted as the second signal, the run aborted without a checkpoint."""
    out, progress = tmp_path / "run", tmp_path / "progress"
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(STALLING_TRAIN),
    ]
    process = subprocess.Popen(
        [*launcher, "--step-delay", "0.3", "--progress", str(progress), *tiny_run_args(out, "data.num_workers=2")],
        cwd=REPO,
        env=torchrun_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with reaped(process):
        wait_for(lambda: progress_of(Path(f"{progress}-0"))["step"] >= 2, process)
        os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: the launcher, the training and its loader workers
        _, err = process.communicate(timeout=120)
    name, step, run = stop_line(err.decode())
    assert process.returncode == 130 and name == "SIGINT" and Path(run) == out, err.decode()[-3000:]
    assert latest_step(out / "checkpoints") == step and progress_of(Path(f"{progress}-0"))["exit"] == 130
