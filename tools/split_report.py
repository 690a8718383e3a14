"""Per-class prevalence per split (train / val / test / all) for a dataset and data.split setting.

Examples:
  python tools/split_report.py --config configs/datasets/nih.yaml data.root=/data/nih data.split=stratified
  python tools/split_report.py --config configs/papers/nih_efficientnet_mlp_bce.yaml data.root=/data/nih --out split.csv

Rows: each class (share of images with a certain positive, value 1), then image and patient counts.
Only the label file is read unless --check-images applies data.missing to the image files as training
does; rows that single-positive masking later drops from train (no certain positive) are still counted.
"""

from __future__ import annotations

import argparse
import sys

from spml.cli import run_cli
from spml.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], help="YAML file(s) for the data section")
    parser.add_argument("--check-images", action="store_true", help="drop/refuse missing images (data.missing)")
    parser.add_argument("--out", help="also write the table as CSV here")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.split=stratified data.split_seed=1")
    args = parser.parse_intermixed_args(argv)

    def report() -> int:
        from spml.data.splits import split_prevalence
        from spml.data.table import check_images
        from spml.factories.data import read_table, split_table

        data = load_config(args.config, args.overrides).data
        table = read_table(data)
        if args.check_images:
            table = check_images(table, data.missing)
        prevalence = split_prevalence(table, split_table(table, data))
        classes = list(table.classes)
        splits = [name for name in prevalence.columns if name != "all"]
        shown = prevalence.copy().astype(object)
        shown.loc[classes] = prevalence.loc[classes].map(lambda share: f"{100 * share:.2f}%")
        shown.loc[["images", "patients"]] = prevalence.loc[["images", "patients"]].astype(int)
        print(f"{data.dataset} ({table.source}), data.split={data.split}, seed {data.split_seed}")
        print(shown.to_string())
        overall = prevalence.loc[classes, "all"]
        gap = prevalence.loc[classes, splits].sub(overall, axis=0).abs().div(overall.where(overall > 0), axis=0)
        for name in splits:
            if gap[name].notna().any():
                print(
                    f"{name}: largest relative deviation from the overall prevalence "
                    f"{100 * gap[name].max():.1f}% ({gap[name].idxmax()})"
                )
        if args.out:
            prevalence.to_csv(args.out, index_label="row")
            print(f"-> {args.out}")
        return 0

    return run_cli(report, parser)


if __name__ == "__main__":
    sys.exit(main())
