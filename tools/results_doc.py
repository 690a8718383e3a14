"""Rebuild docs/results.md from its template and the committed grid results: `python tools/results_doc.py`.

Every table and plot of docs/results.md comes from docs/results/<grid>.csv + <grid>.json (spml/reporting/results_doc.py
lists the template's placeholders); the prose around them is docs/results/template.md. After a grid has run,
`--collect NAME=GRID_FOLDER` copies its results.csv and results.json there first.

Examples:
  python tools/results_doc.py --collect core=runs/sci/core      # then rebuild
  python tools/results_doc.py --check                           # exit 1 when docs/results.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spml.cli import run_cli

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default=str(REPO / "docs/results/template.md"))
    parser.add_argument("--results", default=str(REPO / "docs/results"), help="folder of <grid>.csv/.json and plots")
    parser.add_argument("--out", default=str(REPO / "docs/results.md"))
    parser.add_argument(
        "--collect",
        action="append",
        default=[],
        metavar="NAME=GRID_FOLDER",
        help="copy GRID_FOLDER/results.csv|json to <results>/NAME.csv|json first (repeatable)",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out differs from the render")
    args = parser.parse_args(argv)

    def build() -> int:
        from spml.config import ConfigError
        from spml.reporting.results_doc import collect, render
        from spml.utils.io import write_text_atomic

        results, out = Path(args.results), Path(args.out)
        for item in args.collect:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise ConfigError(f"--collect {item!r}: expected NAME=GRID_FOLDER, e.g. core=runs/sci/core")
            print("collected", *collect(name, Path(folder), results))
        link_prefix = f"{results.resolve().relative_to(out.resolve().parent).as_posix()}/"
        rendered = render(Path(args.template).read_text(encoding="utf-8"), results, link_prefix)
        if args.check:
            current = out.read_text(encoding="utf-8") if out.exists() else ""
            if current != rendered.text:
                print(f"{out} is out of date: run python tools/results_doc.py", file=sys.stderr)
                return 1
            print(f"{out} is up to date")
            return 0
        write_text_atomic(out, rendered.text)
        for plot in rendered.plots:
            plot()
        print(f"wrote {out} and {len(rendered.plots)} plot(s) into {results}")
        return 0

    return run_cli(build, parser)


if __name__ == "__main__":
    sys.exit(main())
