"""Trainer callbacks: everything around the loop (logging, validation and the best metric, checkpoints, the
evaluation EMA, the objective's own report, early stopping, the final test evaluation, the bad-image report).

The Trainer calls each hook of each callback in list order; a callback reads what it needs from the trainer
(`progress`, `model`, `accelerator`, `logger`) and may ask it to stop (`trainer.request_stop`). A callback with
state returns it from `state_dict()`; checkpoints store it under the callback's `state_key`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from spml.data.dataset import distinct_skips, read_skips
from spml.engine import checkpoint as ckpt
from spml.evaluation.diagnostics import diagnosis_line
from spml.evaluation.evaluate import Diagnosis, evaluate
from spml.evaluation.scoring import predict_split, score

if TYPE_CHECKING:
    from spml.engine.trainer import Trainer


class Callback:
    """Hooks of the training loop; each does nothing unless overridden."""

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step (also after a resume).

        Args:
            trainer: the trainer running the loop.
        """

    def on_epoch_start(self, trainer: Trainer) -> None:
        """At the start of each (possibly resumed) epoch.

        Args:
            trainer: the trainer running the loop.
        """

    def on_step_end(self, trainer: Trainer, batch: dict, out: dict | None) -> None:
        """After each training batch; `out` is the objective's output (None: every image of the batch was bad).
        Runs in the hot loop: no host synchronisation except at the callback's own log/checkpoint steps.

        Args:
            trainer: the trainer running the loop.
            batch: the training batch.
            out: the objective's output, or None when every image of the batch was bad.
        """

    def on_before_optimizer_step(self, trainer: Trainer) -> None:
        """Gradients are synchronised (an update step), before clipping and the optimizer step.

        Args:
            trainer: the trainer running the loop.
        """

    def on_optimizer_step(self, trainer: Trainer) -> None:
        """After each optimizer update.

        Args:
            trainer: the trainer running the loop.
        """

    def on_epoch_end(self, trainer: Trainer, completed: bool) -> None:
        """After an epoch's batches (`completed` False: the loop stopped inside the epoch; progress.epoch
        already counts a completed epoch).

        Args:
            trainer: the trainer running the loop.
            completed: False when the loop stopped inside the epoch.
        """

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the loop, before the logs close.

        Args:
            trainer: the trainer running the loop.
        """

    def on_checkpoint(self, trainer: Trainer) -> None:
        """On every process before a checkpoint is written (a point all processes reach): fold what each process
        holds into what `state_dict` returns on the main process, the only one whose state is saved.

        Args:
            trainer: the trainer running the loop.
        """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned (resume).

        Args:
            state: the dict state_dict returned.
        """


def reduce_sums(trainer: Trainer, sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Sum device scalars over processes and read them (the log step's one host synchronisation).

    Args:
        trainer: the trainer running the loop.
        sums: name -> device scalar of this process.

    Returns:
        name -> the sum over processes, as a float.
    """
    device = trainer.accelerator.device
    reduced = trainer.accelerator.reduce({k: torch.as_tensor(v, device=device) for k, v in sums.items()}, "sum")
    return {key: float(value) for key, value in reduced.items()}


class LogSums(Callback):
    """Device scalars summed over the steps since the last log line (`sums`), checkpointed, so a resumed run logs
    the same means as an uninterrupted one: at a checkpoint the processes' sums are added up on the main process
    (the others keep zeros of the same names, which leaves the total of the next log line's sum over processes as
    it was, and every process reduces the same names)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.restored: dict[str, torch.Tensor] = {}

    def add(self, values: dict[str, torch.Tensor]) -> None:
        """Add device scalars to `sums` (no host read).

        Args:
            values: name -> device scalar.
        """
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0) + value

    def on_fit_start(self, trainer: Trainer) -> None:
        """Move the restored sums to the device (zeros of the same names on the other processes).

        Args:
            trainer: the trainer running the loop.
        """
        accelerator = trainer.accelerator
        self.sums = {
            key: value.to(accelerator.device)
            if accelerator.is_main_process
            else torch.zeros_like(value, device=accelerator.device)
            for key, value in self.restored.items()
        }

    def on_checkpoint(self, trainer: Trainer) -> None:
        """Add up the processes' sums on the main process (zeros elsewhere).

        Args:
            trainer: the trainer running the loop.
        """
        if trainer.accelerator.num_processes > 1 and self.sums:
            total = trainer.accelerator.reduce(dict(self.sums), "sum")
            main = trainer.accelerator.is_main_process
            self.sums = {key: value if main else torch.zeros_like(value) for key, value in total.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {key: value.detach().cpu() for key, value in self.sums.items()}} if self.sums else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep the checkpointed sums for `on_fit_start`.

        Args:
            state: the dict state_dict returned.
        """
        self.restored = dict(state["sums"])


class TrainLog(LogSums):
    """Every `every` steps: the mean loss and loss components since the last log line, the learning rate,
    images/s and the epoch, into the run logger; a progress bar on the main process.

    Args:
        every: the log interval in steps.
    """

    def __init__(self, every: int):
        super().__init__()
        self.every = every
        self.images, self.tick, self.bar = 0, 0.0, None

    def on_fit_start(self, trainer: Trainer) -> None:
        """Start the clock and the progress bar (main process).

        Args:
            trainer: the trainer running the loop.
        """
        super().on_fit_start(trainer)
        self.images, self.tick = 0, time.perf_counter()
        self.bar = tqdm(
            total=trainer.epochs * trainer.steps_per_epoch,
            initial=trainer.progress.global_step,
            disable=not trainer.accelerator.is_main_process,
            dynamic_ncols=True,
        )

    def on_step_end(self, trainer: Trainer, batch: dict, out: dict | None) -> None:
        """Add the step's loss and components; every `every` steps check they are finite and write a log line.

        Args:
            trainer: the trainer running the loop.
            batch: the training batch.
            out: the objective's output, or None when every image of the batch was bad.
        """
        self.images += batch["image"].shape[0]
        if out is not None:
            values = {"loss": out["loss"].detach().float(), **{k: v.float() for k, v in out["components"].items()}}
            values["count"] = torch.ones((), device=out["loss"].device)
            self.add(values)
        self.bar.update(1)
        if self.sums and trainer.progress.global_step % self.every == 0:
            trainer.check_finite()
            self.log(trainer)

    def log(self, trainer: Trainer) -> None:
        """Write the means since the last log line, the learning rate, images/s and the epoch.

        Args:
            trainer: the trainer running the loop.
        """
        images_per_s = self.images * trainer.accelerator.num_processes / (time.perf_counter() - self.tick)
        reduced = reduce_sums(trainer, self.sums)
        count = reduced.pop("count")
        values = {f"train/{key}": value / count for key, value in reduced.items()}
        values["train/lr"] = trainer.optimizer.param_groups[0]["lr"]
        values["train/images_per_s"] = images_per_s
        values["train/epoch"] = trainer.progress.global_step / trainer.steps_per_epoch
        trainer.log(values)
        self.bar.set_postfix(loss=f"{values['train/loss']:.4f}", img_s=f"{images_per_s:.0f}")
        self.sums.clear()
        self.images, self.tick = 0, time.perf_counter()

    def on_fit_end(self, trainer: Trainer) -> None:
        """Close the progress bar.

        Args:
            trainer: the trainer running the loop.
        """
        self.bar.close()


class ObjectiveReport(LogSums):
    """What an objective reports about its own training (MPC: pseudo-label precision/recall against the hidden
    truth, analysis only): `report(batch, out) -> {name: device scalar}` summed over `every` steps and
    processes, logged as `summarize(sums) -> {name: value}`.

    Args:
        report: (batch, out) -> {name: device scalar} of one step.
        summarize: {name: summed value} -> {name: logged value}.
        every: the log interval in steps.
    """

    def __init__(
        self,
        report: Callable[[dict, dict], dict[str, torch.Tensor]],
        summarize: Callable[[dict[str, float]], dict[str, float]],
        every: int,
    ):
        super().__init__()
        self.report, self.summarize, self.every = report, summarize, every

    def on_step_end(self, trainer: Trainer, batch: dict, out: dict | None) -> None:
        """Add the step's report; log the summary every `every` steps.

        Args:
            trainer: the trainer running the loop.
            batch: the training batch.
            out: the objective's output, or None when every image of the batch was bad.
        """
        if out is not None:
            self.add(self.report(batch, out))
        if self.sums and trainer.progress.global_step % self.every == 0:
            trainer.log(self.summarize(reduce_sums(trainer, self.sums)))
            self.sums.clear()


class EMA(Callback):
    """Keeps `average` (an exponential moving average of `model`'s weights, e.g. spml.models.ModelEma, with
    `update(model)` and `module`) current after each optimizer step; evaluation scores `average.module`.
    Checkpointed.

    Args:
        average: the moving average (with `update(model)` and `module`).
        model: the model it follows.
    """

    def __init__(self, average: nn.Module, model: nn.Module):
        self.average, self.model = average, model

    def on_optimizer_step(self, trainer: Trainer) -> None:
        """Update the average from the model.

        Args:
            trainer: the trainer running the loop.
        """
        self.average.update(self.model)

    def state_dict(self) -> dict[str, Any]:
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the average's weights.

        Args:
            state: the dict state_dict returned.
        """
        self.average.load_state_dict(state)


class FreezeBackbone(Callback):
    """A frozen-backbone warm-up: during the first `epochs` epochs the parameters of `module` lose their gradients
    before each optimizer step, so the optimizer leaves them (and their moments) unchanged while the rest trains.

    The gradients still flow through `module` (its BatchNorm statistics still update), so a multi-process run needs
    nothing special. It depends on the epoch only: a resumed run freezes exactly when the uninterrupted one would.

    Args:
        module: the frozen module (e.g. the backbone).
        epochs: the epochs it stays frozen.
    """

    def __init__(self, module: nn.Module, epochs: int):
        self.params, self.epochs = list(module.parameters()), epochs

    def frozen(self, trainer: Trainer) -> bool:
        """Whether the current epoch is within the frozen warm-up.

        Args:
            trainer: the trainer running the loop.

        Returns:
            True while progress.epoch < epochs.
        """
        return trainer.progress.epoch < self.epochs

    def on_before_optimizer_step(self, trainer: Trainer) -> None:
        """Drop the module's gradients while frozen.

        Args:
            trainer: the trainer running the loop.
        """
        if self.frozen(trainer):
            for param in self.params:
                param.grad = None


class Validation(Callback):
    """At the end of every `every`-th completed epoch (and the last): score `model` on the validation loader,
    log val/mAP and val/mean_auroc, and track the best value of `metric` (`improved` tells the checkpoint
    callback to move the best pointer). Checkpointed (best value and epoch).

    `single_positive`: the loader's targets are the observed positives of a single-positive split (data.mask_val),
    every other entry counted negative; val/observed_auroc is then logged too: the macro AUROC of the observed
    positives against the unobserved entries. When the observed positives are a random sample of each class's
    positives, this AUROC is an increasing (affine) function of the true AUROC (e.g. Jain et al. 2017), so it
    orders checkpoints as the full labels would; val/mAP on such a split mixes in the hidden positives' share.

    Args:
        model: the model scored.
        loader: the validation loader.
        classes: the class names.
        every: validate every `every`-th completed epoch (and the last).
        metric: the logged name whose best value is tracked.
        single_positive: the loader's targets are single-positive (see above).
    """

    def __init__(
        self,
        model: nn.Module,
        loader: DataLoader,
        classes: Sequence[str],
        every: int = 1,
        metric: str = "val/mAP",
        single_positive: bool = False,
    ):
        self.model, self.loader, self.classes = model, loader, list(classes)
        self.every, self.metric, self.single_positive = every, metric, single_positive
        self.best_value, self.best_epoch = -float("inf"), -1
        self.improved = self.validated = False

    def on_epoch_end(self, trainer: Trainer, completed: bool) -> None:
        """Validate when due, log the values and track the best.

        Args:
            trainer: the trainer running the loop.
            completed: False when the loop stopped inside the epoch.
        """
        epoch = trainer.progress.epoch
        self.improved = self.validated = False
        if not completed or (epoch % self.every != 0 and epoch != trainer.epochs):
            return
        values = self.evaluate(trainer)
        trainer.log(values)
        trainer.accelerator.print(
            f"epoch {epoch}: val mAP {values['val/mAP']:.4f} mean AUROC {values['val/mean_auroc']:.4f}"
        )
        self.validated = True
        if values[self.metric] > self.best_value:
            self.best_value, self.best_epoch, self.improved = values[self.metric], epoch, True

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        """{"val/mAP", "val/mean_auroc"} (and "val/observed_auroc" with single_positive) of the model on the
        validation loader.

        Args:
            trainer: the trainer running the loop.

        Returns:
            name -> value.
        """
        result = score(predict_split(self.model, self.loader, trainer.accelerator), self.classes)
        values = {"val/mAP": result.summary["mAP"], "val/mean_auroc": result.summary["mean_auroc"]}
        if self.single_positive:  # the targets are the observed positives: the same AUROC, named for what it is
            values["val/observed_auroc"] = result.summary["mean_auroc"]
        return values

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the best value and epoch.

        Args:
            state: the dict state_dict returned.
        """
        self.best_value, self.best_epoch = float(state["best_value"]), int(state["best_epoch"])


class EarlyStopping(Callback):
    """Stop the run when `patience` validations in a row did not improve the validation's best metric
    (placed after the Validation callback it watches). Checkpointed.

    Args:
        validation: the Validation callback watched.
        patience: validations without improvement before the stop.
    """

    def __init__(self, validation: Validation, patience: int):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.validation, self.patience, self.waited = validation, patience, 0

    def on_epoch_end(self, trainer: Trainer, completed: bool) -> None:
        """Count a validation without improvement; request the stop at `patience`.

        Args:
            trainer: the trainer running the loop.
            completed: False when the loop stopped inside the epoch.
        """
        if not self.validation.validated:
            return
        self.waited = 0 if self.validation.improved else self.waited + 1
        if self.waited >= self.patience:
            trainer.request_stop(
                f"early stopping: {self.validation.metric} not better than "
                f"{self.validation.best_value:.4f} (epoch {self.validation.best_epoch}) "
                f"for {self.waited} validations"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the count of validations waited.

        Args:
            state: the dict state_dict returned.
        """
        self.waited = int(state["waited"])


class Checkpoint(Callback):
    """Atomic checkpoints into `root` (spml.engine.checkpoint): `latest` every `every` steps (0: none within
    an epoch) and at the end of each epoch (also one the loop stopped inside), where `best` follows when
    `validation` just improved. A step whose epoch-end save follows (the epoch's last step, a requested stop) is
    saved there only, after the epoch's validation has been logged: everything logged at a step precedes the
    checkpoint of that step, which a resume's log rewind relies on.

    Args:
        root: the checkpoints folder.
        every: steps between `latest` saves within an epoch (0: none).
        validation: the Validation callback whose improvement moves `best`, or None.
    """

    def __init__(self, root: Path, every: int = 0, validation: Validation | None = None):
        self.root, self.every, self.validation = Path(root), every, validation

    def on_step_end(self, trainer: Trainer, batch: dict, out: dict | None) -> None:
        """Save `latest` every `every` steps, unless the epoch-end save follows.

        Args:
            trainer: the trainer running the loop.
            batch: the training batch.
            out: the objective's output, or None when every image of the batch was bad.
        """
        progress = trainer.progress
        if (
            self.every
            and progress.global_step % self.every == 0
            and not trainer.stop_reason
            and progress.batch_in_epoch < trainer.steps_per_epoch
        ):
            trainer.check_finite()
            self.save(trainer, ("latest",))

    def on_epoch_end(self, trainer: Trainer, completed: bool) -> None:
        """Save `latest` (and `best` when the validation just improved).

        Args:
            trainer: the trainer running the loop.
            completed: False when the loop stopped inside the epoch.
        """
        improved = self.validation is not None and self.validation.improved
        self.save(trainer, ("latest", "best") if improved else ("latest",))

    def save(self, trainer: Trainer, pointers: tuple[str, ...]) -> None:
        """Every rank saves its RNG state, rank 0 the rest; then the pointers move atomically.

        Args:
            trainer: the trainer running the loop.
            pointers: the pointers moved to this save ("latest", "best").
        """
        step, accelerator = trainer.progress.global_step, trainer.accelerator
        trainer.emit("on_checkpoint")
        ckpt.save_rng(self.root, step, accelerator.process_index)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            ckpt.commit(self.root, step, trainer.state_dict(), pointers, keep=set())
        accelerator.wait_for_everyone()


class FinalEvaluation(Callback):
    """After training: score `model` on the test loader into `<out_dir>/eval/` (and with `tta` also averaged
    over the model's TTA views into `<out_dir>/eval-tta/`) through the one evaluation path
    (spml.evaluation.evaluate.evaluate); the eval/ summary becomes the trainer's summary. Skipped when the
    run was interrupted (it will be resumed, and evaluated at its end).

    With `diagnosis` (spml.evaluation.evaluate.Diagnosis, built by spml.factories): eval/ also gets operating
    points fitted on the val split (recorded with the `latest` checkpoint of `checkpoints`), calibration, heatmaps
    and the pointing game, on the main process.

    Args:
        model: the model scored.
        loader: the test loader.
        frame: the test split's label table.
        classes: the class names.
        out_dir: the run folder.
        tta: also evaluate with test-time augmentation into eval-tta/.
        eval_classes: the classes scored (empty: all).
        level: "" per image, "max"/"mean" per study.
        bootstrap: bootstrap resamples of the confidence intervals (0: none).
        seed: the bootstrap seed.
        diagnosis: the diagnosis settings, or None.
        checkpoints: the checkpoints folder whose `latest` records the operating points, or None.
    """

    def __init__(
        self,
        model: nn.Module,
        loader: DataLoader,
        frame: pd.DataFrame,
        classes: Sequence[str],
        out_dir: Path,
        tta: bool = False,
        eval_classes: Sequence[str] = (),
        level: str = "",
        bootstrap: int = 0,
        seed: int = 0,
        diagnosis: Diagnosis | None = None,
        checkpoints: Path | None = None,
    ):
        self.model, self.loader, self.frame, self.classes = model, loader, frame, list(classes)
        self.out_dir, self.tta = Path(out_dir), tta
        self.eval_classes, self.level, self.bootstrap, self.seed = tuple(eval_classes), level, bootstrap, seed
        self.diagnosis, self.checkpoints = diagnosis, checkpoints

    def on_fit_end(self, trainer: Trainer) -> None:
        """Evaluate on the test split unless interrupted; the eval/ summary becomes trainer.summary.

        Args:
            trainer: the trainer running the loop.
        """
        if trainer.interrupted:
            return
        accelerator = trainer.accelerator
        diagnosis = self.diagnosis
        if diagnosis is not None and self.checkpoints is not None:
            diagnosis = replace(diagnosis, checkpoint=ckpt.read_pointer(self.checkpoints, "latest").name)
        loader = accelerator.prepare(self.loader)
        for folder, tta in [("eval", False)] + ([("eval-tta", True)] if self.tta else []):
            evaluation = evaluate(
                self.model,
                loader,
                self.frame,
                self.classes,
                self.out_dir / folder,
                accelerator,
                tta=tta,
                eval_classes=self.eval_classes,
                level=self.level,
                bootstrap=self.bootstrap,
                seed=self.seed,
                diagnosis=None if tta else diagnosis,
                desc="test",
            )
            result = evaluation.result
            if result is None:
                continue
            summary = result.summary
            accelerator.print(
                f"test ({summary['level']}, {result.coverage()}{', TTA' if tta else ''}): mAP "
                f"{summary['mAP']:.4f} mean AUROC {summary['mean_auroc']:.4f} -> {self.out_dir / folder}"
            )
            if evaluation.record:
                accelerator.print(diagnosis_line(evaluation.diagnosis, evaluation.record, diagnosis.thresholds))
            if folder == "eval":
                trainer.summary.update(summary)


class RunReport(Callback):
    """After the final evaluation: the test metrics (`test/...`) and the run's hyper-parameters (`hparams`, the
    resolved config as a nested dict) into the run's logs (TensorBoard's HPARAMS tab), then, when `write`
    is given, the one-file HTML report (`write(run_dir) -> path`, spml.reporting.run_report.write_run_report),
    whose path is the run's last line.

    Args:
        hparams: the resolved config as a nested dict.
        write: writes the HTML report and returns its path, or None.
    """

    METRICS = ("mAP", "mean_auroc", "ece", "pointing_game")

    def __init__(self, hparams: dict[str, Any], write: Callable[[], Path] | None = None):
        self.hparams, self.write = hparams, write

    def on_fit_end(self, trainer: Trainer) -> None:
        """Log the test metrics with the hyper-parameters and write the report (main process, when there is a summary).

        Args:
            trainer: the trainer running the loop.
        """
        if not trainer.accelerator.is_main_process or not trainer.summary:
            return
        final = {f"test/{key}": trainer.summary[key] for key in self.METRICS if trainer.summary.get(key) is not None}
        trainer.log(final)
        if trainer.logger is not None:
            trainer.logger.log_hparams(self.hparams, final)
        if self.write is not None:
            trainer.accelerator.print(f"report: {self.write()}")


class BadImageReport(Callback):
    """After training: how many bad images data.bad_images=skip left out, per split (the list: `skip_log`).

    Args:
        skip_log: the file listing the skipped images.
    """

    def __init__(self, skip_log: Path):
        self.skip_log = Path(skip_log)

    def on_fit_end(self, trainer: Trainer) -> None:
        """Print how many distinct bad images were left out per split (main process).

        Args:
            trainer: the trainer running the loop.
        """
        if not trainer.accelerator.is_main_process or not self.skip_log.exists():
            return
        rows = read_skips(self.skip_log)
        if rows:
            distinct = distinct_skips(self.skip_log)
            splits = ", ".join(f"{name} {sum(s == name for s, _ in distinct)}" for name in ("train", "val", "test"))
            trainer.accelerator.print(
                f"data.bad_images=skip: left out {len(distinct)} distinct bad images ({splits}; "
                f"{len(rows)} skips in all) -> {self.skip_log}"
            )
