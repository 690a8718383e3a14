"""Evaluate a run: `python tools/evaluate.py runs/<name> [--tta] [--checkpoint best] [--split test]`.

Writes metrics.json, per_class.csv, roc.png and pr.png into runs/<name>/eval[-tta][-<split>]/.
Runs under `accelerate launch` too (each sample is scored exactly once across processes).
"""
from __future__ import annotations

import argparse
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
    parser.add_argument("--out", help="output folder (default: <run>/eval[-tta][-val])")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides (e.g. data.root=/new/place)")
    args = parser.parse_args(argv)

    def evaluate() -> int:
        from spml.data.build import build_data
        from spml.engine.evaluation import predict_split, score, write_report
        from spml.engine.inference import load_run
        from spml.engine.loader import make_eval_loader
        from spml.engine.trainer import build_accelerator

        accelerator = build_accelerator()
        config, stats, objective = load_run(args.run, args.checkpoint, tuple(args.overrides))
        bundle = build_data(config)
        if tuple(bundle.classes) != stats.classes:
            raise ValueError(f"the run was trained on classes {stats.classes}, the data now has {bundle.classes}")
        dataset = bundle.test if args.split == "test" else bundle.val
        objective, loader = accelerator.prepare(objective, make_eval_loader(dataset, config.data))
        tta = config.augment.tta if args.tta else ()
        predictions = predict_split(objective, loader, accelerator, tta)
        if accelerator.is_main_process:
            bootstrap = config.eval.bootstrap if args.bootstrap is None else args.bootstrap
            result = score(predictions, list(bundle.classes), bootstrap, config.train.seed)
            suffix = ("-tta" if args.tta else "") + ("-val" if args.split == "val" else "")
            out = Path(args.out) if args.out else Path(args.run) / f"eval{suffix}"
            write_report(result, predictions, list(bundle.classes), out)
            s = result.summary
            print(f"{args.split}: mAP {s['mAP']:.4f}  mean AUROC {s['mean_auroc']:.4f}  "
                  f"({s['n_images']} images) -> {out}")
        accelerator.end_training()
        return 0

    return run_cli(evaluate, parser)


if __name__ == "__main__":
    sys.exit(main())
