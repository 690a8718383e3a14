"""External validation: score a trained model on another labelled set that any reader reads (csv, nih, chexpert,
mimic, synthetic), whole or one of its splits, with the run's classes paired to the set's classes
(spml.data.class_mapping); the classes without a counterpart are left out and reported, never scored as negatives.

Plain objects in: a model callable (uint8 images (B, 1, S, S) -> logits (B, C)) with its C class names, the run's
data config and the external set's data config. The external config says how to read the set (reader, files,
uncertainty policy, data.split, data.missing, data.bad_images); images are decoded and loaded as the run decodes
them (RUN_KEYS: data.size, every data.intensity* key, the eval batch size and the workers, and how they start).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from spml.config import ConfigError, DataConfig, EvalConfig, load_config, to_dict
from spml.config.loader import read_config_file
from spml.data.build import SplitLabels, full_labels, make_dataset, read_checked, read_split
from spml.data.class_mapping import ClassMapping, map_classes, read_mapping_file
from spml.data.splits import SPLITS
from spml.data.table import DataError, LabelTable
from spml.engine.evaluation import evaluate_split, write_report
from spml.engine.loader import make_eval_loader, one_pass
from spml.experiments import slug
from spml.metrics import EvalResult

# + every data.intensity* key: taken from the run's config
RUN_KEYS = ("size", "eval_batch_size", "num_workers", "worker_start")
SPLIT_CHOICES = ("all", *SPLITS)  # an external set is scored whole by default
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class ExternalResult:
    name: str
    result: EvalResult  # metrics of the scored classes (per_class adds external_class and match)
    mapping: ClassMapping
    images: int  # images scored (before study-level aggregation)
    out: Path | None


# ------------------------------------------------------------------------------------ the external set
def external_data_config(items: Sequence[str]) -> DataConfig:
    """The external set's data config from `items`: YAML files with a `data:` section (configs/datasets/*.yaml)
    and `data.key=value` overrides, which win over the files; schema defaults below them (not the run's)."""
    files = [item for item in items if "=" not in item]
    overrides = [item for item in items if "=" in item]
    for item in overrides:
        if not item.startswith("data."):
            raise ConfigError(f"--data {item!r}: overrides of the external data config start with 'data.' "
                              "(e.g. data.labels=/data/site2/labels.csv)")
    for path in files:
        other = sorted(set(read_config_file(path)) - {"data"})
        if other:
            raise ConfigError(f"--data {path}: an external data config holds only a data: section; found {other} "
                              "(evaluation settings come from the run and the evaluate flags)")
    data = load_config(files, overrides).data
    if data.dataset == "synthetic" and (data.labels or data.root):
        raise ConfigError("--data: data.labels / data.root are set but data.dataset is synthetic (the default); "
                          "name the reader: data.dataset=csv|nih|chexpert|mimic")
    if data.masked_labels or data.mask_val:
        raise ConfigError("--data: an external set is scored on its full labels; clear data.masked_labels and "
                          "data.mask_val")
    return data


def external_name(data: DataConfig) -> str:
    """Default output name: the reader and the folder of the label file (or of data.root), or the synthetic seed."""
    if data.dataset == "synthetic":
        return f"synthetic_seed{data.synthetic.seed}"
    place = Path(data.labels).resolve().parent.name if data.labels else Path(data.root).resolve().name
    return slug(f"{data.dataset}_{place}")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    return name


def read_external(data: DataConfig, split: str = "all") -> LabelTable:
    """The rows to score: the whole set after the image check (data.missing), or one split of data.split."""
    if split not in SPLIT_CHOICES:
        raise ConfigError(f"split {split!r}; choose from {list(SPLIT_CHOICES)}")
    if split == "all":
        return read_checked(data)
    table, names = read_split(data)
    if not (names == split).any():
        raise DataError(f"the external set's {split} split is empty (data.split={data.split}, {len(names)} images)")
    return table.subset(names == split)


def decoding_config(external: DataConfig, run: DataConfig) -> DataConfig:
    """The external config with the run's decoding and loading keys (RUN_KEYS and data.intensity*)."""
    keys = [f.name for f in fields(DataConfig) if f.name in RUN_KEYS or f.name.startswith("intensity")]
    return replace(external, **{key: getattr(run, key) for key in keys})


# ------------------------------------------------------------------------------------ scoring
@torch.no_grad()
def predict(model: Callable[[Tensor], Tensor], loader: DataLoader, num_classes: int) -> dict[str, np.ndarray]:
    """probs (N, num_classes) float32 and the loader's targets, known (N, P) and index (N,), in loader order;
    images left out under data.bad_images=skip have no row."""
    parts: dict[str, list[Tensor]] = {"probs": [], "targets": [], "known": [], "index": []}
    with one_pass(loader, keep_workers=False) as batches:
        for batch in batches:
            if not len(batch["index"]):  # every image of the batch was bad (skipped)
                continue
            logits = model(batch["image"])
            if logits.shape != (len(batch["index"]), num_classes):
                raise ValueError(f"the model gave logits of shape {tuple(logits.shape)} for {len(batch['index'])} "
                                 f"images and {num_classes} classes")
            parts["probs"].append(torch.sigmoid(logits.float()).cpu())
            for key in ("targets", "known", "index"):
                parts[key].append(batch[key])
    if not parts["index"]:
        raise DataError("no image of the external set could be decoded")
    return {key: torch.cat(values).numpy() for key, values in parts.items()}


def evaluate_external(model: Callable[[Tensor], Tensor], classes: Sequence[str], run_data: DataConfig,
                      external: DataConfig, *, name: str, split: str = "all",
                      mapping: str | Path | Mapping[str, str | None] | None = None,
                      eval_config: EvalConfig = EvalConfig(), bootstrap: int = 0, seed: int = 0,
                      out: Path | None = None, info: Mapping[str, Any] | None = None) -> ExternalResult:
    """Score `model` on the external set `external` and (with `out`) write the report.

    Args:
        model: uint8 images (B, 1, S, S) -> logits (B, len(classes)), in eval mode, with the TTA wanted; it
            moves the images to its device.
        classes: the run's class names, in output order.
        run_data: the run's data config (decoding and loading: RUN_KEYS and data.intensity*).
        external: the external set's data config (external_data_config).
        split: "all" (the whole set) or a split of the external config's data.split.
        mapping: a class mapping YAML file or dict (run class -> external class or None); None: names and
            synonyms only (spml.data.class_mapping).
        eval_config: study_level and classes (run class names, among those paired) as in a run's evaluation.
        out: folder for metrics.json, per_class.csv (+ external_class, match), roc.png, pr.png,
            class_mapping.csv, report.md and external.json; `info` (run, checkpoint, TTA, ...) goes into the last two.
    """
    check_name(name)
    table = read_external(external, split)
    source = str(mapping) if isinstance(mapping, (str, Path)) else "the class mapping"
    user = read_mapping_file(mapping) if isinstance(mapping, (str, Path)) else mapping
    pairing = map_classes(list(classes), table.classes, user, source)
    run_names = [pair.run for pair in pairing.pairs]
    unpaired = [name for name in eval_config.classes if name not in run_names]
    if unpaired:
        reasons = {name: pairing.run_left_out.get(name, "not a run class") for name in unpaired}
        raise DataError(f"eval.classes / --classes: {unpaired} are not scored on the external set ({reasons}); "
                        f"the paired run classes are {run_names}")
    targets, known, _ = full_labels(table, external)
    columns = [table.classes.index(pair.external) for pair in pairing.pairs]
    labels = SplitLabels(np.arange(len(table.frame)), targets[:, columns], known[:, columns])
    decoding = decoding_config(external, run_data)
    dataset = make_dataset(decoding, table, labels)
    if out is not None and decoding.bad_images == "skip":
        dataset.log_skips_to(Path(out) / "skipped_images.csv", "external")
    predictions = predict(model, make_eval_loader(dataset, decoding.eval_batch_size, decoding.num_workers,
                                                   decoding.worker_start), len(classes))
    predictions["probs"] = predictions["probs"][:, [list(classes).index(name) for name in run_names]]
    result, scored, scored_classes = evaluate_split(predictions, table.frame, run_names, eval_config.classes,
                                                    eval_config.study_level, bootstrap, seed)
    pair_of = {pair.run: pair for pair in pairing.pairs}
    result.per_class.insert(1, "external_class", [pair_of[c].external for c in result.per_class["class"]])
    result.per_class.insert(2, "match", [pair_of[c].match for c in result.per_class["class"]])
    outcome = ExternalResult(name, result, pairing, len(predictions["index"]), Path(out) if out is not None else None)
    if out is not None:
        write_report(result, scored, scored_classes, Path(out))
        write_external_report(outcome, external, decoding, split, dict(info or {}))
    return outcome


# ------------------------------------------------------------------------------------ report
def write_external_report(outcome: ExternalResult, external: DataConfig, decoding: DataConfig, split: str,
                          info: dict[str, Any]) -> None:
    """class_mapping.csv, external.json and report.md into outcome.out (beside write_report's files)."""
    out, summary = outcome.out, outcome.result.summary
    outcome.mapping.table().to_csv(out / "class_mapping.csv", index=False)
    decoded = {key: getattr(decoding, key) for key in (f.name for f in fields(DataConfig))
               if key in RUN_KEYS or key.startswith("intensity")}
    record = {"name": outcome.name, **info, "split": split, "images": outcome.images, "level": summary["level"],
              "decoded_as_run": decoded, "data": to_dict(external),
              "pairs": [vars(pair) for pair in outcome.mapping.pairs],
              "run_left_out": outcome.mapping.run_left_out, "external_left_out": outcome.mapping.external_left_out,
              "not_scorable": summary["skipped"]}
    (out / "external.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(report_markdown(outcome, external, split, info), encoding="utf-8")


def number(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def report_markdown(outcome: ExternalResult, external: DataConfig, split: str, info: dict[str, Any]) -> str:
    """A human-readable report: what was scored against what, the metrics, and what was left out and why."""
    summary, per_class = outcome.result.summary, outcome.result.per_class
    where = external.labels or external.root or f"seed {external.synthetic.seed}"
    lines = [f"# External validation: {outcome.name}", ""]
    lines += [f"* {key}: {value}" for key, value in info.items()]
    lines += [f"* external set: data.dataset={external.dataset} ({where}), split {split}, {outcome.images} images "
              f"scored at {summary['level']} level ({summary['n_images']} rows)",
              f"* mAP {number(summary['mAP'])}, mean AUROC {number(summary['mean_auroc'])} over "
              f"{len(summary['classes_used'])} classes", "",
              "| run class | external class | match | n_pos | n_neg | AUROC | AP |", "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {row['class']} | {row['external_class']} | {row['match']} | {row['n_pos']} | {row['n_neg']} | "
              f"{number(row['auroc'])} | {number(row['ap'])} |" for row in per_class.to_dict("records")]
    lines += ["", "Left out (not scored, not counted as negatives):", ""]
    lines += [f"* run class {name}: {why}" for name, why in outcome.mapping.run_left_out.items()]
    lines += [f"* external class {name}: {why}" for name, why in outcome.mapping.external_left_out.items()]
    lines += [f"* paired class {name}: {why}" for name, why in summary["skipped"].items()]
    if lines[-1] == "":
        lines.append("* nothing")
    return "\n".join(lines) + "\n"
