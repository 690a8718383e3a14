"""Train a multi-label CXR classifier: `accelerate launch tools/train.py --mode spml|supervised ...`.

Examples:
  python tools/train.py --mode spml                                   # MPC on the synthetic set
  accelerate launch tools/train.py --config configs/papers/chexpert_mpc.yaml data.root=/data/chexpert
  python tools/train.py --config configs/papers/nih_densenet121_fzlpr_tta.yaml data.root=/data/nih loss.name=zlpr
  python tools/train.py --resume runs/my_run                          # continue an interrupted run
"""
from __future__ import annotations

import argparse
import os
import sys

from spml.cli import run_cli
from spml.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["spml", "supervised"], help="training regime (default: from config)")
    parser.add_argument("--config", action="append", default=[], help="YAML file(s), merged in order")
    parser.add_argument("--resume", help="run folder to continue from its latest checkpoint (its config is reused)")
    parser.add_argument("--overwrite", action="store_true",
                        help="train.out may hold an earlier run: delete its checkpoints, logs and evaluations first")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.size=128 train.epochs=10")
    args = parser.parse_intermixed_args(argv)

    def train() -> int:
        from spml import factories

        config = load_config(args.config, args.overrides, run_dir=args.resume, mode=args.mode)
        if not args.resume:
            factories.claim_run_dir(config.train.out, args.overwrite, main_process=os.environ.get("RANK", "0") == "0")
        trainer = factories.build_trainer(config)
        try:
            if args.resume:
                trainer.resume(args.resume)
            trainer.fit()
        finally:
            trainer.accelerator.end_training()
        return 0

    return run_cli(train, parser)


if __name__ == "__main__":
    sys.exit(main())
