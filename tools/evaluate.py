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
import sys
from pathlib import Path

from spml.cli import run_cli
from spml.config import ConfigError
from spml.factories.evaluation import EvaluationRequest, evaluate_run, evaluate_run_externally


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (holds config.yaml and checkpoints/)")
    parser.add_argument(
        "--tta", action="store_true", help="average over the test-time augmentation views (augment.tta)"
    )
    parser.add_argument("--checkpoint", default="latest", choices=["latest", "best"])
    parser.add_argument(
        "--split",
        choices=["all", "train", "val", "test"],
        help="split to score: test (default) or val of the run's data; with --data: all (default) "
        "or a split of the external set's data.split",
    )
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples for CIs (default: eval.bootstrap)")
    parser.add_argument(
        "--study-level",
        choices=["max", "mean", "image"],
        help="aggregate each study's views by max or mean before the metrics, or score images "
        "(default: eval.study_level)",
    )
    parser.add_argument("--classes", help="comma-separated class names to evaluate (default: eval.classes, or all)")
    parser.add_argument("--out", help="output folder (default: <run>/eval[-tta][-val]... or <run>/external-<name>...)")
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="YAML|data.key=value",
        help="score on an external labelled set: its data config (repeatable; files, then overrides)",
    )
    parser.add_argument("--name", help="external set name for the output folder (default: from --data)")
    parser.add_argument("--mapping", help="YAML file 'run class: external class' (null leaves a class out)")
    parser.add_argument(
        "--heatmaps",
        type=int,
        default=0,
        metavar="N",
        help="write N test images per class with their heatmaps into <out>/heatmaps/ (default 0)",
    )
    parser.add_argument(
        "--heatmap-method", help="gradcam | guided_gradcam | integrated_gradients (default: eval.heatmap_method)"
    )
    parser.add_argument(
        "--pointing-game",
        action="store_true",
        help="synthetic set: pointing-game hit rate per class against the random-point baseline "
        "(<out>/pointing_game.csv; eval.pointing_tolerance)",
    )
    parser.add_argument("overrides", nargs="*", help="dotted config overrides (e.g. data.root=/new/place)")
    return parser


def classes_flag(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def suffix(args: argparse.Namespace, split: str, default_split: str) -> str:
    """Output folder suffix: -tta, -<split> unless the default, -image / -study-<how>, -<N>classes."""
    text = ("-tta" if args.tta else "") + (f"-{split}" if split != default_split else "")
    if args.study_level:
        text += "-image" if args.study_level == "image" else f"-study-{args.study_level}"
    if args.classes:
        text += f"-{len(classes_flag(args.classes))}classes"
    return text


def evaluate(args: argparse.Namespace) -> int:
    """The flags -> one call into spml.factories.evaluation."""
    flags = []
    if args.study_level:
        flags.append(f"eval.study_level={'' if args.study_level == 'image' else args.study_level}")
    if args.classes:
        flags.append(f"eval.classes={json.dumps(classes_flag(args.classes))}")
    default_split = "all" if args.data else "test"
    split = args.split or default_split
    request = EvaluationRequest(
        Path(args.run),
        args.checkpoint,
        args.tta,
        split,
        None,
        (*args.overrides, *flags),
        args.bootstrap,
        args.heatmaps,
        args.heatmap_method,
        args.pointing_game,
    )
    if args.data:
        out = Path(args.out) if args.out else None
        outcome = evaluate_run_externally(
            request, args.data, out, args.name, args.mapping, suffix(args, split, default_split)
        )
        for line in outcome.mapping.summary_lines():
            print(line)
        s = outcome.result.summary
        print(
            f"external {outcome.name} ({split}, {s['level']}, {len(s['classes_used'])} classes): mAP {s['mAP']:.4f}"
            f"  mean AUROC {s['mean_auroc']:.4f}  ({s['n_images']} rows) -> {outcome.out}"
        )
        return 0
    if split in ("all", "train") or args.name or args.mapping:
        raise ConfigError("--split all|train, --name and --mapping go with --data (an external set)")
    evaluate_run(request, Path(args.out) if args.out else Path(args.run) / f"eval{suffix(args, split, 'test')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_intermixed_args(argv)
    return run_cli(lambda: evaluate(args), cli)


if __name__ == "__main__":
    sys.exit(main())
