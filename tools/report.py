"""Write a run's one-file HTML report: `python tools/report.py runs/<name> [--eval eval-tta] [--out file.html]`.

The page (default <run>/report.html) embeds everything it shows, so it opens offline and can be mailed or
archived alone: the resolved config, data and masking statistics (with their warnings), training curves
from log.csv (loss components, validation metrics, MPC pseudo-label precision/recall), the per-class table
with bootstrap intervals and operating points, ROC/PR/reliability plots, the pointing game and the heatmap
gallery. Training writes it at the end (eval.report); run this after tools/evaluate.py to refresh it.
A screenshot for the docs (Debian: apt-get install chromium; docs/explainability.md lists every picture's command):
  chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir=$(mktemp -d) --hide-scrollbars \\
      --window-size=1280,1400 --screenshot=docs/images/report.png file://$PWD/runs/quickstart/report.html
"""

from __future__ import annotations

import argparse
import sys

from spml.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (holds config.yaml, log.csv, eval/)")
    parser.add_argument("--eval", default="eval", help="evaluation folder inside the run to report (default: eval)")
    parser.add_argument("--out", help="HTML file to write (default: <run>/report.html)")
    args = parser.parse_args(argv)

    def report() -> int:
        from spml.reporting.run_report import write_run_report

        print(f"report: {write_run_report(args.run, args.out, args.eval)}")
        return 0

    return run_cli(report, parser)


if __name__ == "__main__":
    sys.exit(main())
