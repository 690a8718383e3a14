"""Decode a dataset's images once into the uint8 cache that training reads (see spml/data/cache.py).

Examples:
  python tools/prepare_data.py --dataset nih --root /data/nih --size 256
  python tools/prepare_data.py --dataset chexpert --root /data/chexpert --size 320 --out cache/chexpert_320 --workers 8
  python tools/prepare_data.py --config configs/datasets/mimic.yaml data.views=[PA,AP]
  python tools/prepare_data.py --dataset mimic --root /data/mimic-cxr data.mimic_format=dcm data.intensity=window
Images wider than 8 bits (16-bit PNG, DICOM) are decoded under data.intensity (recorded in meta.json).
Then train with data.cache=<out> (and the same data.size and data.intensity).
"""

from __future__ import annotations

import argparse
import sys
import time

from spml.cli import run_cli
from spml.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="reader name: nih | chexpert | mimic | csv (default: from config)")
    parser.add_argument("--root", help="dataset root folder (data.root)")
    parser.add_argument("--size", type=int, help="cached image size in pixels (data.size)")
    parser.add_argument("--config", action="append", default=[], help="YAML file(s), merged in order")
    parser.add_argument("--out", help="cache folder (default: cache/<dataset>_<size>)")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.labels=/data/nih/list.csv")
    args = parser.parse_intermixed_args(argv)

    def prepare() -> int:
        from spml.data.cache import build_cache
        from spml.data.table import check_images
        from spml.factories.data import image_intensity, read_table

        flags = {"dataset": args.dataset, "root": args.root, "size": args.size}
        config = load_config(
            args.config, [*(f"data.{k}={v}" for k, v in flags.items() if v is not None), *args.overrides]
        ).data
        if config.dataset == "synthetic":
            raise ValueError(
                "the synthetic dataset is rendered in memory; there is nothing to cache "
                "(choose --dataset nih|chexpert|mimic|csv)"
            )
        table = check_images(read_table(config), config.missing)  # data.missing=drop|error
        paths = table.frame["path"].tolist()
        out = args.out or f"cache/{config.dataset}_{config.size}"
        intensity = image_intensity(config)
        print(f"{config.dataset}: {len(paths)} images from {table.source} -> {out} at {config.size} px")
        start = time.perf_counter()
        cache = build_cache(paths, config.size, out, workers=args.workers, intensity=intensity)
        seconds = time.perf_counter() - start
        print(f"cached {len(cache)} images in {seconds:.1f} s ({len(cache) / seconds:.1f} images/s)")
        failed = cache.failed
        if len(failed):
            print(f"{len(failed)} images could not be decoded (all listed in {out}/index.csv, ok=False):")
            for path, error in failed[["path", "error"]].head(20).itertuples(index=False):
                print(f"  {path}: {error}")
        print(
            f"train with data.cache={out} data.size={config.size} data.intensity={intensity.policy} "
            f"data.intensity_percentiles={list(intensity.percentiles)}"
        )
        return 0

    return run_cli(prepare, parser)


if __name__ == "__main__":
    sys.exit(main())
