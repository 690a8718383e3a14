"""SIGINT/SIGTERM end a run cleanly: the current step finishes, a resumable checkpoint is written, the tool exits
with 128 + the signal number. A cluster scheduler (and torchrun, which forwards it to every process) stops a job
with SIGTERM; Ctrl-C sends SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from spml.engine.callbacks import Callback

if TYPE_CHECKING:
    from spml.engine.trainer import Trainer

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# a second signal this soon after the first is the same stop: `accelerate launch` answers Ctrl-C (SIGINT to the
# whole process group) by sending SIGTERM to the training process as well, and a grid passes its stop on
SAME_STOP_S = 2.0


class Interrupted(BaseException):
    """A stop signal outside the training loop (building the run, the final evaluation), where there is no step to
    finish: the tool stops at once. A BaseException, like KeyboardInterrupt, so `except Exception` lets it pass.

    Args:
        signum: the signal number (kept as `signum`).
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopOnSignal(Callback):
    """SIGINT/SIGTERM -> `trainer.request_stop(..., interrupt=True)`; place it first among the callbacks.

    As a context manager it installs its handlers (from the main thread only) and restores the previous ones on
    exit. In the training loop a first signal is only noted. One process stops after the current step. Processes of
    a multi-process run must stop after the same step whichever of them got the signal, so they agree every `every`
    steps (the log interval, where the loop synchronises anyway) and at each epoch's last step by an all-reduce of
    one flag, and all stop after the first such step that follows the signal; at the end of the loop they agree
    once more, so a signal during the last epoch's end skips the final evaluation on every process. Outside the
    loop a signal raises Interrupted, unless the run already stopped on one. A second signal ends the process at
    once (the signal's default action), unless it comes within SAME_STOP_S of the first (a launcher forwarding it).

    `stopped_by`: the signal the run stopped on (agreed by all processes; 0 if none).

    Args:
        every: steps between the agreements of a multi-process run (the log interval).
    """

    def __init__(self, every: int = 1):
        self.every = every
        self.received = 0  # the first signal this process got
        self.received_at = 0.0  # when (time.monotonic)
        self.stopped_by = 0
        self.in_loop = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self.handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: note a first signal (raise Interrupted outside the loop); a second one ends the process
        unless it comes within SAME_STOP_S of the first.

        Args:
            signum: the signal number.
            frame: the interrupted frame (unused).
        """
        if self.received:
            if time.monotonic() - self.received_at < SAME_STOP_S:  # a launcher passing the stop on: the same stop
                return
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received, self.received_at = signum, time.monotonic()
        if not self.in_loop and not self.stopped_by:  # (after a stop, e.g. torchrun ending the other processes)
            raise Interrupted(signum)

    def agreed(self, trainer: Trainer) -> int:
        """The largest signal number any process received (0: none); a collective in multi-process runs.

        Args:
            trainer: the trainer running the loop.

        Returns:
            The signal number, or 0.
        """
        if trainer.accelerator.num_processes == 1:
            return self.received
        flag = torch.tensor([self.received], dtype=torch.float32, device=trainer.accelerator.device)
        return int(trainer.accelerator.reduce(flag, "max").item())

    def stop(self, trainer: Trainer, signum: int) -> None:
        """Record the signal and request an interrupting stop.

        Args:
            trainer: the trainer running the loop.
            signum: the agreed signal number.
        """
        self.stopped_by = signum
        trainer.request_stop(
            f"{signal.Signals(signum).name} received: writing a checkpoint at step "
            f"{trainer.progress.global_step} (a second signal aborts at once)",
            interrupt=True,
        )

    def on_fit_start(self, trainer: Trainer) -> None:
        """Enter the loop: signals are only noted from now on.

        Args:
            trainer: the trainer running the loop.
        """
        self.in_loop = True

    def on_step_end(self, trainer: Trainer, batch: dict, out: dict | None) -> None:
        """Stop after this step when the processes agree that a signal came.

        In multi-process runs they agree every `every` steps and at each epoch's last step.

        Args:
            trainer: the trainer running the loop.
            batch: the training batch.
            out: the objective's output (unused).
        """
        progress = trainer.progress
        if (
            trainer.accelerator.num_processes > 1
            and progress.global_step % self.every
            and progress.batch_in_epoch < trainer.steps_per_epoch
        ):
            return
        signum = self.agreed(trainer)
        if signum:
            self.stop(trainer, signum)

    def on_fit_end(self, trainer: Trainer) -> None:
        """Agree once more (unless already interrupted), then leave the loop.

        Args:
            trainer: the trainer running the loop.
        """
        if not trainer.interrupted:
            signum = self.agreed(trainer)
            if signum:
                self.stop(trainer, signum)
        self.in_loop = False


@contextmanager
def passing_stop_signals(child: subprocess.Popen) -> Iterator[list[int]]:
    """Pass the stop signals this process gets on to `child` while the block runs (the block waits for it).

    The child stops as it stops (a training finishes its step and writes a checkpoint) and is waited for: no child
    outlives its parent's stop. The caller then stops too (raise Interrupted). Handlers are installed from the main
    thread only and restored afterwards.

    Args:
        child: the started subprocess.

    Returns:
        A context manager yielding the list of the stop signals received meanwhile (empty when none).
    """
    received: list[int] = []

    def pass_on(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, pass_on) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_child(command: Sequence[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run `command` to its end with its output captured, passing stop signals on (passing_stop_signals).

    Args:
        command: the program and its arguments.

    Returns:
        (the finished process with its stdout and stderr as text, the stop signal this process got meanwhile or 0).
    """
    with subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        with passing_stop_signals(child) as received:
            out, err = child.communicate()
    return subprocess.CompletedProcess(child.args, child.returncode, out, err), (received[0] if received else 0)
