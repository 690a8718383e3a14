"""Image sources (files, the uint8 cache, in-memory arrays), the CXRDataset of uint8 samples, and loaders.

A source has `__len__` and `load(i) -> uint8 (S, S)`; a bad image raises ImageError (path + reason).
CXRDataset items are the dicts of docs/architecture.md. Under bad_images="skip" a bad image is
logged, warned, kept in `dataset.skipped` and the item is None; `collate_skip_none` drops such items, and a
batch whose every image is bad comes back with zero rows (the trainer and predict_split pass over it).
The budget counts distinct bad images: with `log_skips_to(file)` (the Trainer points every split at
<run>/skipped_images.csv) each skip is appended to that file, shared by all processes and DataLoader
workers, and the count is run-wide; without it, it is per process (each worker has its own copy of
the dataset). More than `bad_image_budget` stops the run with a DataError. The images the header check
left out before training (spml.data.build) are rows of that file too, with an empty index (they were
never part of their split's dataset), and count against the same budget.

Sources with `load_many(indices) -> uint8 (B, S, S)` (the cache, in-memory arrays) are read a batch at a
time: the DataLoader calls `CXRDataset.__getitems__`, which returns the collated batch directly (one read
and one tensor per key instead of B small dicts stacked by default_collate; about 4x fewer CPU cycles per
image, docs/performance.md). A batch holding a bad image falls back to the per-item path.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from spml.data.cache import ImageCache
from spml.data.images import ImageError, Intensity, load_gray
from spml.data.table import DataError

log = logging.getLogger(__name__)
SKIP_COLUMNS = ("split", "index", "path", "reason")  # header of the skipped-images file


class ImageSource(Protocol):
    """What CXRDataset reads images from: `__len__` and `load(i) -> uint8 (S, S)`."""

    def __len__(self) -> int: ...

    def load(self, i: int) -> np.ndarray:
        """uint8 (S, S) image i; raises ImageError for a bad image.

        Args:
            i: the image's index.

        Returns:
            uint8 (S, S).
        """
        ...


class FileSource:
    """Decode image files on the fly (no cache) at size x size under `intensity` (data.intensity*).

    Args:
        paths: the image files.
        size: the output side in pixels.
        intensity: the intensity policy.
    """

    def __init__(self, paths: Sequence[str], size: int, intensity: Intensity = Intensity()):
        self.paths, self.size, self.intensity = [str(p) for p in paths], size, intensity

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        """Decode image file i; ImageError for a bad image.

        Args:
            i: the image's index.

        Returns:
            uint8 (size, size).
        """
        return load_gray(self.paths[i], self.size, self.intensity)


class CacheSource:
    """Rows of a uint8 cache (spml.data.cache) for `paths`.

    Missing paths, a size or an intensity policy mismatch fail here.

    Args:
        cache_dir: the cache folder.
        paths: the image paths, in source order.
        size: the expected image side (data.size).
        intensity: the expected intensity policy.
    """

    def __init__(self, cache_dir: str, paths: Sequence[str], size: int, intensity: Intensity = Intensity()):
        self.cache = ImageCache(cache_dir, size, intensity)
        self.rows = self.cache.rows(paths)

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> np.ndarray:
        """Image i from its cache row; ImageError with the recorded reason for a bad image.

        Args:
            i: the image's index.

        Returns:
            uint8 (S, S).
        """
        return self.cache.load(int(self.rows[i]))

    def load_many(self, indices: Sequence[int]) -> np.ndarray | None:
        """Images `indices` in one read, or None when one of them is bad (then use `load`).

        Args:
            indices: the images' indices.

        Returns:
            uint8 (B, S, S), or None.
        """
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        if not self.cache.ok[rows].all():
            return None
        order = np.argsort(rows, kind="stable")  # ascending rows: forward reads through the memmap
        images = np.empty((len(rows), self.cache.size, self.cache.size), np.uint8)
        images[order] = self.cache.images[rows[order]]
        return images


class ArraySource:
    """In-memory uint8 (N, S, S) images (anything else is a ValueError).

    Args:
        images: uint8 (N, S, S).
    """

    def __init__(self, images: np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
            raise ValueError(f"ArraySource needs uint8 (N, S, S) images, got {images.dtype} {images.shape}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> np.ndarray:
        """Image i.

        Args:
            i: the image's index.

        Returns:
            uint8 (S, S) (a view of the array).
        """
        return self.images[i]

    def load_many(self, indices: Sequence[int]) -> np.ndarray:
        """Images `indices`.

        Args:
            indices: the images' indices.

        Returns:
            uint8 (B, S, S).
        """
        return self.images[np.asarray(indices, dtype=np.int64)]


class CXRDataset(Dataset):
    """Samples {image uint8 (1,S,S), targets float32 (C,), known bool (C,), observed bool (C,), index int64 ()}.

    Bad images: "error" raises the ImageError; "skip" reports it and returns None (see module docstring).

    Args:
        source: the images (an ImageSource).
        targets: (N, C) targets aligned with the source.
        known: (N, C) bool, which targets are known.
        observed: (N, C) bool observed positives; None -> all False.
        bad_images: "error" | "skip" (data.bad_images).
        bad_image_budget: distinct bad images tolerated under "skip" before a DataError.

    Shape:
        - Item image: (1, S, S) uint8; targets, known, observed: (C,).
    """

    def __init__(
        self,
        source: ImageSource,
        targets: np.ndarray,
        known: np.ndarray,
        observed: np.ndarray | None = None,
        bad_images: str = "error",
        bad_image_budget: int = 10,
    ):
        if bad_images not in ("error", "skip"):
            raise DataError(f"data.bad_images={bad_images!r}; choose from ['error', 'skip']")
        n = len(source)
        observed = np.zeros_like(known, dtype=bool) if observed is None else observed
        for name, array in (("targets", targets), ("known", known), ("observed", observed)):
            if array.ndim != 2 or len(array) != n:
                raise ValueError(f"CXRDataset: {name} has shape {array.shape}, expected ({n}, C) for {n} images")
        self.source = source
        self.targets = torch.as_tensor(np.asarray(targets, np.float32))
        self.known = torch.as_tensor(np.asarray(known, bool))
        self.observed = torch.as_tensor(np.asarray(observed, bool))
        self.bad_images, self.bad_image_budget = bad_images, bad_image_budget
        self.skipped: list[tuple[int, str, str]] = []  # distinct (index, path, reason) seen in this process
        self.skip_log: Path | None = None
        self.split = ""

    def log_skips_to(self, path: str | os.PathLike, split: str) -> None:
        """Append every skip of this dataset to the CSV `path` and count the budget over the distinct rows of that file.

        The file has SKIP_COLUMNS and is created with its header if absent.

        Args:
            path: the skipped-images file.
            split: the split name written with each skip.
        """
        self.skip_log, self.split = Path(path), split
        self.skip_log.parent.mkdir(parents=True, exist_ok=True)
        try:  # "x": of several processes starting at once, exactly one writes the header
            with open(self.skip_log, "x", encoding="utf-8") as handle:
                handle.write(",".join(SKIP_COLUMNS) + "\n")
        except FileExistsError:
            pass

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        try:
            image = self.source.load(index)
        except ImageError as err:
            if self.bad_images == "error":
                raise
            return self.skip(index, err)
        return {
            "image": torch.from_numpy(np.array(image, np.uint8, copy=True))[None],
            "targets": self.targets[index],
            "known": self.known[index],
            "observed": self.observed[index],
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor] | list:
        """The collated batch of `indices` from one `load_many` read, else the list of items
        (sources without `load_many`, or a batch with a bad image); collate_skip_none takes either."""
        load_many = getattr(self.source, "load_many", None)
        images = load_many(indices) if load_many is not None else None
        if images is None:
            items = [self[i] for i in indices]
            return items if any(item is not None for item in items) else self.empty_batch()
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(images))[:, None],
            "targets": self.targets[index],
            "known": self.known[index],
            "observed": self.observed[index],
            "index": index,
        }

    def empty_batch(self) -> dict[str, torch.Tensor]:
        """A batch with zero rows (every image of it was bad); its image has no pixels either."""
        none = torch.empty(0, dtype=torch.int64)
        return {
            "image": torch.empty(0, 1, 0, 0, dtype=torch.uint8),
            "targets": self.targets[none],
            "known": self.known[none],
            "observed": self.observed[none],
            "index": none,
        }

    def skip(self, index: int, err: ImageError) -> None:
        """Report bad image `index` (log, warning, `skipped`, the skip file) and stop the run over the budget.

        A DataError when the distinct bad images exceed bad_image_budget.

        Args:
            index: the item's index.
            err: the ImageError.
        """
        if all(seen != index for seen, _, _ in self.skipped):
            self.skipped.append((index, err.path, err.reason))
        if self.skip_log is None:
            count, where = len(self.skipped), "in this process"
        else:
            append_line(self.skip_log, (self.split, index, err.path, err.reason))
            count, where = len(distinct_skips(self.skip_log)), f"listed in {self.skip_log}"
        message = f"skipping bad image {index} ({count} distinct bad images {where}): {err}"
        log.warning(message)
        warnings.warn(message, stacklevel=3)
        if count > self.bad_image_budget:
            raise DataError(
                f"{count} distinct bad images skipped ({where}), over data.bad_image_budget="
                f"{self.bad_image_budget}; last: {err}. Fix or remove the files (or rebuild the "
                "cache), or raise data.bad_image_budget"
            )
        return None


def append_line(path: Path, fields: Sequence) -> None:
    """Append one CSV row with a single O_APPEND write (rows of concurrent workers do not interleave).

    Args:
        path: the CSV file (created if absent).
        fields: the row's values.
    """
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(handle, buffer.getvalue().encode("utf-8"))
    finally:
        os.close(handle)


def read_skips(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a skipped-images file (one per skip event, repeats included).

    Args:
        path: the skipped-images file.

    Returns:
        One dict per row (SKIP_COLUMNS).
    """
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def distinct_skips(path: str | os.PathLike) -> set[tuple[str, str]]:
    """Distinct (split, path) pairs of a skipped-images file (an image is listed once per skip event).

    Args:
        path: the skipped-images file.

    Returns:
        The pairs.
    """
    return {(row["split"], row["path"]) for row in read_skips(path)}


def record_left_out(path: str | os.PathLike, left_out: Sequence[tuple[str, str, str]]) -> None:
    """Append the images the header check left out to the skipped-images file `path` (with an empty index).

    Args:
        path: the skipped-images file.
        left_out: (split, path, reason) per image.
    """
    for split, image, reason in left_out:
        append_line(Path(path), (split, "", image, reason))


def collate_skip_none(items: list[dict[str, torch.Tensor] | None] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """default_collate of the items that are not None (skipped bad images).

    A batch that CXRDataset.__getitems__ already collated passes through; a batch whose every item is None is a
    DataError.

    Args:
        items: the items, or an already collated batch.

    Returns:
        The batch: image (B, 1, S, S) uint8, targets, known, observed (B, C), index (B,).
    """
    if isinstance(items, dict):
        return items
    kept = [item for item in items if item is not None]
    if not kept:
        raise DataError(
            f"all {len(items)} images of a batch were bad (see the warnings above); "
            "fix the data or lower data.bad_image_budget so the run stops earlier"
        )
    return default_collate(kept)
