"""Per-finding probabilities for images on disk: `python tools/predict.py runs/<name> img.png dir/ ...`.

Folders are searched recursively: files with an image suffix (.png .jpg .jpeg .tif .tiff .dcm .dicom) and DICOM
files under any other name are scored; every other file is listed as not scored. Images are decoded as in
training (data.size, data.intensity of the run). An image that cannot be read: with --bad-images skip
(default) it is listed as not scored and the other files are scored; with --bad-images error the tool stops
naming it (exit 2), before any scoring when its header already shows the problem.
Writes a CSV (path + one probability column per finding, each followed by its decision column
<finding>_decision: 1 present, 0 absent, empty where the finding has no threshold) and, when some files were
not scored, <out stem>_not_scored.csv (path, reason). Decisions use the run's operating points
(<run>/thresholds.json, fitted on the val split at the end of training; docs/explainability.md) or --thresholds
FILE (e.g. <run>/eval-tta/thresholds.json from tools/evaluate.py RUN --tta); the file must have been fitted for
the checkpoint and TTA views used here. The probabilities written are calibrated by that file's calibrator
(eval.calibration, fitted on the val split; the console says how); a run without thresholds.json gets the raw
model probabilities and no decisions (said on the console).
--heatmaps DIR writes, per image, DIR/<number>_<name>.png: the image and the heatmaps of its --heatmap-top most
probable findings (column `heatmap` of the CSV names the file).
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


def prediction_frame(paths: list[Path], probs, classes: list[str], record: dict | None):
    """path, then per finding its probability and (with operating points) its decision column."""
    import numpy as np
    import pandas as pd

    columns: dict[str, object] = {"path": [str(p) for p in paths]}
    for c, name in enumerate(classes):
        columns[name] = probs[:, c]
        if record is not None:
            threshold = record["threshold"][c]
            columns[f"{name}_decision"] = (pd.array((probs[:, c] >= threshold).astype(int), dtype="Int64")
                                           if np.isfinite(threshold) else pd.array([pd.NA] * len(paths), "Int64"))
    return pd.DataFrame(columns)


def write_overlays(model, batch, probs, paths: list[Path], first: int, classes: list[str], record: dict | None,
                   args) -> list[Path]:
    """Per image of a scored batch (uint8 (B, 1, S, S), probabilities (B, C)): its --heatmap-top most probable
    findings' heatmaps in one PNG, args.heatmaps/<number>_<name>.png. Returns the files."""
    import numpy as np

    from spml.evaluation.heatmaps import heatmaps, overlay_figure

    top = np.argsort(-probs, axis=1, kind="stable")[:, :args.heatmap_top]
    rows = np.repeat(np.arange(len(batch)), top.shape[1])
    tta, model.tta = model.tta, False  # heatmaps explain the plain model
    try:
        maps = heatmaps(model, model.classifier.backbone, batch[rows], top.ravel(), args.heatmap_method)
    finally:
        model.tta = tta
    maps = maps.reshape(len(batch), top.shape[1], *maps.shape[1:])
    out = []
    for k, path in enumerate(paths):
        panels = []
        for j, c in enumerate(top[k]):
            title = f"{classes[c]} p={probs[k, c]:.2f}"
            if record is not None and np.isfinite(record["threshold"][c]):
                called = probs[k, c] >= record["threshold"][c]
                title += f" ({'present' if called else 'absent'} at {record['threshold'][c]:.2f})"
            panels.append((title, maps[k, j]))
        out.append(overlay_figure(batch[k, 0].numpy(), panels,
                                  Path(args.heatmaps) / f"{first + k:05d}_{Path(path).stem}.png"))
    return out


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
    parser.add_argument("--thresholds", help="operating points (default: <run>/thresholds.json if it exists)")
    parser.add_argument("--heatmaps", metavar="DIR", help="write an overlay PNG per image into DIR")
    parser.add_argument("--heatmap-top", type=int, default=3, help="findings shown per overlay (default 3)")
    parser.add_argument("--heatmap-method", default="gradcam",
                        help="gradcam (default) | guided_gradcam | integrated_gradients")
    args = parser.parse_args(argv)

    def predict() -> int:
        import numpy as np
        import pandas as pd
        import torch

        from tqdm.auto import tqdm

        from spml.evaluation.calibration import read_thresholds
        from spml.evaluation.calibrators import describe
        from spml.data.images import ImageError, Intensity, check_image, load_gray
        from spml.data.table import DataError
        from spml.factories import load_model
        from spml.evaluation.heatmaps import HEATMAP_METHODS

        if args.heatmaps:
            HEATMAP_METHODS.get(args.heatmap_method)  # an unknown name fails before any scoring
        model = load_model(args.run, args.checkpoint, tta=args.tta)
        intensity = Intensity.from_settings(model.metadata.get("data", {}))
        tta = list(model.tta_views) if args.tta else []
        thresholds_file = Path(args.thresholds or Path(args.run) / "thresholds.json")
        record = None
        if args.thresholds or thresholds_file.exists():
            record = read_thresholds(thresholds_file, model.classes, model.metadata["source"]["checkpoint_dir"], tta)
        else:
            print(f"no {thresholds_file}: probabilities only, no decisions (tools/evaluate.py {args.run} fits "
                  "operating points)", file=sys.stderr)
        paths, not_scored = find_images(args.images)
        hint = "; --bad-images skip scores the other files and lists this one"
        if args.bad_images == "error":  # stop before scoring when a header already shows the problem
            for path in paths:
                try:
                    check_image(path)
                except ImageError as err:
                    raise DataError(f"{err}{hint}") from None
        scored, probs, images, overlays = [], [], [], []
        bar = tqdm(total=len(paths), desc="predict", unit="img", dynamic_ncols=True)

        def score_batch() -> None:
            batch = torch.from_numpy(np.stack(images))[:, None]
            with torch.no_grad():
                batch_probs = torch.sigmoid(model(batch)).numpy()
            if record is not None:  # the run's calibration (issue 24): the probabilities written are calibrated
                batch_probs = record["calibrator"].apply(batch_probs)
            if args.heatmaps:
                first = len(scored) - len(images)
                overlays.extend(write_overlays(model, batch, batch_probs, scored[first:], first, list(model.classes),
                                               record, args))
            probs.append(batch_probs)
            bar.update(len(images))
            images.clear()

        for path in paths:
            try:
                images.append(load_gray(path, model.image_size, intensity))
            except ImageError as err:
                if args.bad_images == "error":
                    raise DataError(f"{err}{hint}") from None
                not_scored.append((path, err.reason))
                bar.update(1)
                continue
            scored.append(path)
            if len(images) == args.batch_size:
                score_batch()
        if images:
            score_batch()
        bar.close()
        if not_scored:
            report_not_scored(not_scored, Path(args.out))
        if not scored:
            raise DataError(f"none of the {len(paths)} image files could be scored (listed above)")
        frame = prediction_frame(scored, np.concatenate(probs), list(model.classes), record)
        if args.heatmaps:
            frame["heatmap"] = [str(p) for p in overlays]
        frame.to_csv(args.out, index=False, float_format="%.6f")
        decided = (f"; probabilities: {describe(record['calibrator'])}; decisions at the {record['rule']} thresholds "
                   f"of {thresholds_file}" if record else "; raw (uncalibrated) probabilities")
        print(f"wrote {len(frame)} rows x {len(model.classes)} findings to {args.out}{decided}"
              + (f"; heatmaps in {args.heatmaps}" if args.heatmaps else ""))
        return 0

    return run_cli(predict, parser)


if __name__ == "__main__":
    sys.exit(main())
