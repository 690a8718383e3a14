"""Image sources (files, the uint8 cache, in-memory arrays), the CXRDataset of uint8 samples, and loaders.

A source has `__len__` and `load(i) -> uint8 (S, S)`; a bad image raises ImageError (path + reason).
CXRDataset items are the dicts of docs/architecture.md. Under bad_images="skip" a bad image is
logged, warned, kept in `dataset.skipped` and the item is None; `collate_skip_none` drops such items.
Skips are counted per process (each DataLoader worker has its own copy of the dataset); more than
`bad_image_budget` in one process stops the run with a DataError.

Sources with `load_many(indices) -> uint8 (B, S, S)` (the cache, in-memory arrays) are read a batch at a
time: the DataLoader calls `CXRDataset.__getitems__`, which returns the collated batch directly (one read
and one tensor per key instead of B small dicts stacked by default_collate; about 4x fewer CPU cycles per
image, docs/performance.md). A batch holding a bad image falls back to the per-item path.
"""
from __future__ import annotations

import logging
import warnings
from typing import Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from spml.data.cache import ImageCache
from spml.data.images import ImageError, load_gray
from spml.data.table import DataError

log = logging.getLogger(__name__)


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def load(self, i: int) -> np.ndarray:
        """uint8 (S, S) image i; raises ImageError for a bad image."""
        ...


class FileSource:
    """Decode image files on the fly (no cache) at size x size."""

    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.size = [str(p) for p in paths], size

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        return load_gray(self.paths[i], self.size)


class CacheSource:
    """Rows of a uint8 cache (spml.data.cache) for `paths`; missing paths or a size mismatch fail here."""

    def __init__(self, cache_dir: str, paths: Sequence[str], size: int):
        self.cache = ImageCache(cache_dir, size)
        self.rows = self.cache.rows(paths)

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> np.ndarray:
        return self.cache.load(int(self.rows[i]))

    def load_many(self, indices: Sequence[int]) -> np.ndarray | None:
        """uint8 (B, S, S) images `indices`, or None when one of them is bad (then use `load`)."""
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        if not self.cache.ok[rows].all():
            return None
        order = np.argsort(rows, kind="stable")  # ascending rows: forward reads through the memmap
        images = np.empty((len(rows), self.cache.size, self.cache.size), np.uint8)
        images[order] = self.cache.images[rows[order]]
        return images


class ArraySource:
    """In-memory uint8 (N, S, S) images."""

    def __init__(self, images: np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
            raise ValueError(f"ArraySource needs uint8 (N, S, S) images, got {images.dtype} {images.shape}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> np.ndarray:
        return self.images[i]

    def load_many(self, indices: Sequence[int]) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]


class CXRDataset(Dataset):
    """Samples {image uint8 (1,S,S), targets float32 (C,), known bool (C,), observed bool (C,), index int64 ()}.

    targets, known, observed: (N, C) arrays aligned with the source; observed None -> all False.
    bad_images: "error" raises the ImageError; "skip" reports it and returns None (see module docstring).
    """

    def __init__(self, source: ImageSource, targets: np.ndarray, known: np.ndarray, observed: np.ndarray | None = None,
                 bad_images: str = "error", bad_image_budget: int = 10):
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
        self.skipped: list[tuple[int, str, str]] = []  # (index, path, reason) seen in this process

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        try:
            image = self.source.load(index)
        except ImageError as err:
            if self.bad_images == "error":
                raise
            return self.skip(index, err)
        return {"image": torch.from_numpy(np.array(image, np.uint8, copy=True))[None],
                "targets": self.targets[index], "known": self.known[index], "observed": self.observed[index],
                "index": torch.tensor(index, dtype=torch.int64)}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor] | list:
        """The collated batch of `indices` from one `load_many` read, else the list of items
        (sources without `load_many`, or a batch with a bad image); collate_skip_none takes either."""
        load_many = getattr(self.source, "load_many", None)
        images = load_many(indices) if load_many is not None else None
        if images is None:
            return [self[i] for i in indices]
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return {"image": torch.from_numpy(np.ascontiguousarray(images))[:, None],
                "targets": self.targets[index], "known": self.known[index], "observed": self.observed[index],
                "index": index}

    def skip(self, index: int, err: ImageError) -> None:
        self.skipped.append((index, err.path, err.reason))
        message = f"skipping bad image {index} ({len(self.skipped)} in this process): {err}"
        log.warning(message)
        warnings.warn(message, stacklevel=3)
        if len(self.skipped) > self.bad_image_budget:
            raise DataError(f"{len(self.skipped)} bad images skipped in one loader process, over "
                            f"data.bad_image_budget={self.bad_image_budget}; last: {err}. Fix or remove the "
                            "files (or rebuild the cache), or raise data.bad_image_budget")
        return None


def collate_skip_none(items: list[dict[str, torch.Tensor] | None] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """default_collate of the items that are not None (skipped bad images); a batch that
    CXRDataset.__getitems__ already collated passes through."""
    if isinstance(items, dict):
        return items
    kept = [item for item in items if item is not None]
    if not kept:
        raise DataError(f"all {len(items)} images of a batch were bad (see the warnings above); "
                        "fix the data or lower data.bad_image_budget so the run stops earlier")
    return default_collate(kept)
