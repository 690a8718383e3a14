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
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

from spml.cli import run_cli
from spml.config import RESUME_KEYS, load_config, resume_config

RESUME_HELP = (
    "run folder to continue from its latest checkpoint, in that folder (it may have moved). Its config.yaml "
    f"is kept; overrides may change only {', '.join(sorted(RESUME_KEYS))} (recorded in resumes.jsonl)"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["spml", "supervised"], help="training regime (default: from config)")
    parser.add_argument("--config", action="append", default=[], help="YAML file(s), merged in order")
    parser.add_argument("--resume", help=RESUME_HELP)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train.out may hold an earlier run: delete its checkpoints, logs and evaluations first",
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.size=128 train.epochs=10")
    args = parser.parse_intermixed_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume continues a run and --overwrite starts one over: give one of them")

    def train() -> int:
        from spml import factories
        from spml.engine.checkpoint import find_checkpoint
        from spml.engine.signals import Interrupted, StopOnSignal
        from spml.utils.lock import RunLock

        main_process = os.environ.get("RANK", "0") == "0"
        if args.resume:  # refused overrides fail here, before anything is written
            config, changes = resume_config(args.resume, args.config, args.overrides, mode=args.mode)
        else:
            config = load_config(args.config, args.overrides, mode=args.mode)
        factories.check_run_config(config)  # bad settings fail before the run folder is touched
        run_dir = Path(config.train.out)
        stop = StopOnSignal(every=config.train.log_every)
        try:
            with stop, RunLock(run_dir) if main_process else nullcontext():  # one lock holder: the main process
                if args.resume:  # a folder without a checkpoint (or one a training holds) fails before the build
                    find_checkpoint(run_dir)
                else:
                    factories.claim_run_dir(run_dir, args.overwrite, main_process=main_process)
                trainer = factories.build_trainer(config, callbacks=[stop], resume=bool(args.resume))
                try:
                    if args.resume:
                        trainer.resume(run_dir)
                        if main_process:
                            factories.record_resume(
                                run_dir, trainer.progress.global_step, changes, trainer.accelerator.num_processes
                            )
                    trainer.fit()
                    if stop.stopped_by and main_process:
                        print(
                            f"stopped by {signal.Signals(stop.stopped_by).name} at step "
                            f"{trainer.progress.global_step} (checkpoint written, test evaluation skipped); "
                            f"{resume_advice(run_dir)}",
                            file=sys.stderr,
                            flush=True,
                        )
                finally:
                    trainer.accelerator.end_training()
        except Interrupted as interrupted:
            if main_process:
                print(
                    f"interrupted by {interrupted} outside the training steps; {resume_advice(run_dir)}",
                    file=sys.stderr,
                )
            return 128 + interrupted.signum
        return 128 + stop.stopped_by if stop.stopped_by else 0

    return run_cli(train, parser)


def resume_advice(run_dir: Path) -> str:
    """How to continue `run_dir` after a stop signal (or that there is nothing to continue)."""
    from spml.engine.checkpoint import find_checkpoint

    try:
        find_checkpoint(run_dir)
    except FileNotFoundError:
        return "no checkpoint was written: nothing to resume, start the run again (with --overwrite)"
    launcher = "python" if int(os.environ.get("WORLD_SIZE", "1")) == 1 else "<the same launcher>"
    return f"resume with: {launcher} tools/train.py --resume {run_dir}"


if __name__ == "__main__":
    sys.exit(main())
