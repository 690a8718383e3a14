"""Config -> a ready Trainer: the run folder, the data, the objective, optimizer, loaders and callbacks."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed

from spml.config import Config, ConfigError, DataConfig, save_config, to_dict
from spml.data.dataset import record_left_out
from spml.data.loader import EpochSampler, make_eval_loader, make_train_loader
from spml.data.table import DataError
from spml.engine.banner import run_banner
from spml.engine.callbacks import (
    EMA,
    BadImageReport,
    Callback,
    Checkpoint,
    EarlyStopping,
    FinalEvaluation,
    FreezeBackbone,
    ObjectiveReport,
    RunReport,
    TrainLog,
    Validation,
)
from spml.engine.logger import RunLogger
from spml.engine.trainer import Trainer, build_accelerator
from spml.evaluation.diagnostics import settings_from, thresholds_path
from spml.evaluation.evaluate import Diagnosis
from spml.factories.artifact import model_spec
from spml.factories.components import build_objective, build_optimizer, build_scheduler, check_choices, config_key
from spml.factories.data import build_data
from spml.factories.evaluation import best_metric, check_eval_config, split_explainer
from spml.factories.priors import class_priors
from spml.factories.stats import data_stats
from spml.factories.weights import prepare_weights, without_pretrained
from spml.models import build_ema
from spml.models.artifact import inference_model
from spml.models.heads import check_prototype_classes
from spml.reporting.run_report import write_run_report
from spml.utils.io import write_json_atomic, write_text_atomic
from spml.utils.text import describe_weights

RUN_OUTPUTS = (
    "checkpoints",
    "log.csv",
    "tensorboard",
    "skipped_images.csv",
    "masking_manifest.json",
    "thresholds.json",
    "training.png",
    "report.html",
    "resumes.jsonl",
)
RESUMES = "resumes.jsonl"  # one line per resume of a run: when, from which step, what it changed
SKIP_LOG = "skipped_images.csv"  # data.bad_images=skip: every skip of every process, all splits


def check_train_config(config: Config) -> None:
    """Fail before anything is written on values the loop cannot run with (the choices are the loader's).

    Args:
        config: the run's config.
    """
    train = config.train
    for key, value, least in (
        ("train.epochs", train.epochs, 1),
        ("train.max_steps", train.max_steps, 0),
        ("train.log_every", train.log_every, 1),
        ("train.eval_every", train.eval_every, 1),
        ("train.checkpoint_every", train.checkpoint_every, 0),
        ("train.patience", train.patience, 0),
        ("optim.accumulate", config.optim.accumulate, 1),
        ("optim.freeze_backbone_epochs", config.optim.freeze_backbone_epochs, 0),
        ("optim.backbone_lr_scale", config.optim.backbone_lr_scale, 0),
    ):
        if value < least:
            raise ConfigError(f"{key}={value}: must be at least {least}")
    if config.model.in_chans != 1:
        raise ConfigError(
            f"model.in_chans={config.model.in_chans}: every image source yields grayscale (1, S, S) "
            "images; keep model.in_chans=1 (pretrained RGB stems are adapted to one channel)"
        )
    if config.eval.tta and not config.augment.tta:
        raise ConfigError("eval.tta=true needs at least one view in augment.tta")
    best_metric(config)


def claim_run_dir(run_dir: str | Path, overwrite: bool = False, main_process: bool = True) -> None:
    """Make `run_dir` ready for a fresh (not resumed) run.

    A folder that already holds another run's outputs (checkpoints, logs, evaluations) is refused, so a
    repeated command never mixes two runs' logs or leaves an old `best` checkpoint behind; with
    `overwrite` the main process deletes those outputs first.

    Args:
        run_dir: the run folder (train.out).
        overwrite: delete an earlier run's outputs instead of refusing.
        main_process: this process deletes (the others only check).
    """
    run_dir = Path(run_dir)
    found = [p for p in (*(run_dir / name for name in RUN_OUTPUTS), *run_dir.glob("eval*")) if p.exists()]
    if not found:
        return
    if not overwrite:
        raise ConfigError(
            f"train.out={run_dir} already holds a run ({found[0].name}); continue it with "
            f"--resume {run_dir}, start over with --overwrite, or choose another train.out"
        )
    if main_process:
        for path in found:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def check_run_config(config: Config) -> None:
    """Every check of a run's config that needs no data, before anything is written: the training settings, the
    registry-backed names (check_choices) and the eval.* values of the final evaluation.

    Args:
        config: the run's config.
    """
    check_train_config(config)
    check_choices(config)
    settings_from(config.eval)


def build_trainer(
    config: Config, accelerator: Accelerator | None = None, *, callbacks: Sequence[Callback] = (), resume: bool = False
) -> Trainer:
    """Everything a run of `config` needs, in this order (the seeded RNG draws follow it): check the config,
    locate (or fetch) the pretrained weights and take their normalisation (spml.factories.weights), seed, write
    <train.out>/config.yaml (with the weights' record), build the data (writing masking_manifest.json and data_stats.json),
    the objective, the optimizer and the loaders, prepare them with accelerate, then the scheduler, the
    logger and the callbacks (`callbacks` first, then train log, the objective's report, EMA, validation, early
    stopping, checkpoints, final test evaluation with the diagnosis, bad-image report, run report).

    `resume`: train.out holds the run to continue (call `Trainer.resume` next); its record (config.yaml,
    masking_manifest.json, data_stats.json, the images left out before training) is kept as first written, and
    the pretrained weights are not read again (the checkpoint holds every weight).

    Args:
        config: the run's config.
        accelerator: the run's Accelerator (None: one built from train.precision and optim.accumulate).
        callbacks: callbacks run before the built-in ones.
        resume: train.out holds the run to continue.

    Returns:
        The Trainer, ready to fit (or to resume).
    """
    check_run_config(config)
    diagnostics = settings_from(config.eval)  # eval.* values for the end of the run
    train, data = config.train, config.data
    accelerator = accelerator or build_accelerator(train.precision, config.optim.accumulate)
    main = accelerator.is_main_process
    for line in run_banner(accelerator, data.batch_size, config.optim.accumulate, os.environ):
        accelerator.print(line)
    if not resume:  # the weights are found (or fetched, main process first) before any data is read
        config = prepare_weights(config, accelerator)
    accelerator.print(describe_weights(config.model.pretrained_record, config.model.pretrained))
    accelerator.print(
        f"input normalisation: mean {config.augment.mean:.6g}, std {config.augment.std:.6g} "
        f"({config.model.pretrained_record.get('normalize', {}).get('source', 'augment.mean/std')})"
    )
    record = main and not resume
    run_dir = Path(train.out)
    set_seed(train.seed)
    if record:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    bundle = build_data(config)
    if data.bad_images == "skip":
        for split in ("train", "val", "test"):
            getattr(bundle, split).log_skips_to(run_dir / SKIP_LOG, split)
        if record:  # images the header check left out before training
            record_left_out(run_dir / SKIP_LOG, bundle.left_out.itertuples(index=False))
    check_eval_config(config.eval, bundle.classes, bundle.frames["test"])
    with config_key("model.prototypes"):
        check_prototype_classes(config.model.prototypes, bundle.classes)
    if record and bundle.manifest is not None:
        write_json_atomic(run_dir / "masking_manifest.json", bundle.manifest)
    stats = data_stats(bundle, config.mode)
    fingerprint = bundle.fingerprint()
    if resume:
        check_same_data(run_dir, fingerprint, data)
    if record:
        write_json_atomic(
            run_dir / "data_stats.json", {**stats.to_json(), "warnings": bundle.warnings, "fingerprint": fingerprint}
        )
    objective = build_objective(without_pretrained(config) if resume else config, stats)  # resume: the checkpoint's
    optimizer = build_optimizer(objective, config.optim)
    with config_key("data.batch_size, data.num_workers"):
        train_loader = make_train_loader(
            bundle.train,
            EpochSampler(len(bundle.train), train.seed),
            data.batch_size,
            data.num_workers,
            data.worker_start,
        )
    with config_key("data.eval_batch_size, data.num_workers"):
        val_loader = make_eval_loader(bundle.val, data.eval_batch_size, data.num_workers, data.worker_start)
        test_loader = make_eval_loader(bundle.test, data.eval_batch_size, data.num_workers, data.worker_start)
    objective, optimizer, train_loader, val_loader = accelerator.prepare(objective, optimizer, train_loader, val_loader)
    steps_per_epoch = len(train_loader)
    updates_per_epoch = math.ceil(steps_per_epoch / config.optim.accumulate)
    scheduler = build_scheduler(optimizer, config.optim, train.epochs, updates_per_epoch)
    model = accelerator.unwrap_model(objective)

    callbacks = [*callbacks, TrainLog(train.log_every)]
    if config.optim.freeze_backbone_epochs:
        callbacks.append(FreezeBackbone(model.classifier.backbone, config.optim.freeze_backbone_epochs))
    if hasattr(model, "report"):
        callbacks.append(ObjectiveReport(model.report, model.summarize, train.log_every))
    evaluated = model.classifier
    if config.model.ema_decay > 0:
        with config_key("model.ema_decay"):
            ema = EMA(build_ema(model.classifier, config.model.ema_decay), model.classifier)
        callbacks.append(ema)
        evaluated = ema.average.module
    scored = inference_model(evaluated, model_spec(config, bundle.classes))  # what evaluation and export score
    validation = Validation(
        scored, val_loader, bundle.classes, train.eval_every, best_metric(config), single_positive=data.mask_val
    )
    callbacks.append(validation)
    if train.patience:
        callbacks.append(EarlyStopping(validation, train.patience))
    callbacks += [
        Checkpoint(run_dir / "checkpoints", train.checkpoint_every, validation),
        FinalEvaluation(
            scored,
            test_loader,
            bundle.frames["test"],
            bundle.classes,
            run_dir,
            config.eval.tta,
            config.eval.classes,
            config.eval.study_level,
            config.eval.bootstrap,
            train.seed,
            diagnosis=Diagnosis(
                diagnostics,
                thresholds_path(run_dir),
                val_loader=val_loader,
                explainer=split_explainer(scored, bundle.test, bundle.frames["test"], data, bundle.classes),
                priors=class_priors(config, bundle),  # prior-based under mask_val
                recorded={"best_metric": best_metric(config)},
            ),
            checkpoints=run_dir / "checkpoints",
        ),
        BadImageReport(run_dir / SKIP_LOG),
        RunReport(to_dict(config), (lambda: write_run_report(run_dir)) if config.eval.report else None),
    ]
    return Trainer(
        objective,
        optimizer,
        scheduler,
        train_loader,
        accelerator,
        epochs=train.epochs,
        max_steps=train.max_steps,
        grad_clip=config.optim.grad_clip,
        nonfinite=train.nonfinite,
        callbacks=callbacks,
        logger=RunLogger(run_dir, main),
    )


def check_same_data(run_dir: Path, fingerprint: dict[str, dict[str, str]], data: DataConfig) -> None:
    """A resume must train and score on the data its run started with.

    Compares `fingerprint` with the one <run>/data_stats.json recorded; a difference raises a DataError naming the
    split, whether its images or its labels changed, and the files they come from. Runs recorded before
    fingerprints existed (or without data_stats.json) are not checked.

    Args:
        run_dir: the run folder.
        fingerprint: DataBundle.fingerprint of the data now.
        data: the data section (its files are named in the error).
    """
    path = run_dir / "data_stats.json"
    recorded = json.loads(path.read_text(encoding="utf-8")).get("fingerprint") if path.exists() else None
    if recorded is None:
        return
    changed = [
        f"the {split} split's {part}"
        for split, parts in fingerprint.items()
        for part, value in parts.items()
        if recorded.get(split, {}).get(part) != value
    ]
    if changed:
        files = ", ".join(
            f"{key}={value}"
            for key, value in (
                ("data.labels", data.labels or "(default)"),
                ("data.masked_labels", data.masked_labels),
                ("data.root", data.root),
            )
            if value
        )
        raise DataError(
            f"{run_dir}: the data differs from when this run started ({', '.join(changed)} changed; "
            f"{files}); a resume continues on the same images and labels: restore them, or start a "
            f"new run"
        )


def record_resume(run_dir: str | Path, step: int, changes: dict[str, tuple[Any, Any]], processes: int) -> None:
    """Append a line to <run>/resumes.jsonl (config.yaml stays as first written).

    The line says when the run was resumed, from which checkpoint step, in how many processes and which keys the
    resume changed ({key: [recorded, now]}, spml.config.resume_config; train.out when the folder moved).

    Args:
        run_dir: the run folder.
        step: the checkpoint's global step.
        changes: {key: (recorded, now)}.
        processes: the number of processes.
    """
    path = Path(run_dir) / RESUMES
    line = json.dumps(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "step": step,
            "processes": processes,
            "changes": {key: list(values) for key, values in changes.items()},
        }
    )
    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    write_text_atomic(path, previous + line + "\n")
