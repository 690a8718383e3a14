"""Run an ablation grid: `python tools/ablate.py configs/ablations/mpc.yaml [--dry-run] [--out DIR]`.

Each variant x seed trains in its own folder (sequentially, via tools/train.py); finished runs are
skipped, a failing run is recorded as failed and the grid goes on. A grid with `tta: true` also scores
every finished run with test-time augmentation (tools/evaluate.py --tta) as rows "<variant> + TTA".
Writes results.csv (one row per run), results.md (mean +/- std over seeds, recovery ratio), results.png
and report.html (all of it in one self-contained page, linking each run's report) into the grid folder.
A progress bar counts the runs; each run's own output is in <run>/train_output.txt. `--report-only` trains
nothing: it writes the results of the runs finished so far (the others are rows with status "missing", left out
of the means; the paired differences use the seeds both variants finished).

Launchers (--launcher): `local` trains the runs in turn on this machine; `slurm` submits one job per unfinished run
(a job array, through submitit) with the resources of the grid's `cluster:` section, --cluster-config and the flags,
waits for the jobs and writes the results (--no-wait: submit and return; --report-only collects later);
`submitit-local` and `submitit-debug` run the same jobs without a scheduler. Every launcher skips finished runs,
resumes interrupted ones from their checkpoints and leaves alone a run another grid or job is on, so a grid can be
started again (or twice at once, on several nodes sharing the folder) and each run trains once. --dry-run lists the
jobs with a GPU-hour estimate (--throughput: tools/benchmark.py --json output) and, for slurm, the sbatch script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spml.cli import run_cli
from spml.experiments.launch import add_launcher_arguments

TRAIN = Path(__file__).resolve().parent / "train.py"
EVALUATE = Path(__file__).resolve().parent / "evaluate.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="ablation YAML (configs/ablations/*.yaml)")
    parser.add_argument("--out", help="grid folder (default: the YAML's `out` or runs/ablations/<name>)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the jobs (launch commands, GPU-hour estimate, sbatch script) and exit",
    )
    parser.add_argument("--only", action="append", default=[], help="run only these variants (repeatable)")
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        type=int,
        help="run only these seeds (repeatable); results cover the selected runs",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing; write the results of the runs finished so far"
    )
    parser.add_argument("overrides", nargs="*", help="extra dotted overrides applied to every run")
    add_launcher_arguments(parser)
    args = parser.parse_intermixed_args(argv)

    def ablate() -> int:
        import pandas as pd

        from spml.config import ConfigError
        from spml.experiments.grid import grid_rows, load_grid, run_budget, score_with_tta
        from spml.experiments.launch import dry_run, launch, settings_from_arguments
        from spml.reporting.grid_results import run_counts, write_results

        grid = load_grid(args.grid, args.out)
        unknown = sorted(set(args.only) - {r.variant for r in grid.runs})
        if unknown:
            raise ConfigError(
                f"--only {unknown[0]!r}: no such variant in {args.grid}; variants: "
                f"{list(dict.fromkeys(r.variant for r in grid.runs))}"
            )
        runs = [
            r for r in grid.runs if (not args.only or r.variant in args.only) and (not args.seed or r.seed in args.seed)
        ]
        if args.report_only and (args.dry_run or args.overrides):
            raise ConfigError("--report-only trains nothing: it takes no --dry-run and no overrides")
        settings = settings_from_arguments(args, grid.cluster, args.grid)
        if args.dry_run:
            dry_run(
                runs,
                TRAIN,
                args.overrides,
                args.launcher,
                settings,
                grid.out,
                grid.name,
                args.throughput,
                args.train_images,
            )
            return 0
        frame = (
            grid_rows(runs)
            if args.report_only
            else launch(
                runs, TRAIN, args.overrides, args.launcher, settings, grid.out, grid.name, wait=not args.no_wait
            )
        )
        if frame is None:
            return 0
        counts = run_counts(frame)
        if grid.tta and not args.report_only:
            with_tta = pd.concat([frame, score_with_tta(runs, EVALUATE)], ignore_index=True)
            order = {variant: i for i, variant in enumerate(frame["variant"].drop_duplicates())}
            rank = with_tta["variant"].str.removesuffix(" + TTA").map(order)
            frame = with_tta.iloc[rank.argsort(kind="stable")].reset_index(drop=True)
        print(
            write_results(
                frame,
                grid.out,
                grid.name,
                grid.reference,
                grid.compare,
                grid.split,
                command=f"python tools/ablate.py {args.grid}",
                budget=run_budget(frame),
            )
        )
        print(f"{counts} -> {grid.out}/results.csv, results.md, results.png, report.html")
        return 0

    return run_cli(ablate, parser)


if __name__ == "__main__":
    sys.exit(main())
