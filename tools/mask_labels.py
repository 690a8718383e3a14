"""Mask full labels into single-positive (or partial) labels: a masked CSV + <out>.manifest.json.

Examples:
  python tools/mask_labels.py --dataset chexpert --csv train.csv --scheme single_positive --seed 1200 --out masked.csv
  python tools/mask_labels.py --dataset nih --root /data/nih --scheme keep_k --k 2 --out nih_k2.csv data.views=[PA]
  python tools/mask_labels.py --dataset synthetic --out synthetic_sp.csv data.synthetic.num_images=240

Image files are not needed (their existence is checked at training time). Rows are masked in path order
with numpy RandomState(seed): the same input and seed give byte-identical files. Train with
data.masked_labels=<out>; the run refuses a file that does not match its label file or was edited.
"""

from __future__ import annotations

import argparse
import sys
import time

from spml.cli import run_cli
from spml.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="nih | chexpert | mimic | csv | synthetic")
    parser.add_argument("--csv", default="", help="label file (data.labels); default: the dataset's file under --root")
    parser.add_argument("--root", default="", help="dataset root (data.root); default: the label file's folder")
    parser.add_argument(
        "--scheme",
        default="single_positive",
        help="single_positive | frequent_first | rare_first | priority | keep_k | keep_fraction",
    )
    parser.add_argument("--seed", type=int, default=1200)
    parser.add_argument("--out", required=True, help="masked CSV to write (its manifest goes beside it)")
    parser.add_argument(
        "--no-positive",
        choices=["drop", "keep"],
        default="drop",
        help="rows without an observed label: drop (default) or keep all unobserved",
    )
    parser.add_argument("--k", type=int, help="keep_k: positives kept per row")
    parser.add_argument("--fraction", type=float, help="keep_fraction: share of all known labels kept")
    parser.add_argument("--order", help="priority: comma-separated class names, first = observed first")
    parser.add_argument("--config", action="append", default=[], help="YAML file(s) for the data section")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.views=[frontal]")
    args = parser.parse_intermixed_args(argv)

    def mask() -> int:
        from spml.data.masking import mask_table, masking_summary, write_masked
        from spml.data.table import dataset_root
        from spml.factories.data import read_table

        data = {
            "dataset": args.dataset,
            **({"labels": args.csv} if args.csv else {}),
            **({"root": args.root} if args.root else {}),
        }
        config = load_config(args.config, args.overrides, data=data).data
        order = [name.strip() for name in args.order.split(",")] if args.order else None
        params = {
            name: value
            for name, value in (("k", args.k), ("fraction", args.fraction), ("order", order))
            if value is not None
        }
        start = time.perf_counter()
        table = read_table(config)
        read_s = time.perf_counter() - start
        frame, manifest = mask_table(
            table, args.scheme, args.seed, args.no_positive, dataset_root(config.root, config.labels), **params
        )
        manifest = write_masked(frame, manifest, args.out)
        total_s = time.perf_counter() - start
        print(f"{table.source} -> {args.out}")
        print(masking_summary(manifest))
        print(f"time {total_s:.2f} s (reading labels {read_s:.2f} s, masking + writing {total_s - read_s:.2f} s)")
        return 0

    return run_cli(mask, parser)


if __name__ == "__main__":
    sys.exit(main())
