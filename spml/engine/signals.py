"""SIGINT/SIGTERM end a run cleanly: the current step finishes, a resumable checkpoint is written, the tool exits
with 128 + the signal number. A cluster scheduler (and torchrun, which forwards it to every process) stops a job
with SIGTERM; Ctrl-C sends SIGINT."""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from spml.engine.callbacks import Callback

if TYPE_CHECKING:
    from spml.engine.trainer import Trainer

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal outside the training loop (building the run, the final evaluation), where there is no step to
    finish: the tool stops at once. A BaseException, like KeyboardInterrupt, so `except Exception` lets it pass."""

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
    once (the signal's default action).

    `stopped_by`: the signal the run stopped on (agreed by all processes; 0 if none).
    """

    def __init__(self, every: int = 1):
        self.every = every
        self.received = 0  # the first signal this process got
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
        if self.received:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        if not self.in_loop and not self.stopped_by:  # (after a stop, e.g. torchrun ending the other processes)
            raise Interrupted(signum)

    def agreed(self, trainer: Trainer) -> int:
        """The largest signal number any process received (0: none); a collective in multi-process runs."""
        if trainer.accelerator.num_processes == 1:
            return self.received
        flag = torch.tensor([self.received], dtype=torch.float32, device=trainer.accelerator.device)
        return int(trainer.accelerator.reduce(flag, "max").item())

    def stop(self, trainer: Trainer, signum: int) -> None:
        self.stopped_by = signum
        trainer.request_stop(f"{signal.Signals(signum).name} received: writing a checkpoint at step "
                             f"{trainer.progress.global_step} (a second signal aborts at once)", interrupt=True)

    def on_fit_start(self, trainer: Trainer) -> None:
        self.in_loop = True

    def on_step_end(self, trainer: Trainer, batch: dict, out: dict | None) -> None:
        progress = trainer.progress
        if (trainer.accelerator.num_processes > 1 and progress.global_step % self.every
                and progress.batch_in_epoch < trainer.steps_per_epoch):
            return
        signum = self.agreed(trainer)
        if signum:
            self.stop(trainer, signum)

    def on_fit_end(self, trainer: Trainer) -> None:
        if not trainer.interrupted:
            signum = self.agreed(trainer)
            if signum:
                self.stop(trainer, signum)
        self.in_loop = False
