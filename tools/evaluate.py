r"""Evaluate a run: `python tools/evaluate.py runs/<name> [--tta] [--checkpoint best] [--split test]`.

Writes metrics.json, per_class.csv, roc.png and pr.png into runs/<name>/eval[-tta][-val][-study-max|-image][-Nclasses]/.
Runs under `accelerate launch` too (each sample is scored exactly once across processes).

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
    parser.add_argument("overrides", nargs="*", help="dotted config overrides (e.g. data.root=/new/place)")
    args = parser.parse_intermixed_args(argv)

    def evaluate() -> int:
        from spml.data.build import build_data
        from spml.engine.evaluation import evaluate_model
        from spml.engine.loader import make_eval_loader
        from spml.engine.trainer import build_accelerator
        from spml.factories import check_eval_config, load_model
        from spml.factories.artifact import run_config

        accelerator = build_accelerator()
        flags = []
        if args.study_level:
            flags.append(f"eval.study_level={'' if args.study_level == 'image' else args.study_level}")
        if args.classes:
            flags.append(f"eval.classes={json.dumps([c.strip() for c in args.classes.split(',') if c.strip()])}")
        config = run_config(Path(args.run), (*args.overrides, *flags))
        model = load_model(args.run, args.checkpoint, tta=args.tta)
        bundle = build_data(config)
        if tuple(bundle.classes) != model.classes:
            raise ValueError(f"the run was trained on classes {model.classes}, the data now has {bundle.classes}")
        frame = bundle.frames[args.split]
        check_eval_config(config.eval, bundle.classes, frame)
        dataset = bundle.test if args.split == "test" else bundle.val
        model = model.to(accelerator.device)  # inference only: no DDP wrapper, the loader shards the split
        loader = accelerator.prepare(make_eval_loader(dataset, config.data.eval_batch_size, config.data.num_workers))
        suffix = ("-tta" if args.tta else "") + ("-val" if args.split == "val" else "")
        if args.study_level:
            suffix += "-image" if args.study_level == "image" else f"-study-{args.study_level}"
        if args.classes:
            suffix += f"-{len(config.eval.classes)}classes"
        out = Path(args.out) if args.out else Path(args.run) / f"eval{suffix}"
        bootstrap = config.eval.bootstrap if args.bootstrap is None else args.bootstrap
        summary = evaluate_model(model, loader, accelerator, frame, bundle.classes, out, config.eval.classes,
                                 config.eval.study_level, bootstrap, config.train.seed)
        if summary is not None:
            print(f"{args.split} ({summary['level']}, {summary['n_classes']} classes): mAP {summary['mAP']:.4f}  "
                  f"mean AUROC {summary['mean_auroc']:.4f}  ({summary['n_images']} rows) -> {out}")
        accelerator.end_training()
        return 0

    return run_cli(evaluate, parser)


if __name__ == "__main__":
    sys.exit(main())
