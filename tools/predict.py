"""Per-finding probabilities for images on disk: `python tools/predict.py runs/<name> img.png dir/ ...`.

Folders are searched for PNG/JPEG files. Writes a CSV (path + one probability column per finding).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spml.cli import run_cli

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def image_paths(items: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.exists():
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item} does not exist")
    if not paths:
        raise FileNotFoundError(f"no PNG/JPEG images found in {items}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (holds config.yaml and checkpoints/)")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--out", default="predictions.csv")
    parser.add_argument("--checkpoint", default="latest", choices=["latest", "best"])
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    def predict() -> int:
        import numpy as np
        import pandas as pd
        import torch

        from spml.data.images import load_gray
        from spml.factories import load_model

        model = load_model(args.run, args.checkpoint, tta=args.tta)
        paths = image_paths(args.images)
        probs = []
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start:start + args.batch_size]
            images = torch.from_numpy(np.stack([load_gray(p, model.image_size) for p in chunk]))[:, None]
            with torch.no_grad():
                probs.append(torch.sigmoid(model(images)).numpy())
        frame = pd.DataFrame(np.concatenate(probs), columns=list(model.classes))
        frame.insert(0, "path", [str(p) for p in paths])
        frame.to_csv(args.out, index=False, float_format="%.6f")
        print(f"wrote {len(frame)} rows x {len(model.classes)} findings to {args.out}")
        return 0

    return run_cli(predict, parser)


if __name__ == "__main__":
    sys.exit(main())
