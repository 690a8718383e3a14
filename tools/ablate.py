"""Run an ablation grid: `python tools/ablate.py configs/ablations/mpc.yaml [--dry-run] [--out DIR]`.

Each variant x seed trains in its own folder (sequentially, via tools/train.py); finished runs are
skipped, a failing run is recorded as failed and the grid goes on. Writes results.csv (one row per
run), results.md (mean +/- std over seeds, recovery ratio) and results.png into the grid folder.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from spml.cli import run_cli

TRAIN = Path(__file__).resolve().parent / "train.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="ablation YAML (configs/ablations/*.yaml)")
    parser.add_argument("--out", help="grid folder (default: the YAML's `out` or runs/ablations/<name>)")
    parser.add_argument("--dry-run", action="store_true", help="print the accelerate launch commands and exit")
    parser.add_argument("--only", action="append", default=[], help="run only these variants (repeatable)")
    parser.add_argument("overrides", nargs="*", help="extra dotted overrides applied to every run")
    args = parser.parse_args(argv)

    def ablate() -> int:
        import pandas as pd

        from spml.experiments import aggregate, load_grid, markdown, read_run
        from spml.plots import plot_bars

        grid = load_grid(args.grid, args.out)
        runs = [r for r in grid.runs if not args.only or r.variant in args.only]
        for run in runs:
            train_args = run.train_args() + args.overrides
            if args.dry_run:
                print("accelerate launch " + shlex.join([str(TRAIN), *train_args]))
                continue
            if (run.run_dir / "eval" / "metrics.json").exists():
                print(f"[skip] {run.variant} seed {run.seed}: finished ({run.run_dir})")
                continue
            print(f"[run ] {run.variant} seed {run.seed} -> {run.run_dir}", flush=True)
            run.run_dir.mkdir(parents=True, exist_ok=True)
            (run.run_dir / "FAILED").unlink(missing_ok=True)
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, str(TRAIN), *train_args], capture_output=True, text=True)
            (run.run_dir / "train_output.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
            if proc.returncode != 0:
                (run.run_dir / "FAILED").write_text(proc.stderr[-4000:] or f"exit {proc.returncode}")
                print(f"[fail] {run.variant} seed {run.seed}: exit {proc.returncode}, see {run.run_dir}/FAILED")
            else:
                (run.run_dir / "seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
        if args.dry_run:
            return 0
        rows = [{"variant": r.variant, "seed": r.seed, **read_run(r.run_dir)} for r in runs]
        frame = pd.DataFrame(rows)
        grid.out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(grid.out / "results.csv", index=False)
        table = aggregate(frame, grid.reference)
        text = f"# {grid.name}\n\n" + markdown(table)
        (grid.out / "results.md").write_text(text, encoding="utf-8")
        plot_bars(table, x="variant", y="mAP_mean", yerr="mAP_std", out_path=grid.out / "results.png",
                  title=f"{grid.name}: test mAP (mean ± std over seeds)")
        print(text)
        failed = int((frame["status"] == "failed").sum())
        print(f"{len(frame)} runs, {failed} failed -> {grid.out}/results.csv, results.md, results.png")
        return 0

    return run_cli(ablate, parser)


if __name__ == "__main__":
    sys.exit(main())
