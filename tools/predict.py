"""Per-finding probabilities for images on disk: `python tools/predict.py runs/<name> img.png dir/ ...`.

Folders are searched recursively: files with an image suffix (.png .jpg .jpeg .tif .tiff .dcm .dicom) and DICOM
files under any other name are scored; every other file is listed as not scored. Images are decoded as in
training (data.size, data.intensity of the run). An image that cannot be read: with --bad-images skip
(default) it is listed as not scored and the other files are scored; with --bad-images error the tool stops
naming it (exit 2), before any scoring when its header already shows the problem.
Writes a CSV (path + one probability column per finding) and, when some files were not scored,
<out stem>_not_scored.csv (path, reason).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spml.cli import run_cli

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"}
SHOWN = 20  # not-scored files printed (all of them are in the _not_scored.csv file)


def find_images(items: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files to score, [(file, reason)] for the files of the folders that are not images).
    Files named explicitly are always scored (or reported as bad images)."""
    from spml.data.images import is_dicom

    images: list[Path] = []
    others: list[tuple[Path, str]] = []
    for item in map(Path, items):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                try:
                    image = path.suffix.lower() in IMAGE_SUFFIXES or is_dicom(str(path))
                except OSError as err:
                    others.append((path, f"cannot read the file: {err.strerror}"))
                    continue
                if image:
                    images.append(path)
                else:
                    others.append((path, f"not an image file (suffix {path.suffix or 'none'}, no DICOM header; "
                                         f"images: {' '.join(sorted(IMAGE_SUFFIXES))} or DICOM)"))
        elif item.exists():
            images.append(item)
        else:
            raise FileNotFoundError(f"{item} does not exist")
    if not images:
        raise FileNotFoundError(f"no image files found in {items} ({len(others)} other files)")
    return images, others


def report_not_scored(not_scored: list[tuple[Path, str]], out: Path) -> None:
    """Write `<out stem>_not_scored.csv` and print the first files with their reasons."""
    import pandas as pd

    file = out.with_name(f"{out.stem}_not_scored.csv")
    pd.DataFrame(not_scored, columns=["path", "reason"]).astype(str).to_csv(file, index=False)
    print(f"not scored: {len(not_scored)} files -> {file}", file=sys.stderr)
    for path, reason in not_scored[:SHOWN]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(not_scored) > SHOWN:
        print(f"  ... ({len(not_scored) - SHOWN} more in {file})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (holds config.yaml and checkpoints/)")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--out", default="predictions.csv")
    parser.add_argument("--checkpoint", default="latest", choices=["latest", "best"])
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bad-images", default="skip", choices=["skip", "error"],
                        help="an unreadable image: skip lists it as not scored (default), error stops naming it")
    args = parser.parse_args(argv)

    def predict() -> int:
        import numpy as np
        import pandas as pd
        import torch

        from spml.data.images import ImageError, Intensity, check_image, load_gray
        from spml.data.table import DataError
        from spml.factories import load_model

        model = load_model(args.run, args.checkpoint, tta=args.tta)
        intensity = Intensity.from_settings(model.metadata.get("data", {}))
        paths, not_scored = find_images(args.images)
        hint = "; --bad-images skip scores the other files and lists this one"
        if args.bad_images == "error":  # stop before scoring when a header already shows the problem
            for path in paths:
                try:
                    check_image(path)
                except ImageError as err:
                    raise DataError(f"{err}{hint}") from None
        scored, probs, images = [], [], []

        def score_batch() -> None:
            batch = torch.from_numpy(np.stack(images))[:, None]
            with torch.no_grad():
                probs.append(torch.sigmoid(model(batch)).numpy())
            images.clear()

        for path in paths:
            try:
                images.append(load_gray(path, model.image_size, intensity))
            except ImageError as err:
                if args.bad_images == "error":
                    raise DataError(f"{err}{hint}") from None
                not_scored.append((path, err.reason))
                continue
            scored.append(path)
            if len(images) == args.batch_size:
                score_batch()
        if images:
            score_batch()
        if not_scored:
            report_not_scored(not_scored, Path(args.out))
        if not scored:
            raise DataError(f"none of the {len(paths)} image files could be scored (listed above)")
        frame = pd.DataFrame(np.concatenate(probs), columns=list(model.classes))
        frame.insert(0, "path", [str(p) for p in scored])
        frame.to_csv(args.out, index=False, float_format="%.6f")
        print(f"wrote {len(frame)} rows x {len(model.classes)} findings to {args.out}")
        return 0

    return run_cli(predict, parser)


if __name__ == "__main__":
    sys.exit(main())
