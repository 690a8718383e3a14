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
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spml.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (holds config.yaml and checkpoints/)")
    parser.add_argument("--tta", action="store_true", help="average over the test-time augmentation views (augment.tta)")
    parser.add_argument("--checkpoint", default="latest", choices=["latest", "best"])
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples for CIs (default: eval.bootstrap)")
    parser.add_argument("--study-level", choices=["max", "mean", "image"],
                        help="aggregate each study's views by max or mean before the metrics, or score images "
                             "(default: eval.study_level)")
    parser.add_argument("--classes", help="comma-separated class names to evaluate (default: eval.classes, or all)")
    parser.add_argument("--out", help="output folder (default: <run>/eval[-tta][-val]...)")
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
        from spml.engine import checkpoint as ckpt
        from spml.engine.evaluation import check_eval_config, evaluate_split, predict_split, write_report
        from spml.engine.inference import load_run, split_explainer
        from spml.engine.loader import make_eval_loader
        from spml.engine.trainer import build_accelerator

        accelerator = build_accelerator()
        flags = []
        if args.study_level:
            flags.append(f"eval.study_level={'' if args.study_level == 'image' else args.study_level}")
        if args.classes:
            flags.append(f"eval.classes={json.dumps([c.strip() for c in args.classes.split(',') if c.strip()])}")
        config, stats, objective = load_run(args.run, args.checkpoint, (*args.overrides, *flags))
        bundle = build_data(config)
        if tuple(bundle.classes) != stats.classes:
            raise ValueError(f"the run was trained on classes {stats.classes}, the data now has {bundle.classes}")
        dataset = bundle.test if args.split == "test" else bundle.val
        check_eval_config(config.eval, list(bundle.classes), bundle.frames[args.split])
        if args.pointing_game and config.data.dataset != "synthetic":
            raise ValueError(f"--pointing-game needs finding masks, which only the synthetic set has "
                             f"(data.dataset={config.data.dataset})")
        settings = settings_from(config.eval, heatmaps=args.heatmaps, pointing_game=args.pointing_game,
                                 heatmap_method=args.heatmap_method or config.eval.heatmap_method,
                                 bootstrap=config.eval.bootstrap if args.bootstrap is None else args.bootstrap)
        objective, loader, val_loader = accelerator.prepare(objective, make_eval_loader(dataset, config.data),
                                                            make_eval_loader(bundle.val, config.data))
        tta = config.augment.tta if args.tta else ()
        predictions = predict_split(objective, loader, accelerator, tta, desc=args.split + (" TTA" if tta else ""))
        val_predictions = (predictions if args.split == "val" else
                           predict_split(objective, val_loader, accelerator, tta, desc="val (thresholds)"))
        if accelerator.is_main_process:
            result, scored, classes = evaluate_split(predictions, bundle.frames[args.split], list(bundle.classes),
                                                     config.eval, settings.bootstrap, config.train.seed)
            suffix = ("-tta" if args.tta else "") + ("-val" if args.split == "val" else "")
            if args.study_level:
                suffix += "-image" if args.study_level == "image" else f"-study-{args.study_level}"
            if args.classes:
                suffix += f"-{len(classes)}classes"
            out = Path(args.out) if args.out else Path(args.run) / f"eval{suffix}"
            write_report(result, scored, classes, out)
            s = result.summary
            print(f"{args.split} ({s['level']}, {result.coverage()}): mAP {s['mAP']:.4f}  mean AUROC "
                  f"{s['mean_auroc']:.4f}  ({s['n_images']} rows) -> {out}")
            # operating points of exactly these weights (and TTA views), on the image-level predictions
            checkpoint = ckpt.read_pointer(Path(args.run) / "checkpoints", args.checkpoint).name
            record = fit_operating_points(val_predictions, list(bundle.classes), settings, out / "thresholds.json",
                                          checkpoint, tta=tta)
            explainer = split_explainer(accelerator.unwrap_model(objective), dataset, bundle.frames[args.split],
                                        config.data, bundle.classes)
            summary = diagnose(out, predictions, list(bundle.classes), classes, record, settings, explainer,
                               config.train.seed)
            print(diagnosis_line(summary, record, out / "thresholds.json")
                  + (" (fitted on the evaluated split itself: optimistic)" if args.split == "val" else ""))
        accelerator.end_training()
        return 0

    return run_cli(evaluate, parser)


if __name__ == "__main__":
    sys.exit(main())
