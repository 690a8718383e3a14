"""Label-masking experiment: mask the train split, train the chosen methods, evaluate on the clean test split.

Examples:
  python tools/masking_experiment.py --dataset synthetic --methods full,an,em --seeds 0
  python tools/masking_experiment.py --dataset nih --root /data/nih --methods full,an,em,ll_r,mpc --seeds 0,1,2
  python tools/masking_experiment.py --dataset chexpert --root /data/chexpert --mask-val --out runs/masking/cx_mv

Steps: (1) read the data as training does (configs/datasets/<dataset>.yaml, --config files, overrides),
split it, and mask the train split's labels (and the val split's with --mask-val) into
<out>/masked_labels.csv + manifest; an identical file there is kept, a different one is an error.
(2) Train every method x seed with the ablation runner (tools/ablate.py's): `full` is mode=supervised on
the clean labels, `mpc` mode=spml spml.objective=mpc, the others mode=spml spml.objective=loss loss.name=<name>,
each with data.masked_labels=<file>; finished runs
(<out>/<method>/seed<s>/eval/metrics.json) are skipped, failures are recorded and the grid goes on.
(3) Write results.csv, results.json, results.md (test mAP and mean AUROC, mean +/- std over seeds and per seed;
the recovery ratio (method - AN) / (full - AN) on mAP against the best full-label variant run, when an is run
too; with mpc, its paired per-seed differences to the other single-positive methods with t intervals and
Holm-adjusted p-values) and results.png (+ paired.csv, paired.png) and report.html (one
self-contained page linking each run's report) into <out>. A progress bar counts the runs; each run's output
is in <run>/train_output.txt.

Launchers (--launcher, as tools/ablate.py): local (default) trains the runs in turn here; slurm submits one job per
unfinished run through submitit (resources: --cluster-config FILE's `cluster:` section, then the flags), waits and
writes the results (--no-wait, then --report-only later); interrupted runs resume from their checkpoints when the
command is run again. --dry-run lists the jobs with a GPU-hour estimate (and the sbatch script for slurm).

Choices:
* Only the train rows (and val rows with --mask-val) are masked, each split with its own
  RandomState(--mask-seed) draw, in path order; test rows are not in the file and keep their full labels,
  so every method is scored on the same clean test split. A masked val split gives model selection only
  the observed positives (every other entry counts as a negative).
* A seed sets train.seed only: the split (data.split_seed) and the masked labels are fixed, so seeds
  measure training variance on one masking. Another masking is another --mask-seed and --out.
* Rows without a certain positive (--no-positive, default keep as in the quick start, unless a --config file
  or an override sets data.mask_no_positive): with `keep` every method trains on the same images (such rows
  are all-unobserved in SPML mode); with `drop` they leave the SPML train split (val too with --mask-val)
  while `full` still trains on them, so the methods see different images. results.md names the policy.
* Methods: the full-label variants full (default weak augmentation), full_flips (flips only) and
  full_consistency (plus MPC's strong-view stream); mpc (the defaults), mpc_paper
  (configs/presets/mpc_paper.yaml), boostlu (LL-R with the BoostLU head) and the registered
  single-positive losses; an unknown name is an error. Recovery uses the best full-label variant run: name
  all three for the fair reference of docs/results.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from spml.cli import run_cli
from spml.config import load_config
from spml.experiments.launch import add_launcher_arguments

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "tools" / "train.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help="synthetic (default) | nih | chexpert | mimic | csv")
    parser.add_argument("--root", default="", help="dataset root (data.root)")
    parser.add_argument("--labels", default="", help="label file (data.labels); default: the dataset's under --root")
    parser.add_argument("--methods", default="full,an,em,ll_r,mpc", help="comma-separated (default: %(default)s)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (default: %(default)s)")
    parser.add_argument("--mask-val", action="store_true", help="mask the val split too (default: clean val)")
    parser.add_argument(
        "--scheme",
        help="masking scheme (data.mask_scheme): single_positive | frequent_first | "
        "rare_first | priority (with data.mask_params) | keep_k | keep_fraction",
    )
    parser.add_argument("--mask-seed", type=int, help="masking seed (data.mask_seed, default 1200)")
    parser.add_argument(
        "--no-positive",
        choices=["drop", "keep"],
        help="rows without a certain positive "
        "(data.mask_no_positive; default keep unless a --config file or an override sets it)",
    )
    parser.add_argument("--config", action="append", default=[], help="extra YAML file(s) after the dataset's")
    parser.add_argument("--out", help="experiment folder (default: runs/masking/<dataset>[_maskval])")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, the launch commands and the jobs' GPU-hour estimate; write nothing",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing; write the results of the runs finished so far"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every run, e.g. train.epochs=20")
    add_launcher_arguments(parser)
    args = parser.parse_intermixed_args(argv)

    def experiment() -> int:
        from spml.data.masking import masking_summary
        from spml.experiments.grid import grid_rows, run_budget
        from spml.experiments.launch import dry_run, launch, settings_from_arguments
        from spml.experiments.masking import (
            compared_method,
            no_positive_default,
            parse_methods,
            parse_seeds,
            plan_runs,
            reference,
            write_masked_splits,
        )
        from spml.reporting.grid_results import run_counts, write_results

        methods, seeds = parse_methods(args.methods), parse_seeds(args.seeds)
        dataset_yaml = REPO / "configs" / "datasets" / f"{args.dataset}.yaml"
        configs = (*((str(dataset_yaml),) if dataset_yaml.exists() else ()), *args.config)
        flags = {
            "data.dataset": args.dataset,
            "data.root": args.root,
            "data.labels": args.labels,
            "data.mask_scheme": args.scheme,
            "data.mask_seed": args.mask_seed,
            "data.mask_no_positive": args.no_positive or no_positive_default(args.config, args.overrides),
        }
        overrides = (*(f"{key}={value}" for key, value in flags.items() if value not in (None, "")), *args.overrides)
        mask_config = load_config(configs, [*overrides, f"data.mask_val={args.mask_val}"])
        out = Path(args.out or f"runs/masking/{args.dataset}{'_maskval' if args.mask_val else ''}")
        masked_file = out / "masked_labels.csv"
        runs = plan_runs(methods, seeds, out, configs, overrides, masked_file, args.mask_val)
        data = mask_config.data
        print(
            f"{args.dataset}: mask {'train + val' if args.mask_val else 'train'} with {data.mask_scheme} "
            f"{dict(data.mask_params)} seed {data.mask_seed} (no positive: {data.mask_no_positive}) -> {masked_file}"
        )
        settings = settings_from_arguments(args, {}, "masking experiment")
        job_name = f"masking_{args.dataset}"
        if args.dry_run:
            dry_run(runs, TRAIN, (), args.launcher, settings, out, job_name, args.throughput, args.train_images)
            return 0
        if args.report_only:
            frame = grid_rows(runs)
        else:
            manifest, written = write_masked_splits(mask_config, masked_file)
            print(("written" if written else "identical file already there, kept") + "\n" + masking_summary(manifest))
            frame = launch(runs, TRAIN, (), args.launcher, settings, out, job_name, wait=not args.no_wait)
            if frame is None:
                return 0
        counts = run_counts(frame)
        val = "masked" if args.mask_val else "clean"
        name = (
            f"masking {args.dataset}: {data.mask_scheme} seed {data.mask_seed}, {val} val, clean test, rows "
            f"without a positive: {data.mask_no_positive}"
        )
        command = "python tools/masking_experiment.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        print(
            write_results(
                frame,
                out,
                name,
                reference(methods),
                compared_method(methods),
                command=command,
                budget=run_budget(frame),
            )
        )
        print(f"{counts} -> {out}/results.csv, results.md, results.png, report.html")
        return 0

    return run_cli(experiment, parser)


if __name__ == "__main__":
    sys.exit(main())
