"""Per-finding probabilities (and decisions at the run's operating points) for image files on disk, with optional
heatmap overlays: what tools/predict.py writes (its docstring describes the files).

The model is an InferenceModel (spml.load_model); images are decoded as in training (its data.size and
data.intensity); the probabilities are calibrated by the operating points' calibrator (eval.calibration).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from spml.data.images import ImageError, Intensity, check_image, is_dicom, load_gray
from spml.data.table import DataError
from spml.evaluation.calibrators import describe
from spml.evaluation.heatmaps import HEATMAP_METHODS, heatmaps, overlay_figure
from spml.evaluation.thresholds import read_thresholds
from spml.models.inference import InferenceModel

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"}
SHOWN = 20  # not-scored files printed (all of them are in the _not_scored.csv file)


def find_images(items: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files to score, [(file, reason)] for the files of the folders that are not images).
    Files named explicitly are always scored (or reported as bad images).

    Args:
        items: image files or folders (searched recursively).

    Returns:
        (image files, [(file, reason)]).

    Raises:
        FileNotFoundError: an item does not exist, or no image file was found.
    """
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
                    others.append(
                        (
                            path,
                            f"not an image file (suffix {path.suffix or 'none'}, no DICOM header; "
                            f"images: {' '.join(sorted(IMAGE_SUFFIXES))} or DICOM)",
                        )
                    )
        elif item.exists():
            images.append(item)
        else:
            raise FileNotFoundError(f"{item} does not exist")
    if not images:
        raise FileNotFoundError(f"no image files found in {items} ({len(others)} other files)")
    return images, others


def report_not_scored(not_scored: list[tuple[Path, str]], out: Path) -> None:
    """Write `<out stem>_not_scored.csv` and print the first files with their reasons.

    Args:
        not_scored: [(file, reason)].
        out: the predictions CSV whose stem names the file.
    """
    file = out.with_name(f"{out.stem}_not_scored.csv")
    pd.DataFrame(not_scored, columns=["path", "reason"]).astype(str).to_csv(file, index=False)
    print(f"not scored: {len(not_scored)} files -> {file}", file=sys.stderr)
    for path, reason in not_scored[:SHOWN]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(not_scored) > SHOWN:
        print(f"  ... ({len(not_scored) - SHOWN} more in {file})", file=sys.stderr)


def prediction_frame(paths: list[Path], probs, classes: list[str], record: dict | None):
    """path, then per finding its probability and (with operating points) its decision column.

    Args:
        paths: the scored files.
        probs: their probabilities (N, C).
        classes: the C finding names.
        record: the operating points (read_thresholds), or None: no decision columns.

    Returns:
        The frame, one row per file.
    """
    columns: dict[str, object] = {"path": [str(p) for p in paths]}
    for c, name in enumerate(classes):
        columns[name] = probs[:, c]
        if record is not None:
            threshold = record["threshold"][c]
            columns[f"{name}_decision"] = (
                pd.array((probs[:, c] >= threshold).astype(int), dtype="Int64")
                if np.isfinite(threshold)
                else pd.array([pd.NA] * len(paths), "Int64")
            )
    return pd.DataFrame(columns)


def write_overlays(
    model: InferenceModel,
    batch: torch.Tensor,
    probs: np.ndarray,
    paths: list[Path],
    first: int,
    record: dict | None,
    folder: Path,
    top_k: int,
    method: str,
) -> list[Path]:
    """Per image of a scored batch (uint8 (B, 1, S, S), probabilities (B, C)): the heatmaps of its `top_k` most
    probable findings (`method`, of the model without TTA) in one PNG, folder/<number>_<name>.png. Returns the
    files.

    Args:
        model: the InferenceModel.
        batch: the scored images, uint8 (B, 1, S, S).
        probs: their probabilities (B, C).
        paths: their files.
        first: the number of the batch's first image.
        record: the operating points (titles name the decisions), or None.
        folder: where the PNGs go.
        top_k: findings per image.
        method: the heatmap method.

    Returns:
        The PNG files.
    """
    classes = list(model.classes)
    plain = model.with_tta(False)  # heatmaps explain the model without TTA
    top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    rows = np.repeat(np.arange(len(batch)), top.shape[1])
    maps = heatmaps(plain, plain.classifier.backbone, batch[rows], top.ravel(), method)
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
        out.append(overlay_figure(batch[k, 0].numpy(), panels, Path(folder) / f"{first + k:05d}_{Path(path).stem}.png"))
    return out


def operating_points(model: InferenceModel, file: Path, required: bool) -> dict | None:
    """The operating points in `file` (thresholds.json) for this model's checkpoint and TTA views; None (said on
    the console) when the file is absent and not `required`.

    Args:
        model: the InferenceModel.
        file: the thresholds.json.
        required: an absent file is an error.

    Returns:
        The read_thresholds record, or None.
    """
    if required or file.exists():
        tta = list(model.tta_views) if model.tta else []
        return read_thresholds(file, model.classes, model.metadata["source"]["checkpoint_dir"], tta)
    print(
        f"no {file}: probabilities only, no decisions (tools/evaluate.py on the run fits operating points)",
        file=sys.stderr,
    )
    return None


def predict_files(
    model: InferenceModel,
    items: list[str],
    out: Path,
    thresholds: Path,
    *,
    thresholds_required: bool = False,
    batch_size: int = 64,
    bad_images: str = "skip",
    heatmaps_dir: Path | None = None,
    heatmap_top: int = 3,
    heatmap_method: str = "gradcam",
) -> pd.DataFrame:
    """Score the image files of `items` (files, folders searched recursively) into the CSV `out`.

    Args:
        model: the InferenceModel (with or without TTA).
        items: image files or folders.
        out: the CSV (and <out stem>_not_scored.csv when files were not scored).
        thresholds: the operating points file.
        thresholds_required: an absent thresholds file is an error, not a note.
        batch_size: images per forward.
        bad_images: "skip" (listed as not scored) or "error" (a DataError naming the file, before any scoring
            when its header already shows the problem).
        heatmaps_dir: write an overlay PNG per image there (column `heatmap`).
        heatmap_top: findings per overlay.
        heatmap_method: the heatmap method (HEATMAP_METHODS).

    Returns:
        The written frame: path, per finding its probability and decision column (and heatmap).
    """
    if heatmaps_dir:
        HEATMAP_METHODS.get(heatmap_method)  # an unknown name fails before any scoring
    intensity = Intensity.from_settings(model.metadata.get("data", {}))
    record = operating_points(model, Path(thresholds), thresholds_required)
    paths, not_scored = find_images(items)
    hint = "; --bad-images skip scores the other files and lists this one"
    if bad_images == "error":  # stop before scoring when a header already shows the problem
        for path in paths:
            try:
                check_image(path)
            except ImageError as err:
                raise DataError(f"{err}{hint}") from None
    scored: list[Path] = []
    probs: list[np.ndarray] = []
    overlays: list[Path] = []
    images: list[np.ndarray] = []
    bar = tqdm(total=len(paths), desc="predict", unit="img", dynamic_ncols=True)
    for position, path in enumerate(paths):
        try:
            images.append(load_gray(path, model.image_size, intensity))
            scored.append(path)
        except ImageError as err:
            if bad_images == "error":
                raise DataError(f"{err}{hint}") from None
            not_scored.append((path, err.reason))
        if images and (len(images) == batch_size or position == len(paths) - 1):
            batch = torch.from_numpy(np.stack(images))[:, None]
            with torch.no_grad():
                batch_probs = torch.sigmoid(model(batch)).numpy()
            if record is not None:  # the run's calibration: the probabilities written are calibrated
                batch_probs = record["calibrator"].apply(batch_probs)
            if heatmaps_dir:
                first = len(scored) - len(images)
                overlays += write_overlays(
                    model, batch, batch_probs, scored[first:], first, record, heatmaps_dir, heatmap_top, heatmap_method
                )
            probs.append(batch_probs)
            images.clear()
        bar.update(1)
    bar.close()
    if not_scored:
        report_not_scored(not_scored, Path(out))
    if not scored:
        raise DataError(f"none of the {len(paths)} image files could be scored (listed above)")
    frame = prediction_frame(scored, np.concatenate(probs), list(model.classes), record)
    if heatmaps_dir:
        frame["heatmap"] = [str(p) for p in overlays]
    frame.to_csv(out, index=False, float_format="%.6f")
    decided = (
        f"; probabilities: {describe(record['calibrator'])}; decisions at the {record['rule']} thresholds "
        f"of {thresholds}"
        if record
        else "; raw (uncalibrated) probabilities"
    )
    print(
        f"wrote {len(frame)} rows x {len(model.classes)} findings to {out}{decided}"
        + (f"; heatmaps in {heatmaps_dir}" if heatmaps_dir else "")
    )
    return frame
