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
from spml.evaluation.predict import predict_files
from spml.factories import load_model


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (holds config.yaml and checkpoints/)")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--out", default="predictions.csv")
    parser.add_argument("--checkpoint", default="latest", choices=["latest", "best"])
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--bad-images",
        default="skip",
        choices=["skip", "error"],
        help="an unreadable image: skip lists it as not scored (default), error stops naming it",
    )
    parser.add_argument("--thresholds", help="operating points (default: <run>/thresholds.json if it exists)")
    parser.add_argument("--heatmaps", metavar="DIR", help="write an overlay PNG per image into DIR")
    parser.add_argument("--heatmap-top", type=int, default=3, help="findings shown per overlay (default 3)")
    parser.add_argument(
        "--heatmap-method", default="gradcam", help="gradcam (default) | guided_gradcam | integrated_gradients"
    )
    return parser


def predict(args: argparse.Namespace) -> int:
    predict_files(
        load_model(args.run, args.checkpoint, tta=args.tta),
        args.images,
        Path(args.out),
        Path(args.thresholds or Path(args.run) / "thresholds.json"),
        thresholds_required=bool(args.thresholds),
        batch_size=args.batch_size,
        bad_images=args.bad_images,
        heatmaps_dir=Path(args.heatmaps) if args.heatmaps else None,
        heatmap_top=args.heatmap_top,
        heatmap_method=args.heatmap_method,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    return run_cli(lambda: predict(args), cli)


if __name__ == "__main__":
    sys.exit(main())
