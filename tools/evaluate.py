r"""Evaluate a run: `python tools/evaluate.py runs/<name> [--tta] [--checkpoint best] [--split test]`.

Writes metrics.json, per_class.csv, roc.png and pr.png into runs/<name>/eval[-tta][-val][-study-max|-image][-Nclasses]/.
Runs under `accelerate launch` too (each sample is scored exactly once across processes).

Operating points and calibration (docs/explainability.md): per-class thresholds and temperatures are fitted
on the val split's predictions of the evaluated weights (eval.threshold_rule, eval.target_sensitivity,
eval.temperature; override them as eval.threshold_rule=f1 ...) into <out>/thresholds.json (predict.py
--thresholds reads it); <out> gets operating_points.csv (sensitivity, specificity, PPV, F1 with bootstrap
intervals), calibration.csv, reliability.csv and reliability.png. --heatmaps N adds N test images per class
with their heatmaps (<out>/heatmaps/); --pointing-game (synthetic set) scores every known-positive test entry.

Study level and class subsets default to the run's eval.study_level / eval.classes; the flags override them:
  python tools/evaluate.py runs/chexpert --study-level max --classes \
      "Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion"     # the CheXpert competition labels

External validation: --data scores the run on another labelled set (any reader; YAML files with a data:
section and/or data.* overrides), whole by default, into runs/<name>/external-<set name>[-tta]...:
  python tools/evaluate.py runs/nih --data configs/datasets/chexpert.yaml --data data.root=/data/chexpert --tta
  python tools/evaluate.py runs/nih --data data.dataset=csv --data data.labels=/data/site2/labels.csv --name site2
Run classes are paired with the set's classes by name, spelling and a built-in synonym table (or --mapping
FILE.yaml); classes without a counterpart are listed and left out. Images are decoded at the run's data.size.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from spml.cli import run_cli
from spml.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (holds config.yaml and checkpoints/)")
    parser.add_argument("--tta", action="store_true", help="average over the test-time augmentation views (augment.tta)")
    parser.add_argument("--checkpoint", default="latest", choices=["latest", "best"])
    parser.add_argument("--split", choices=["all", "train", "val", "test"],
                        help="split to score: test (default) or val of the run's data; with --data: all (default) "
                             "or a split of the external set's data.split")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples for CIs (default: eval.bootstrap)")
    parser.add_argument("--study-level", choices=["max", "mean", "image"],
                        help="aggregate each study's views by max or mean before the metrics, or score images "
                             "(default: eval.study_level)")
    parser.add_argument("--classes", help="comma-separated class names to evaluate (default: eval.classes, or all)")
    parser.add_argument("--out", help="output folder (default: <run>/eval[-tta][-val]... or <run>/external-<name>...)")
    parser.add_argument("--data", action="append", default=[], metavar="YAML|data.key=value",
                        help="score on an external labelled set: its data config (repeatable; files, then overrides)")
    parser.add_argument("--name", help="external set name for the output folder (default: from --data)")
    parser.add_argument("--mapping", help="YAML file 'run class: external class' (null leaves a class out)")
    parser.add_argument("--heatmaps", type=int, default=0, metavar="N",
                        help="write N test images per class with their heatmaps into <out>/heatmaps/ (default 0)")
    parser.add_argument("--heatmap-method", help="gradcam | guided_gradcam | integrated_gradients "
                        "(default: eval.heatmap_method)")
    parser.add_argument("--pointing-game", action="store_true",
                        help="synthetic set: pointing-game hit rate per class against the random-point baseline "
                             "(<out>/pointing_game.csv; eval.pointing_tolerance)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides (e.g. data.root=/new/place)")
    args = parser.parse_intermixed_args(argv)

    def evaluate() -> int:
        from spml.data.build import build_data
        from spml.diagnostics import diagnose, diagnosis_line, fit_operating_points, settings_from
        from spml.engine.evaluation import evaluate_model, predict_split
        from spml.engine.loader import make_eval_loader
        from spml.engine.trainer import build_accelerator
        from spml.factories import check_eval_config, load_model
        from spml.factories.artifact import run_config
        from spml.factories.training import split_explainer
        from spml.lock import RunLock

        flags = []
        if args.study_level:
            flags.append(f"eval.study_level={'' if args.study_level == 'image' else args.study_level}")
        if args.classes:
            flags.append(f"eval.classes={json.dumps([c.strip() for c in args.classes.split(',') if c.strip()])}")
        if args.data:
            return score_external(args, flags)
        if args.split in ("all", "train") or args.name or args.mapping:
            raise ConfigError("--split all|train, --name and --mapping go with --data (an external set)")
        args.split = args.split or "test"
        out = Path(args.out) if args.out else Path(args.run) / f"eval{suffix(args, 'test')}"
        # eval*/ inside the run folder is where its training writes its own evaluation (and --overwrite deletes):
        # not while a training holds the folder; evaluations may share it
        inside = out.resolve().is_relative_to(Path(args.run).resolve())
        with RunLock(args.run, shared=True) if inside and Path(args.run).is_dir() else nullcontext():
            accelerator = build_accelerator()
            config = run_config(Path(args.run), (*args.overrides, *flags))
            model = load_model(args.run, args.checkpoint, tta=args.tta)
            bundle = build_data(config)
            if tuple(bundle.classes) != model.classes:
                raise ValueError(f"the run was trained on classes {model.classes}, the data now has {bundle.classes}")
            frame = bundle.frames[args.split]
            check_eval_config(config.eval, bundle.classes, frame)
            dataset = bundle.test if args.split == "test" else bundle.val
            if args.pointing_game and config.data.dataset != "synthetic":
                raise ValueError(f"--pointing-game needs finding masks, which only the synthetic set has "
                                 f"(data.dataset={config.data.dataset})")
            settings = settings_from(config.eval, heatmaps=args.heatmaps, pointing_game=args.pointing_game,
                                     heatmap_method=args.heatmap_method or config.eval.heatmap_method,
                                     bootstrap=config.eval.bootstrap if args.bootstrap is None else args.bootstrap)
            model = model.to(accelerator.device)  # inference only: no DDP wrapper, the loader shards the split
            data = config.data
            loader, val_loader = accelerator.prepare(
                make_eval_loader(dataset, data.eval_batch_size, data.num_workers, data.worker_start),
                make_eval_loader(bundle.val, data.eval_batch_size, data.num_workers, data.worker_start))
            result, predictions = evaluate_model(model, loader, accelerator, frame, bundle.classes, out,
                                                 config.eval.classes, config.eval.study_level, settings.bootstrap,
                                                 config.train.seed, desc=args.split + (" TTA" if args.tta else ""))
            val_predictions = (predictions if args.split == "val" else
                               predict_split(model, val_loader, accelerator, "val (thresholds)"))
            if result is not None:
                summary = result.summary
                print(f"{args.split} ({summary['level']}, {result.coverage()}): mAP {summary['mAP']:.4f}  "
                      f"mean AUROC {summary['mean_auroc']:.4f}  ({summary['n_images']} rows) -> {out}")
                # operating points of exactly these weights (and TTA views), on the image-level predictions
                tta = list(model.tta_views) if args.tta else []
                record = fit_operating_points(val_predictions, list(bundle.classes), settings,
                                              out / "thresholds.json", model.metadata["source"]["checkpoint_dir"],
                                              tta=tta)
                model.tta = False  # heatmaps explain the plain model
                explainer = split_explainer(model, dataset, frame, config.data, bundle.classes)
                diagnosis = diagnose(out, predictions, list(bundle.classes),
                                     list(config.eval.classes or bundle.classes), record, settings, explainer,
                                     config.train.seed)
                print(diagnosis_line(diagnosis, record, out / "thresholds.json")
                      + (" (fitted on the evaluated split itself: optimistic)" if args.split == "val" else ""))
            accelerator.end_training()
        return 0

    return run_cli(evaluate, parser)


def suffix(args: argparse.Namespace, default_split: str) -> str:
    """Output folder suffix: -tta, -<split> unless the default, -image / -study-<how>, -<N>classes."""
    text = ("-tta" if args.tta else "") + (f"-{args.split}" if args.split != default_split else "")
    if args.study_level:
        text += "-image" if args.study_level == "image" else f"-study-{args.study_level}"
    if args.classes:
        text += f"-{len([c for c in args.classes.split(',') if c.strip()])}classes"
    return text


def score_external(args: argparse.Namespace, flags: list[str]) -> int:
    """--data: score the run on an external labelled set (spml.external), in this one process."""
    import torch

    from spml.external import check_name, evaluate_external, external_data_config, external_name
    from spml.factories import load_model
    from spml.factories.artifact import run_config

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--data scores in one process; run tools/evaluate.py with python, not a multi-process "
                          "launcher")
    external = external_data_config(args.data)
    name = check_name(args.name or external_name(external))
    args.split = args.split or "all"
    config = run_config(Path(args.run), (*args.overrides, *flags))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.run, args.checkpoint, tta=args.tta).to(device)
    out = Path(args.out) if args.out else Path(args.run) / f"external-{name}{suffix(args, 'all')}"
    tta = list(model.tta_views) if args.tta else []
    info = {"run": str(Path(args.run).resolve()), "checkpoint": args.checkpoint, "tta": tta}
    outcome = evaluate_external(lambda images: model(images.to(device)), model.classes,
                                config.data, external, name=name, split=args.split, mapping=args.mapping,
                                eval_config=config.eval, seed=config.train.seed, out=out, info=info,
                                bootstrap=config.eval.bootstrap if args.bootstrap is None else args.bootstrap)
    for line in outcome.mapping.summary_lines():
        print(line)
    s = outcome.result.summary
    print(f"external {name} ({args.split}, {s['level']}, {len(s['classes_used'])} classes): mAP {s['mAP']:.4f}  "
          f"mean AUROC {s['mean_auroc']:.4f}  ({s['n_images']} rows) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
