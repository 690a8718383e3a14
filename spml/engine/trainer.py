"""The one accelerate training loop shared by both modes (it never branches on the mode)."""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from spml.config import Config, ConfigError, save_config
from spml.config.loader import to_dict
from spml.data.build import DataBundle, build_data
from spml.data.dataset import distinct_skips, read_skips, record_left_out
from spml.data.table import DataError
from spml.diagnostics import diagnose, diagnosis_line, fit_operating_points, settings_from, thresholds_path
from spml.engine import checkpoint as ckpt
from spml.engine.banner import run_banner
from spml.engine.evaluation import check_eval_config, evaluate_split, predict_split, score, write_report
from spml.engine.inference import split_explainer
from spml.engine.loader import EpochSampler, make_eval_loader, make_train_loader
from spml.engine.logger import RunLogger
from spml.engine.optim import build_optimizer, build_scheduler
from spml.models.heads import check_prototype_classes
from spml.objectives import DataStats, Objective, build_objective
from spml.report import write_run_report


def build_accelerator(precision: str = "no", accumulate: int = 1) -> Accelerator:
    """Accelerator for this machine. Without CUDA it asks for the CPU explicitly: only then does
    accelerate turn a torchrun launch (WORLD_SIZE > 1) into gloo DDP instead of N lone processes."""
    # non_blocking: batches from pinned memory (the loaders pin on CUDA) are copied while the step runs.
    # CUDA only: on the CPU it has nothing to overlap, and 2-process gloo runs then aborted at exit.
    cuda = torch.cuda.is_available()
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=accumulate, cpu=not cuda,
                       dataloader_config=DataLoaderConfiguration(non_blocking=cuda))


def check_train_config(config: Config) -> None:
    """Fail before anything is written on train.* / optim.accumulate values the loop cannot run with."""
    train = config.train
    for key, value, least in (("train.epochs", train.epochs, 1), ("train.max_steps", train.max_steps, 0),
                              ("train.log_every", train.log_every, 1), ("train.eval_every", train.eval_every, 1),
                              ("train.checkpoint_every", train.checkpoint_every, 0),
                              ("optim.accumulate", config.optim.accumulate, 1)):
        if value < least:
            raise ConfigError(f"{key}={value}: must be at least {least}")
    for key, value, choices in (("train.precision", train.precision, ("no", "bf16", "fp16")),
                                ("train.nonfinite", train.nonfinite, ("stop", "skip")),
                                ("train.best_metric", train.best_metric, ("val/mAP", "val/mean_auroc"))):
        if value not in choices:
            raise ConfigError(f"{key}={value!r}; choose from {list(choices)}")
    if config.model.in_chans != 1:
        raise ConfigError(f"model.in_chans={config.model.in_chans}: every image source yields grayscale (1, S, S) "
                          "images; keep model.in_chans=1 (pretrained RGB stems are adapted to one channel)")


RUN_OUTPUTS = ("checkpoints", "log.csv", "tensorboard", "skipped_images.csv", "masking_manifest.json",
               "thresholds.json", "training.png", "report.html")


def claim_run_dir(run_dir: str | Path, overwrite: bool = False, main_process: bool = True) -> None:
    """Make `run_dir` ready for a fresh (not resumed) run.

    A folder that already holds another run's outputs (checkpoints, logs, evaluations) is refused, so a
    repeated command never mixes two runs' logs or leaves an old `best` checkpoint behind; with
    `overwrite` the main process deletes those outputs first.
    """
    run_dir = Path(run_dir)
    found = [p for p in (*(run_dir / name for name in RUN_OUTPUTS), *run_dir.glob("eval*")) if p.exists()]
    if not found:
        return
    if not overwrite:
        raise ConfigError(f"train.out={run_dir} already holds a run ({found[0].name}); continue it with "
                          f"--resume {run_dir}, start over with --overwrite, or choose another train.out")
    if main_process:
        for path in found:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; the message names the step and loss components."""


@dataclass
class Progress:
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    global_step: int = 0  # batches trained in total
    updates: int = 0  # optimizer steps
    best_value: float = -math.inf
    best_epoch: int = -1


def data_stats(bundle: DataBundle, mode: str) -> DataStats:
    """Facts objectives are built from; in SPML mode counts come from observed positives only."""
    train, val = bundle.train, bundle.val
    if mode == "spml":
        pos_counts = torch.as_tensor(train.observed.sum(0), dtype=torch.float32)
    else:
        pos_counts = torch.as_tensor(((train.targets > 0.5) & train.known).sum(0), dtype=torch.float32)
    val_known = torch.as_tensor(val.known)
    val_pos = torch.as_tensor(val.targets > 0.5) & val_known
    class_prior = val_pos.sum(0).float() / val_known.sum(0).clamp(min=1).float()
    return DataStats(classes=tuple(bundle.classes), num_images=len(train), pos_counts=pos_counts,
                     class_prior=class_prior, expected_positives=float(bundle.expected_positives))


class NonFiniteGuard:
    """Tracks the first non-finite step on the device; checked only at log/checkpoint time."""

    def __init__(self, device: torch.device):
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.components: dict[str, torch.Tensor] = {}

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None, components: dict) -> torch.Tensor:
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
                "is written, the last good checkpoint is intact. Set train.nonfinite=skip to skip such steps.")


class Trainer:
    """Builds data, objective, optimizer and scheduler from a Config and runs the accelerate loop."""

    def __init__(self, config: Config, accelerator: Accelerator | None = None):
        check_train_config(config)
        self.diagnostics = settings_from(config.eval)  # eval.* values for the end of the run, checked now
        self.config = config
        self.accelerator = accelerator or build_accelerator(config.train.precision, config.optim.accumulate)
        for line in run_banner(self.accelerator, config.data.batch_size, config.optim.accumulate, os.environ):
            self.accelerator.print(line)
        self.run_dir = Path(config.train.out)
        self.checkpoints = self.run_dir / "checkpoints"
        set_seed(config.train.seed)
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.run_dir / "config.yaml")
        self.bundle = build_data(config)
        self.skip_log = self.run_dir / "skipped_images.csv"  # data.bad_images=skip: every skip, all processes
        if config.data.bad_images == "skip":
            for split in ("train", "val", "test"):
                getattr(self.bundle, split).log_skips_to(self.skip_log, split)
            if self.accelerator.is_main_process:  # images the header check left out before training
                record_left_out(self.skip_log, self.bundle.left_out.itertuples(index=False))
        check_eval_config(config.eval, list(self.bundle.classes), self.bundle.frames["test"])
        check_prototype_classes(config.model.prototypes, self.bundle.classes)
        if self.accelerator.is_main_process and self.bundle.manifest is not None:
            (self.run_dir / "masking_manifest.json").write_text(json.dumps(self.bundle.manifest, indent=2))
        self.stats = data_stats(self.bundle, config.mode)
        if self.accelerator.is_main_process:
            (self.run_dir / "data_stats.json").write_text(
                json.dumps({**self.stats.to_json(), "warnings": self.bundle.warnings}, indent=2))
        objective = build_objective(config, self.stats)
        optimizer = build_optimizer(objective, config.optim)
        train_loader = make_train_loader(self.bundle.train, EpochSampler(len(self.bundle.train), config.train.seed),
                                         config.data)
        val_loader = make_eval_loader(self.bundle.val, config.data)
        self.objective, self.optimizer, self.train_loader, self.val_loader = self.accelerator.prepare(
            objective, optimizer, train_loader, val_loader)
        self.steps_per_epoch = len(self.train_loader)
        self.scheduler = build_scheduler(self.optimizer, config.optim, config.train.epochs,
                                         math.ceil(self.steps_per_epoch / config.optim.accumulate))
        self.logger = RunLogger(self.run_dir, self.accelerator.is_main_process)
        self.progress = Progress()

    @property
    def model(self) -> Objective:
        return self.accelerator.unwrap_model(self.objective)

    # ----------------------------------------------------------------------------------- checkpoints
    def save(self, pointers: tuple[str, ...]) -> None:
        """Every rank saves its RNG state, rank 0 the rest; then the pointers move atomically."""
        step = self.progress.global_step
        ckpt.save_rng(self.checkpoints, step, self.accelerator.process_index)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            state = {"objective": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "progress": vars(self.progress).copy()}
            ckpt.commit(self.checkpoints, step, state, pointers, keep=set())
        self.accelerator.wait_for_everyone()

    def resume(self, path: str | Path) -> None:
        folder = ckpt.find_checkpoint(path)
        state, rng = ckpt.load_state(folder, self.accelerator.process_index)
        self.model.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = Progress(**state["progress"])
        if rng is not None:
            ckpt.set_rng_state(rng)
        self.accelerator.print(f"resumed from {folder} at epoch {self.progress.epoch}, "
                               f"batch {self.progress.batch_in_epoch}, step {self.progress.global_step}")

    # ----------------------------------------------------------------------------------- loop
    def fit(self) -> dict:
        cfg, acc = self.config.train, self.accelerator
        guard = NonFiniteGuard(acc.device)
        sums: dict[str, torch.Tensor] = {}
        images_seen, tick = 0, time.perf_counter()
        bar = tqdm(total=cfg.epochs * self.steps_per_epoch, initial=self.progress.global_step,
                   disable=not acc.is_main_process, dynamic_ncols=True)
        stop = False
        while self.progress.epoch < cfg.epochs and not stop:
            epoch = self.progress.epoch
            self.model.set_epoch(epoch, self.steps_per_epoch)
            self.objective.train()
            loader = self.train_loader
            if self.progress.batch_in_epoch:
                loader = acc.skip_first_batches(self.train_loader, self.progress.batch_in_epoch)
            loader.set_epoch(epoch)  # accelerate's loaders pass it to the EpochSampler (and count from it)
            for batch in loader:
                out = self.train_step(batch, guard)
                images_seen += batch["image"].shape[0]
                if out is not None:
                    self.accumulate_scalars(sums, out, batch)
                bar.update(1)
                if sums and self.progress.global_step % cfg.log_every == 0:
                    guard.check()
                    images_per_s = images_seen * acc.num_processes / (time.perf_counter() - tick)
                    self.log_scalars(sums, images_per_s, bar)
                    images_seen, tick = 0, time.perf_counter()
                if cfg.checkpoint_every and self.progress.global_step % cfg.checkpoint_every == 0:
                    guard.check()
                    self.save(("latest",))
                if cfg.max_steps and self.progress.global_step >= cfg.max_steps:
                    stop = True
                    break
            guard.check()
            epoch_done = self.progress.batch_in_epoch >= self.steps_per_epoch
            if epoch_done:
                self.progress.epoch += 1
                self.progress.batch_in_epoch = 0
            pointers = ("latest",)
            if epoch_done and (self.progress.epoch % cfg.eval_every == 0 or self.progress.epoch == cfg.epochs):
                if self.validate():
                    pointers = ("latest", "best")
            self.save(pointers)
        bar.close()
        return self.finish()

    def train_step(self, batch: dict[str, torch.Tensor], guard: NonFiniteGuard) -> dict | None:
        """One batch: forward, backward, (at accumulation boundaries) clip and optimizer step.

        No host synchronisation (tests/engine/test_host_sync.py) except under train.nonfinite=skip.
        tools/benchmark.py times this method, so it measures what training runs. A batch whose every
        image was bad (data.bad_images=skip; zero rows) is counted as trained and returns None."""
        acc, grad_norm = self.accelerator, None
        if not len(batch["index"]):  # a shape, not a device read
            if acc.num_processes > 1:  # the other processes would wait for this one's gradients forever
                raise DataError("every image of a training batch was bad (data.bad_images=skip); a multi-process "
                                f"run cannot skip a step on one process. See {self.skip_log}")
            self.progress.batch_in_epoch += 1
            self.progress.global_step += 1
            return None
        with acc.accumulate(self.objective):
            out = self.objective(batch)
            acc.backward(out["loss"])
            if acc.sync_gradients:
                grad_norm = acc.clip_grad_norm_(self.objective.parameters(),
                                                self.config.optim.grad_clip or float("inf"))
            bad = guard.observe(self.progress.global_step, out["loss"], grad_norm, out["components"])
            if self.config.train.nonfinite == "skip" and bool(bad):  # explicit option: one host sync per step
                self.optimizer.zero_grad(set_to_none=True)
                guard.first_bad_step.fill_(-1)
            else:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            self.progress.updates += 1
            self.scheduler.step_update(self.progress.updates)
            self.model.after_optimizer_step()
        self.progress.batch_in_epoch += 1
        self.progress.global_step += 1
        return out

    def accumulate_scalars(self, sums: dict[str, torch.Tensor], out: dict, batch: dict) -> None:
        """Running sums on the device (no host sync); pseudo-label quality is analysis only."""
        values = {"loss": out["loss"].detach().float(), **{k: v.float() for k, v in out["components"].items()}}
        if "pseudo_positive" in out:
            values.update(pseudo_label_counts(out["pseudo_positive"], batch["targets"], batch["observed"]))
        values["count"] = torch.ones((), device=out["loss"].device)
        for key, value in values.items():
            sums[key] = sums.get(key, 0) + value

    def log_scalars(self, sums: dict[str, torch.Tensor], images_per_s: float, bar) -> None:
        reduced = {k: float(v) for k, v in self.accelerator.reduce(
            {k: torch.as_tensor(v, device=self.accelerator.device) for k, v in sums.items()}, "sum").items()}
        count = reduced.pop("count")
        values = {f"train/{k}": v / count for k, v in reduced.items() if not k.startswith("pl_")}
        if "pl_predicted" in reduced:  # pseudo-positive precision/recall against the hidden truth
            values["pseudo/precision"] = reduced["pl_true_positive"] / max(reduced["pl_predicted"], 1.0)
            values["pseudo/recall"] = reduced["pl_true_positive"] / max(reduced["pl_hidden"], 1.0)
        values["train/lr"] = self.optimizer.param_groups[0]["lr"]
        values["train/images_per_s"] = images_per_s
        values["train/epoch"] = self.progress.global_step / self.steps_per_epoch
        self.logger.log(self.progress.global_step, values)
        bar.set_postfix(loss=f"{values['train/loss']:.4f}", img_s=f"{images_per_s:.0f}")
        sums.clear()

    def validate(self) -> bool:
        """Evaluate on the validation split; True when the best metric improved."""
        predictions = predict_split(self.objective, self.val_loader, self.accelerator, desc="validation")
        result = score(predictions, list(self.bundle.classes))
        values = {"val/mAP": result.summary["mAP"], "val/mean_auroc": result.summary["mean_auroc"]}
        self.logger.log(self.progress.global_step, values)
        self.accelerator.print(f"epoch {self.progress.epoch}: val mAP {values['val/mAP']:.4f} "
                               f"mean AUROC {values['val/mean_auroc']:.4f}")
        value = values.get(self.config.train.best_metric)
        if value is None:
            raise KeyError(f"train.best_metric {self.config.train.best_metric!r} unknown; choose from {sorted(values)}")
        if value > self.progress.best_value:
            self.progress.best_value, self.progress.best_epoch = value, self.progress.epoch
            return True
        return False

    def finish(self) -> dict:
        """Evaluate the final weights on the test split (eval.classes, eval.study_level) into eval/, and with
        eval.tta also into eval-tta/; fit the operating points on the val split and add calibration, heatmaps
        and the pointing game to eval/ (diagnose); log the test metrics and hyper-parameters; write the
        reports (eval.report: <run>/report.html), close the logs. Returns the eval/ summary."""
        test_loader = self.accelerator.prepare(make_eval_loader(self.bundle.test, self.config.data))
        val_predictions = predict_split(self.objective, self.val_loader, self.accelerator, desc="val (thresholds)")
        runs = [("eval", ())] + ([("eval-tta", self.config.augment.tta)] if self.config.eval.tta else [])
        summaries = {}
        for folder, tta in runs:
            predictions = predict_split(self.objective, test_loader, self.accelerator, tta,
                                        desc="test" + (" TTA" if tta else ""))
            if self.accelerator.is_main_process:
                result, scored, classes = evaluate_split(predictions, self.bundle.frames["test"],
                                                         list(self.bundle.classes), self.config.eval,
                                                         self.config.eval.bootstrap, self.config.train.seed)
                write_report(result, scored, classes, self.run_dir / folder)
                summaries[folder] = s = result.summary
                self.accelerator.print(f"test ({s['level']}, {result.coverage()}{', TTA' if tta else ''}): mAP "
                                       f"{s['mAP']:.4f} mean AUROC {s['mean_auroc']:.4f} -> {self.run_dir / folder}")
                if not tta:
                    s.update(self.diagnose(val_predictions, predictions, classes))
        if self.accelerator.is_main_process:
            final = {f"test/{key}": summaries["eval"].get(key) for key in ("mAP", "mean_auroc", "ece", "pointing_game")}
            final = {key: value for key, value in final.items() if value is not None}
            self.logger.log(self.progress.global_step, final)
            self.logger.log_hparams(to_dict(self.config), final)
        self.report_skips()
        self.logger.close()
        if self.accelerator.is_main_process and self.config.eval.report:
            self.accelerator.print(f"report: {write_run_report(self.run_dir)}")
        return summaries.get("eval", {})

    def diagnose(self, val_predictions: dict, test_predictions: dict, eval_classes: list[str]) -> dict:
        """Operating points of the final weights from the val split (<run>/thresholds.json), then calibration,
        operating-point metrics, the heatmap gallery and (synthetic set) the pointing game in eval/."""
        classes = list(self.bundle.classes)
        record = fit_operating_points(val_predictions, classes, self.diagnostics, thresholds_path(self.run_dir),
                                      ckpt.read_pointer(self.checkpoints, "latest").name)
        explainer = split_explainer(self.model, self.bundle.test, self.bundle.frames["test"], self.config.data,
                                    classes)
        summary = diagnose(self.run_dir / "eval", test_predictions, classes, eval_classes, record, self.diagnostics,
                           explainer, self.config.train.seed)
        self.accelerator.print(diagnosis_line(summary, record, thresholds_path(self.run_dir)))
        return summary

    def report_skips(self) -> None:
        """Print how many bad images data.bad_images=skip left out, per split (the list: skipped_images.csv)."""
        if not self.accelerator.is_main_process or not self.skip_log.exists():
            return
        rows = read_skips(self.skip_log)
        if rows:
            distinct = distinct_skips(self.skip_log)
            splits = ", ".join(f"{name} {sum(s == name for s, _ in distinct)}" for name in ("train", "val", "test"))
            self.accelerator.print(f"data.bad_images=skip: left out {len(distinct)} distinct bad images ({splits}; "
                                   f"{len(rows)} skips in all) -> {self.skip_log}")


def pseudo_label_counts(pseudo_positive: torch.Tensor, targets: torch.Tensor, observed: torch.Tensor) -> dict:
    """Device counts for pseudo-positive precision/recall against the hidden truth (analysis only)."""
    hidden_positive = (targets > 0.5) & ~observed
    return {"pl_true_positive": (pseudo_positive & hidden_positive).sum().float(),
            "pl_predicted": pseudo_positive.sum().float(),
            "pl_hidden": hidden_positive.sum().float()}
