"""Every way a training, evaluation or grid process ends, it ends: the tools run in a subprocess (an in-process call
hides a hang at interpreter exit), with 0 and 2 loader workers started by fork and by spawn, and each test asserts
the exit code, the seconds from the last message to the exit and that no process of the run's session is left.

Found before: a run that stopped on a DataError from a loader worker printed its error and never exited (the
workers ignore SIGTERM, their iterator outlived the error, and multiprocessing's exit handler waits for them)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, torchrun_command, torchrun_env
from tests.reliability.conftest import STALLING_TRAIN, csv_run_args, launch, progress_of, tiny_run_args, wait_for
from tests.reliability.test_bad_images import split_paths, truncate

TRAIN, EVALUATE = REPO / "tools" / "train.py", REPO / "tools" / "evaluate.py"
HANG = 240  # seconds after which a process counts as hanging (a run here takes 5-30 s on a loaded 2-core machine)
EXIT_AFTER_MESSAGE = 20  # seconds from the last line a process writes to its exit (interpreter teardown included)
WORKERS = {
    "0 workers": ("data.num_workers=0",),
    "2 fork workers": ("data.num_workers=2", "data.worker_start=fork"),
    "2 spawn workers": ("data.num_workers=2", "data.worker_start=spawn"),
}


def session_processes(session: int) -> list[str]:
    """The live processes of a session (command lines), zombies left out."""
    found = []
    for process in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getsid(process.pid) == session and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{process.pid}: {' '.join(process.info['cmdline'] or [])[:200]}")
        except (ProcessLookupError, PermissionError):
            pass
    return found


@contextmanager
def killed_on_failure(process: subprocess.Popen) -> Iterator[None]:
    """Kill the session of a launched process when the block fails (a wait that timed out), and only then."""
    try:
        yield
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


@dataclass
class Ending:
    code: int
    err: str
    after_message: float  # seconds from the last stderr line to the exit
    left: list[str]  # processes of the session alive 2 s after the exit


def run_to_end(process: subprocess.Popen, timeout: float = HANG) -> Ending:
    """Wait for a launched process (a session of its own: `launch`) to end; a hang fails the test. Whatever the
    session still holds afterwards is killed, and listed in `left`."""
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in process.stderr:
            lines.append((time.monotonic(), line.decode(errors="replace")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        left = session_processes(process.pid)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(
            f"no exit within {timeout} s; the session holds {left}; stderr ends: "
            f"{''.join(line for _, line in lines)[-2000:]}"
        )
    ended = time.monotonic()
    time.sleep(2)
    left = session_processes(process.pid)
    if left:
        os.killpg(process.pid, signal.SIGKILL)
    reader.join(10)
    last = lines[-1][0] if lines else ended
    return Ending(process.returncode, "".join(line for _, line in lines), ended - last, left)


def assert_ends(ending: Ending, code: int, message: str) -> None:
    assert ending.code == code, ending.err[-3000:]
    assert message in ending.err, ending.err[-3000:]
    assert ending.after_message < EXIT_AFTER_MESSAGE, (ending.after_message, ending.err[-2000:])
    assert not ending.left, ending.left


@pytest.fixture
def cut_train_image(dataset_dir, tmp_path) -> tuple[list[str], Path]:
    """(tools/train.py arguments of the CSV run, a train image cut inside its pixel data: met mid-epoch)."""
    args = csv_run_args(dataset_dir, tmp_path / "run")
    victim = Path(split_paths(args)["train"][3])
    truncate(victim)
    return args, victim


@pytest.mark.parametrize("workers", WORKERS)
def test_a_run_stopped_by_a_bad_image_mid_epoch_ends_with_its_workers(cut_train_image, workers):
    args, victim = cut_train_image
    ending = run_to_end(launch([*args, *WORKERS[workers]]))
    assert_ends(ending, 2, f"train.py: error: {victim}: truncated or corrupt image data")


def test_a_finished_run_and_its_evaluation_end_with_their_workers(dataset_dir, tmp_path):
    run = tmp_path / "run"
    ending = run_to_end(launch(csv_run_args(dataset_dir, run, *WORKERS["2 fork workers"])))
    assert ending.code == 0 and not ending.left, (ending.err[-3000:], ending.left)
    ending = run_to_end(launch([str(run), "--out", str(tmp_path / "eval")], EVALUATE))  # the run's 2 workers
    assert ending.code == 0 and not ending.left, (ending.err[-3000:], ending.left)


@pytest.mark.parametrize(
    "failure, code, message",
    [
        ("nan", 2, "train.py: error: non-finite loss/gradient at step 3"),
        ("callback", 1, "RuntimeError: a callback failed at step 3"),  # a bug: a traceback, exit 1
    ],
)
def test_a_run_that_fails_inside_the_loop_ends_with_its_workers(dataset_dir, tmp_path, failure, code, message):
    args = csv_run_args(dataset_dir, tmp_path / "run", *WORKERS["2 fork workers"])
    ending = run_to_end(launch(["--fail-at", "3", failure, *args], STALLING_TRAIN))
    assert_ends(ending, code, message)


def test_a_stop_signal_to_the_main_process_alone_ends_it_with_its_workers(tmp_path):
    """The signal reaches the main process only (a scheduler that signals the job's leader, `kill PID`); SIGINT to
    the whole process group: tests/reliability/test_signals.py."""
    signum = signal.SIGTERM
    out, progress = tmp_path / "run", tmp_path / "progress"
    process = launch(
        ["--step-delay", "0.3", "--progress", str(progress), *tiny_run_args(out, *WORKERS["2 spawn workers"])],
        STALLING_TRAIN,
    )
    with killed_on_failure(process):
        wait_for(lambda: progress_of(Path(f"{progress}-0"))["step"] >= 2, process)
    process.send_signal(signum)
    assert_ends(run_to_end(process), 128 + signum, f"stopped by {signum.name} at step")


def test_workers_of_a_killed_main_process_end_on_their_own(tmp_path):
    """SIGKILL leaves no exit path to run: the workers notice the parent is gone (torch's watchdog)."""
    out, progress = tmp_path / "run", tmp_path / "progress"
    process = launch(
        ["--step-delay", "0.3", "--progress", str(progress), *tiny_run_args(out, *WORKERS["2 fork workers"])],
        STALLING_TRAIN,
    )
    with killed_on_failure(process):
        wait_for(lambda: progress_of(Path(f"{progress}-0"))["step"] >= 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    deadline = time.monotonic() + 20
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = session_processes(process.pid)
    if left:
        os.killpg(process.pid, signal.SIGKILL)
    assert not left


def test_a_failure_in_one_of_two_torchrun_processes_ends_every_process(cut_train_image):
    args, victim = cut_train_image
    command = torchrun_command(TRAIN, *args, *WORKERS["2 fork workers"])
    process = subprocess.Popen(
        command, cwd=REPO, env=torchrun_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    ending = run_to_end(process)
    assert ending.code != 0 and f"{victim}: truncated or corrupt image data" in ending.err, ending.err[-3000:]
    assert ending.after_message < 60 and not ending.left, (ending.after_message, ending.left)


def test_a_stop_signal_to_a_grid_stops_its_training_and_the_grid(tmp_path):
    """SIGTERM to the grid (tools/ablate.py) alone: passed on to the training it runs, which stops writing its
    checkpoint; then the grid stops, leaving the run resumable (no FAILED: the next start of the grid resumes it).
    Found before: the grid died at once and its training ran on, orphaned."""
    from tests.test_ablate import write_grid

    grid = write_grid(
        tmp_path,
        "  - {name: AN, overrides: [spml.objective=loss, loss.name=an, train.epochs=40, data.num_workers=2]}\n",
        reference="{}",
    )
    run = tmp_path / "grid" / "an" / "seed0"
    process = launch([grid, "--out", str(tmp_path / "grid")], REPO / "tools" / "ablate.py")
    with killed_on_failure(process):
        wait_for(lambda: (run / "log.csv").exists(), process)
    process.send_signal(signal.SIGTERM)
    ending = run_to_end(process)
    assert_ends(ending, 128 + signal.SIGTERM, "ablate.py: stopped by SIGTERM")
    assert "stopped by SIGTERM at step" in (run / "train_output.txt").read_text()
    assert not (run / "FAILED").exists() and not (run / "eval").exists()
    assert (run / "checkpoints" / "latest.json").exists()
    from spml.reporting.grid_results import read_run

    assert read_run(run)["status"] == "interrupted"
