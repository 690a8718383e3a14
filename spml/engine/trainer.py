"""The one accelerate training loop shared by every objective: a loop plus callbacks.

The loop does forward, backward, clipping, the optimizer and scheduler steps and counts progress; logging,
validation, checkpoints, the evaluation EMA, reports and early stopping are callbacks
(spml/engine/callbacks.py). It never branches on the mode or the objective. spml.factories.build_trainer
assembles a Trainer from a Config; the Trainer itself receives objects only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from spml.data.loader import end_workers, one_pass
from spml.data.table import DataError
from spml.engine import checkpoint as ckpt
from spml.engine.callbacks import Callback
from spml.engine.logger import RunLogger


def build_accelerator(precision: str = "no", accumulate: int = 1) -> Accelerator:
    """Accelerator for this machine. Without CUDA it asks for the CPU explicitly: only then does
    accelerate turn a torchrun launch (WORLD_SIZE > 1) into gloo DDP instead of N lone processes.

    Args:
        precision: accelerate's mixed precision ("no", "fp16", "bf16").
        accumulate: gradient accumulation steps.

    Returns:
        The Accelerator.
    """
    # non_blocking: batches from pinned memory (the loaders pin on CUDA) are copied while the step runs.
    # CUDA only: on the CPU it has nothing to overlap, and 2-process gloo runs then aborted at exit.
    cuda = torch.cuda.is_available()
    return Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=accumulate,
        cpu=not cuda,
        dataloader_config=DataLoaderConfiguration(non_blocking=cuda),
    )


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; the message names the step and loss components."""


@dataclass
class Progress:
    """Where the training loop stands (checkpointed).

    Attributes:
        epoch: the current epoch (0-based).
        batch_in_epoch: batches of `epoch` already trained.
        global_step: batches trained in total.
        updates: optimizer steps.
    """

    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    global_step: int = 0  # batches trained in total
    updates: int = 0  # optimizer steps


class NonFiniteGuard:
    """Tracks the first non-finite step on the device; checked only at log/checkpoint time.

    Args:
        device: the device the first bad step is tracked on.
    """

    def __init__(self, device: torch.device):
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.components: dict[str, torch.Tensor] = {}

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None, components: dict) -> torch.Tensor:
        """Note a non-finite loss or gradient norm of `step` (the first one's components are kept), on the device.

        Args:
            step: the training step.
            loss: the step's loss.
            grad_norm: the gradient norm, or None when not computed.
            components: name -> the loss components of the step.

        Returns:
            A device bool: this step's loss or gradient is non-finite.
        """
        bad = ~torch.isfinite(loss.detach())
        if grad_norm is not None:
            bad = bad | ~torch.isfinite(grad_norm)
        first = bad & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(first, step, self.first_bad_step)
        for name, value in components.items():
            previous = self.components.get(name, torch.zeros_like(value))
            self.components[name] = torch.where(first, value, previous)
        return bad

    def check(self) -> None:
        step = int(self.first_bad_step)
        if step >= 0:
            named = ", ".join(f"{k}={float(v):.4g}" for k, v in self.components.items())
            raise NonFiniteLossError(
                f"non-finite loss/gradient at step {step} (components: {named}); stopping before any checkpoint "
                "is written, the last good checkpoint is intact. Set train.nonfinite=skip to skip such steps."
            )


class Trainer:
    """Runs `epochs` epochs of `train_loader` through `objective`, with `callbacks` around the loop.

    Args:
        objective: forward(batch) -> {"loss", "logits", "components"}, with set_progress(step, steps_per_epoch)
            and after_optimizer_step() (spml.objectives.Objective). Passed through `accelerator.prepare`, as are
            `optimizer` and `train_loader` (spml.factories.build_trainer does it).
        optimizer: the optimizer.
        scheduler: a timm scheduler stepped per optimizer update (`step_update(updates)`).
        train_loader: the training loader (its length is the epoch's steps).
        accelerator: the run's accelerator.
        epochs: epochs to train.
        max_steps: stop after this many batches (0: no limit).
        grad_clip: gradient norm clip (0: off).
        nonfinite: "stop" raises NonFiniteLossError at the next check (log steps, checkpoints, epoch ends); "skip"
            skips the optimizer step of a non-finite loss or gradient (one host synchronisation per step).
        callbacks: called in list order (spml.engine.callbacks); their state is checkpointed by state_key.
        logger: where `log` writes scalars (None: nowhere).

    Stopping: `request_stop(reason)` (early stopping, max_steps) is honoured after the current batch; the
    epoch-end callbacks (checkpoint) and the fit-end callbacks (final evaluation) still run. `interrupt=True` (a
    stop signal: the run will be resumed) also skips the work of an epoch the batch completed (its validation;
    the checkpoint then resumes into that epoch's end) and the final evaluation (`interrupted`).
    """

    def __init__(
        self,
        objective: nn.Module,
        optimizer: Optimizer,
        scheduler: Any,
        train_loader: DataLoader,
        accelerator: Accelerator,
        *,
        epochs: int,
        max_steps: int = 0,
        grad_clip: float = 0.0,
        nonfinite: str = "stop",
        callbacks: Sequence[Callback] = (),
        logger: RunLogger | None = None,
    ):
        self.objective, self.optimizer, self.scheduler = objective, optimizer, scheduler
        self.train_loader, self.accelerator = train_loader, accelerator
        self.model = accelerator.unwrap_model(objective)
        self.epochs, self.max_steps, self.grad_clip, self.nonfinite = epochs, max_steps, grad_clip, nonfinite
        self.callbacks, self.logger = list(callbacks), logger
        keys = [callback.state_key for callback in self.callbacks]
        if len(set(keys)) < len(keys):
            raise ValueError(f"callbacks need distinct state keys (state_key), got {keys}")
        self.steps_per_epoch = len(train_loader)
        self.progress = Progress()
        self.guard = NonFiniteGuard(accelerator.device)
        self.stop_reason = ""
        self.interrupted = False  # stopped to be resumed later (request_stop(..., interrupt=True))
        self.summary: dict = {}  # filled by callbacks (FinalEvaluation: the test summary); fit() returns it

    def callback(self, kind: type) -> Any:
        """The first callback of type `kind` (None if there is none).

        Args:
            kind: the callback class.

        Returns:
            The callback, or None.
        """
        return next((callback for callback in self.callbacks if isinstance(callback, kind)), None)

    def emit(self, hook: str, *args: Any) -> None:
        """Call hook `hook` of every callback in list order.

        Args:
            hook: the hook's name (e.g. "on_epoch_end").
            *args: its arguments after the trainer.
        """
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def log(self, values: dict[str, float]) -> None:
        """Scalars at the current step into the run logger (main process).

        Args:
            values: name -> value.
        """
        if self.logger is not None:
            self.logger.log(self.progress.global_step, values)

    def request_stop(self, reason: str, interrupt: bool = False) -> None:
        """Stop after the current batch (see the class docstring).

        Args:
            reason: printed, and kept as `stop_reason` (the first one wins).
            interrupt: a stop signal: the run will be resumed.
        """
        self.stop_reason = self.stop_reason or reason
        self.interrupted = self.interrupted or interrupt
        self.accelerator.print(f"stopping: {reason}")

    def check_finite(self) -> None:
        """Raise NonFiniteLossError if a step since the last check had a non-finite loss (one host read)."""
        self.guard.check()

    # ----------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "objective": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": vars(self.progress).copy(),
            "callbacks": {c.state_key: c.state_dict() for c in self.callbacks if c.state_dict()},
        }

    def resume(self, path: str | Path) -> None:
        """Continue from the checkpoint under `path` (a run folder, its checkpoints folder or a step folder):
        weights, optimizer, scheduler, progress, callback states and this process's RNG states; the run log
        drops what an interrupted attempt logged after that checkpoint.

        Args:
            path: a run folder, its checkpoints folder or a step folder.
        """
        folder = ckpt.find_checkpoint(path)
        state, rng = ckpt.load_state(folder, self.accelerator.process_index)
        ckpt.check_resumable(state, folder)
        self.model.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = Progress(**state["progress"])
        for callback in self.callbacks:
            if callback.state_key in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][callback.state_key])
        if rng is not None:
            ckpt.set_rng_state(rng)
        if self.logger is not None:
            self.logger.rewind(self.progress.global_step)
        self.accelerator.print(
            f"resumed from {folder} at epoch {self.progress.epoch}, "
            f"batch {self.progress.batch_in_epoch}, step {self.progress.global_step}"
        )

    # ----------------------------------------------------------------------------------- loop
    def fit(self) -> dict:
        """Train to the end (or a stop request); returns `summary` (the final test evaluation's)."""
        try:
            self.train_epochs()
        finally:  # the training workers are done, on every way out (spml.data.loader)
            end_workers(self.train_loader)
        try:
            self.emit("on_fit_end")
        finally:  # also when a stop signal ends the final evaluation (spml.engine.signals.Interrupted)
            if self.logger is not None:
                self.logger.close()
        return self.summary

    def train_epochs(self) -> None:
        """The epochs of `fit`, from the current progress to the end or a stop request."""
        progress = self.progress
        self.emit("on_fit_start")
        while progress.epoch < self.epochs and not self.stop_reason:
            self.objective.train()
            self.emit("on_epoch_start")
            loader = self.train_loader
            if progress.batch_in_epoch:
                loader = self.accelerator.skip_first_batches(self.train_loader, progress.batch_in_epoch)
            loader.set_epoch(progress.epoch)  # accelerate's loaders pass it to the EpochSampler (and count from it)
            with one_pass(loader, keep_workers=loader is self.train_loader) as batches:  # a skipping loader: once
                for batch in batches:
                    out = self.train_step(batch)
                    self.emit("on_step_end", batch, out)
                    if self.max_steps and progress.global_step >= self.max_steps:
                        self.request_stop(f"reached max_steps={self.max_steps}")
                    if self.stop_reason:
                        break
            self.check_finite()
            completed = progress.batch_in_epoch >= self.steps_per_epoch and not self.interrupted
            if completed:
                progress.epoch += 1
                progress.batch_in_epoch = 0
            self.emit("on_epoch_end", completed)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict | None:
        """One batch: forward, backward, (at accumulation boundaries) clip and optimizer step.

        No host synchronisation (tests/engine/test_host_sync.py) except under nonfinite="skip".
        tools/benchmark.py times this method, so it measures what training runs. A batch whose every
        image was bad (data.bad_images=skip; zero rows) is counted as trained and returns None.

        Args:
            batch: the training batch (images, targets, index, ...).

        Returns:
            The objective's output, or None for a batch without images.
        """
        acc, progress, grad_norm = self.accelerator, self.progress, None
        if not len(batch["index"]):  # a shape, not a device read
            if acc.num_processes > 1:  # the other processes would wait for this one's gradients forever
                raise DataError(
                    "every image of a training batch was bad (data.bad_images=skip); a multi-process "
                    "run cannot skip a step on one process. See skipped_images.csv in the run folder"
                )
            progress.batch_in_epoch += 1
            progress.global_step += 1
            return None
        self.model.set_progress(progress.global_step + 1, self.steps_per_epoch)
        with acc.accumulate(self.objective):
            out = self.objective(batch)
            acc.backward(out["loss"])
            if acc.sync_gradients:
                self.emit("on_before_optimizer_step")
                grad_norm = acc.clip_grad_norm_(self.objective.parameters(), self.grad_clip or float("inf"))
            bad = self.guard.observe(progress.global_step, out["loss"], grad_norm, out["components"])
            if self.nonfinite == "skip" and bool(bad):  # explicit option: one host sync per step
                self.optimizer.zero_grad(set_to_none=True)
                self.guard.first_bad_step.fill_(-1)
            else:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            progress.updates += 1
            self.scheduler.step_update(progress.updates)
            self.model.after_optimizer_step()
            self.emit("on_optimizer_step")
        progress.batch_in_epoch += 1
        progress.global_step += 1
        return out
