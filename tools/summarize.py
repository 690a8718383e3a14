"""Collect run folders into one table: `python tools/summarize.py runs/a runs/b ... [--out table.csv]`.

A folder that holds runs (e.g. an ablation grid) is searched for run folders (those with config.yaml).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spml.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders or folders containing runs")
    parser.add_argument("--eval", default="eval", help="evaluation subfolder to read (eval, eval-tta, ...)")
    parser.add_argument("--out", help="also write the table as CSV")
    args = parser.parse_args(argv)

    def summarize() -> int:
        import pandas as pd

        from spml.config import load_config
        from spml.reporting.grid_results import read_run

        folders = sorted({p.parent for root in map(Path, args.runs) for p in root.rglob("config.yaml")})
        if not folders:
            raise FileNotFoundError(f"no run folders (with config.yaml) under {args.runs}")
        rows = []
        for folder in folders:
            config = load_config(run_dir=folder)
            method = (
                config.loss.name
                if config.mode == "supervised" or config.spml.objective == "loss"
                else f"mpc({config.loss.name})"
            )
            rows.append(
                {
                    "run": str(folder),
                    "mode": config.mode,
                    "method": method,
                    "head": config.model.head,
                    "backbone": config.model.backbone,
                    "dataset": config.data.dataset,
                    "seed": config.train.seed,
                    **read_run(folder, args.eval),
                }
            )
        frame = pd.DataFrame(rows)
        columns = ["run", "mode", "method", "head", "backbone", "dataset", "seed", "status", "mAP", "mean_auroc"]
        print(frame[[c for c in columns if c in frame]].to_string(index=False, float_format="%.4f"))
        if args.out:
            frame.to_csv(args.out, index=False)
        return 0

    return run_cli(summarize, parser)


if __name__ == "__main__":
    sys.exit(main())
