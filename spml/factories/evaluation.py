"""Config -> evaluation: a run's own split (`evaluate_run`, tools/evaluate.py), an external labelled set
(`external_data_config`, `evaluate_run_externally`, tools/evaluate.py --data) and the heatmap inputs of a split
(`split_explainer`, also the end of training). Each calls the one evaluation path, spml.evaluation.evaluate."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from spml.config import Config, ConfigError, DataConfig, load_config, to_dict
from spml.config.loader import read_config_file, read_yaml
from spml.config.schema import EvalConfig
from spml.data.loader import make_eval_loader
from spml.data.splits import SPLITS
from spml.data.synthetic import lesion_masks
from spml.data.table import DataError, LabelTable
from spml.engine.trainer import build_accelerator
from spml.evaluation.diagnostics import Explainer, diagnosis_line, settings_from
from spml.evaluation.evaluate import Diagnosis, Evaluation, evaluate
from spml.evaluation.external import ExternalResult, evaluate_external
from spml.factories.artifact import load_model, run_config
from spml.factories.data import (
    build_data,
    image_intensity,
    image_settings,
    label_policy,
    read_checked,
    read_split,
    synthetic_spec,
)
from spml.factories.priors import class_priors
from spml.models.inference import InferenceModel
from spml.utils.lock import RunLock
from spml.utils.text import slug

SPLIT_CHOICES = ("all", *SPLITS)  # an external set is scored whole by default
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_eval_config(
    config: EvalConfig, classes: tuple[str, ...] | list[str], frame: pd.DataFrame | None = None
) -> None:
    """Fail before training on eval settings the data cannot serve.

    Fails on eval.classes that are not the data's, and with the evaluated split's `frame` on images without a study
    id under eval.study_level (a ConfigError).

    Args:
        config: the eval section.
        classes: the data's classes.
        frame: the evaluated split's rows (None: the study-id check is skipped).
    """
    unknown = [name for name in config.classes if name not in classes]
    if unknown:
        raise ConfigError(f"eval.classes: {unknown} not among the data's classes {list(classes)}")
    if config.study_level and frame is not None and (frame["study_id"].astype(str) == "").any():
        missing = int((frame["study_id"].astype(str) == "").sum())
        raise ConfigError(
            f"eval.study_level={config.study_level}: {missing} of {len(frame)} images have no study id "
            "(NIH and the synthetic set have none per view, a CSV only with data.csv.study_column); "
            "set eval.study_level='' for image-level metrics"
        )


def best_metric(config: Config) -> str:
    """The validation metric that chooses the best checkpoint.

    train.best_metric, where auto is val/mAP with a fully labelled val split and val/observed_auroc under
    data.mask_val (issue 24: a single-positive val split supports the ranking of its observed positives, not a mAP
    that counts hidden positives as negatives).

    Args:
        config: the run's config.

    Returns:
        The metric's name.
    """
    metric = config.train.best_metric
    if metric == "val/observed_auroc" and not config.data.mask_val:
        raise ConfigError(
            "train.best_metric=val/observed_auroc needs a single-positive val split (data.mask_val=true);"
            " with full val labels use val/mAP or val/mean_auroc (or auto)"
        )
    if metric == "auto":
        return "val/observed_auroc" if config.data.mask_val else "val/mAP"
    return metric


def split_explainer(
    model: InferenceModel, dataset: Dataset, frame: pd.DataFrame, data: DataConfig, classes: Sequence[str]
) -> Explainer:
    """Heatmap inputs for a split.

    `model` (TTA off), its backbone as Grad-CAM's layer, the split's images by row and, on the synthetic set, the
    findings' masks (spml.data.synthetic.lesion_masks).

    Args:
        model: the inference model.
        dataset: the split's dataset (items with an "image").
        frame: the split's rows (for the synthetic masks).
        data: the data section.
        classes: the class names.

    Returns:
        The Explainer.
    """

    def images(rows: np.ndarray) -> np.ndarray:
        return np.stack([dataset[int(i)]["image"].numpy() for i in rows])

    def masks(rows: np.ndarray) -> np.ndarray:
        return lesion_masks(synthetic_spec(data), frame.iloc[rows], list(classes), data.size)

    return Explainer(model, model.classifier.backbone, images, masks if data.dataset == "synthetic" else None)


@dataclass(frozen=True)
class EvaluationRequest:
    """What tools/evaluate.py asks for (its flags).

    Attributes:
        run: the run folder.
        checkpoint: latest | best.
        tta: predict with test-time augmentation.
        split: the split to score.
        out: the output folder.
        overrides: config overrides (eval.study_level, eval.classes, data.root, ...).
        bootstrap: bootstrap resamples (None: eval.bootstrap).
        heatmaps: heatmaps per class.
        heatmap_method: the heatmap method (None: eval.heatmap_method).
        pointing_game: score the pointing game.
    """

    run: Path
    checkpoint: str = "latest"
    tta: bool = False
    split: str = "test"
    out: Path | None = None
    overrides: tuple[str, ...] = ()
    bootstrap: int | None = None
    heatmaps: int = 0
    heatmap_method: str | None = None
    pointing_game: bool = False


def evaluate_run(request: EvaluationRequest, out: Path) -> Evaluation:
    """Score a run's weights on its own val or test split into `out` with the diagnosis (operating points fitted
    on the val split's predictions of the same weights and TTA). Holds the run folder's lock shared while it
    writes inside it (a training holds it exclusively).

    Args:
        request: the run, checkpoint, TTA, split and settings (EvaluationRequest).
        out: the evaluation folder.

    Returns:
        The Evaluation (result and diagnosis on the main process).
    """
    run = Path(request.run)
    inside = out.resolve().is_relative_to(run.resolve())
    with RunLock(run, shared=True) if inside and run.is_dir() else nullcontext():
        accelerator = build_accelerator()
        config = run_config(run, request.overrides)
        model = load_model(run, request.checkpoint)
        bundle = build_data(config)
        if tuple(bundle.classes) != model.classes:
            raise ValueError(f"the run was trained on classes {model.classes}, the data now has {bundle.classes}")
        frame = bundle.frames[request.split]
        check_eval_config(config.eval, bundle.classes, frame)
        dataset = bundle.test if request.split == "test" else bundle.val
        if request.pointing_game and config.data.dataset != "synthetic":
            raise ValueError(
                f"--pointing-game needs finding masks, which only the synthetic set has "
                f"(data.dataset={config.data.dataset})"
            )
        settings = settings_from(
            config.eval,
            heatmaps=request.heatmaps,
            pointing_game=request.pointing_game,
            heatmap_method=request.heatmap_method or config.eval.heatmap_method,
            bootstrap=config.eval.bootstrap if request.bootstrap is None else request.bootstrap,
        )
        model = model.to(accelerator.device)  # inference only: no DDP wrapper, the loader shards the split
        data = config.data
        loader, val_loader = accelerator.prepare(
            make_eval_loader(dataset, data.eval_batch_size, data.num_workers, data.worker_start),
            make_eval_loader(bundle.val, data.eval_batch_size, data.num_workers, data.worker_start),
        )
        diagnosis = Diagnosis(
            settings,
            out / "thresholds.json",
            model.metadata["source"]["checkpoint_dir"],
            None if request.split == "val" else val_loader,
            split_explainer(model, dataset, frame, data, bundle.classes),
            priors=class_priors(config, bundle),  # prior-based under data.mask_val
            recorded={"best_metric": best_metric(config)},  # what chose the run's `best` checkpoint
        )
        evaluation = evaluate(
            model,
            loader,
            frame,
            bundle.classes,
            out,
            accelerator,
            tta=request.tta,
            eval_classes=config.eval.classes,
            level=config.eval.study_level,
            bootstrap=settings.bootstrap,
            seed=config.train.seed,
            diagnosis=diagnosis,
            desc=request.split,
        )
        if evaluation.result is not None:
            summary = evaluation.result.summary
            print(
                f"{request.split} ({summary['level']}, {evaluation.result.coverage()}): mAP {summary['mAP']:.4f}  "
                f"mean AUROC {summary['mean_auroc']:.4f}  ({summary['n_images']} rows) -> {out}"
            )
            print(
                diagnosis_line(evaluation.diagnosis, evaluation.record, out / "thresholds.json")
                + (" (fitted on the evaluated split itself: optimistic)" if request.split == "val" else "")
            )
        accelerator.end_training()
    return evaluation


# ------------------------------------------------------------------------------------ external sets
def read_mapping_file(path: str | Path) -> dict[str, str | None]:
    """A YAML mapping `run class: external class` (null: leave the run class out) -> dict.

    One-to-many (a list) and anything but names are a DataError naming the file and the entry.

    Args:
        path: the YAML file.

    Returns:
        {run class: external class or None}.
    """
    try:
        data = read_yaml(path)
    except ConfigError as err:
        raise DataError(f"class mapping {err}") from None
    mapping: dict[str, str | None] = {}
    for key, value in data.items():
        if isinstance(value, list):
            raise DataError(
                f"{path}: {key!r} maps to {value}: one run class can be scored against one external "
                "class only (combining several has no single right rule); map it to one, or to null"
            )
        if value is not None and not isinstance(value, str):
            raise DataError(f"{path}: {key!r}: expected an external class name or null, got {value!r}")
        mapping[str(key)] = value
    return mapping


def external_data_config(items: Sequence[str]) -> DataConfig:
    """The external set's data config from `items`.

    YAML files with a `data:` section (configs/datasets/*.yaml) and `data.key=value` overrides, which win over the
    files; schema defaults below them (not the run's).

    Args:
        items: the files and overrides (tools/evaluate.py --data).

    Returns:
        The DataConfig.
    """
    files = [item for item in items if "=" not in item]
    overrides = [item for item in items if "=" in item]
    for item in overrides:
        if not item.startswith("data."):
            raise ConfigError(
                f"--data {item!r}: overrides of the external data config start with 'data.' "
                "(e.g. data.labels=/data/site2/labels.csv)"
            )
    for path in files:
        other = sorted(set(read_config_file(path)) - {"data"})
        if other:
            raise ConfigError(
                f"--data {path}: an external data config holds only a data: section; found {other} "
                "(evaluation settings come from the run and the evaluate flags)"
            )
    data = load_config(files, overrides).data
    if data.dataset == "synthetic" and (data.labels or data.root):
        raise ConfigError(
            "--data: data.labels / data.root are set but data.dataset is synthetic (the default); "
            "name the reader: data.dataset=csv|nih|chexpert|mimic"
        )
    if data.masked_labels or data.mask_val:
        raise ConfigError(
            "--data: an external set is scored on its full labels; clear data.masked_labels and data.mask_val"
        )
    return data


def external_name(data: DataConfig) -> str:
    """Default output name: the reader and the folder of the label file (or of data.root), or the synthetic seed.

    Args:
        data: the external set's data section.

    Returns:
        The name (a slug).
    """
    if data.dataset == "synthetic":
        return f"synthetic_seed{data.synthetic.seed}"
    place = Path(data.labels).resolve().parent.name if data.labels else Path(data.root).resolve().name
    return slug(f"{data.dataset}_{place}")


def check_name(name: str) -> str:
    """Check that `name` can name a folder (letters, digits, '.', '_' and '-'); a ConfigError otherwise.

    Args:
        name: the --name value.

    Returns:
        `name`.
    """
    if not NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    return name


def read_external(data: DataConfig, split: str = "all") -> LabelTable:
    """The rows to score: the whole set after the image check (data.missing), or one split of data.split.

    Args:
        data: the external set's data section.
        split: "all" or a split name.

    Returns:
        The LabelTable of those rows.
    """
    if split not in SPLIT_CHOICES:
        raise ConfigError(f"split {split!r}; choose from {list(SPLIT_CHOICES)}")
    if split == "all":
        return read_checked(data)
    table, names = read_split(data)
    if not (names == split).any():
        raise DataError(f"the external set's {split} split is empty (data.split={data.split}, {len(names)} images)")
    return table.subset(names == split)


def evaluate_run_externally(
    request: EvaluationRequest,
    items: Sequence[str],
    out: Path | None = None,
    name: str | None = None,
    mapping: str | None = None,
    suffix: str = "",
) -> ExternalResult:
    """Score a run's weights on the external set of `items` (external_data_config), whole (request.split "all")
    or one of its splits, in this one process. Images are decoded as the run decodes them (its data.size and
    data.intensity*), with its eval batch size and workers.

    Args:
        request: the run, checkpoint, TTA, split ("all" or one of the set's splits) and settings.
        items: YAML files with a data: section and data.* overrides (tools/evaluate.py --data).
        out: the folder (default <run>/external-<name><suffix>). name: the set's name (default external_name).
        mapping: a class mapping YAML file (read_mapping_file). suffix: of the default folder.

    Returns:
        The ExternalResult.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "--data scores in one process; run tools/evaluate.py with python, not a multi-process launcher"
        )
    external = external_data_config(items)
    name = check_name(name or external_name(external))
    config = run_config(Path(request.run), request.overrides)
    accelerator = build_accelerator()
    model = load_model(request.run, request.checkpoint).to(accelerator.device)
    out = Path(out) if out else Path(request.run) / f"external-{name}{suffix}"
    table = read_external(external, request.split)
    run_data = config.data
    images = replace(image_settings(external), size=run_data.size, intensity=image_intensity(run_data))
    info: dict[str, Any] = {
        "run": str(Path(request.run).resolve()),
        "checkpoint": request.checkpoint,
        "tta": list(model.tta_views) if request.tta else [],
        "split": request.split,
    }
    return evaluate_external(
        model,
        table,
        out,
        accelerator,
        name=name,
        images=images,
        labels=label_policy(external),
        mapping=read_mapping_file(mapping) if mapping else None,
        mapping_source=str(mapping or ""),
        tta=request.tta,
        eval_classes=tuple(config.eval.classes),
        level=config.eval.study_level,
        seed=config.train.seed,
        bootstrap=config.eval.bootstrap if request.bootstrap is None else request.bootstrap,
        batch_size=run_data.eval_batch_size,
        num_workers=run_data.num_workers,
        worker_start=run_data.worker_start,
        info=info,
        described=to_dict(external),
    )
