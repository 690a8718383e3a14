"""The decode-once uint8 image cache: images.u8 (N, S, S) memmap + index.csv + meta.json in one folder.

images.u8 is C-contiguous uint8, one image per row, so reading an image is one contiguous read.
index.csv has columns path, row, ok, error (bad images keep a zero row, ok=False and the reason), bytes and
mtime_ns (each source file's size and modification time when it was decoded: `ImageCache.changed` finds files
re-exported since; -1 for a file that did not exist).
meta.json holds size, count, failed, created, source_hash (sha256 of the newline-joined path list) and
intensity (the data.intensity policy the images were decoded under; a cache is refused under another one).
The three files are written under temporary names and renamed at the end, meta.json last: a build
that fails leaves no final files (and an older cache in the folder is invalidated, never half-replaced).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from tqdm import tqdm

from spml.data.images import ImageError, Intensity, image_error, load_gray
from spml.data.table import DataError
from spml.utils.io import atomic_path

IMAGES, INDEX, META = "images.u8", "index.csv", "meta.json"


def paths_hash(paths: Sequence[str]) -> str:
    """sha256 of the newline-joined path list (identifies what a cache was built from).

    Args:
        paths: the image paths, in cache order.

    Returns:
        The hex digest.
    """
    return hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()


def file_stamp(path: str) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a file; (-1, -1) when it cannot be read.

    Args:
        path: the file.

    Returns:
        (bytes, mtime_ns).
    """
    try:
        info = os.stat(path)
    except OSError:
        return -1, -1
    return info.st_size, info.st_mtime_ns


def decode_or_reason(path: str, size: int, intensity: Intensity) -> tuple[np.ndarray | None, str]:
    """Decode one image, or say why it is bad; other errors propagate.

    Args:
        path: the image file.
        size: the output side in pixels.
        intensity: the intensity policy.

    Returns:
        (uint8 (size, size), "") or (None, reason) for a bad image.
    """
    try:
        return load_gray(path, size, intensity), ""
    except ImageError as err:
        return None, err.reason


def build_cache(
    paths: Sequence[str],
    size: int,
    out_dir: str,
    workers: int = 2,
    progress: bool = True,
    chunksize: int = 16,
    intensity: Intensity = Intensity(),
) -> ImageCache:
    """Decode `paths` at size x size under `intensity` into `out_dir` (see the module docstring) and open it.

    Bad images are recorded in index.csv (ok=False, error) and logged by the caller from `ImageCache.failed`; any
    other error aborts the build and removes the temporary files. An empty or repeated path list is a ValueError.

    Args:
        paths: the image files, in cache-row order.
        size: the images' side in pixels.
        out_dir: the cache folder.
        workers: decoding processes (0 or 1 decodes in this process).
        progress: show a progress bar.
        chunksize: paths per task sent to a decoding process.
        intensity: the intensity policy (data.intensity*).

    Returns:
        The ImageCache.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("build_cache: the path list is empty")
    repeated = pd.Index(paths).duplicated()
    if repeated.any():
        first = paths[int(np.argmax(repeated))]
        raise ValueError(f"build_cache: {int(repeated.sum())} duplicate paths, e.g. {first!r}")
    os.makedirs(out_dir, exist_ok=True)
    final = {name: os.path.join(out_dir, name) for name in (IMAGES, INDEX, META)}
    # spml.utils.io.atomic_path renames each file when its block ends, innermost first: images, index, meta last
    with (
        atomic_path(final[META]) as meta_path,
        atomic_path(final[INDEX]) as index_path,
        atomic_path(final[IMAGES]) as images_path,
    ):
        images = np.memmap(images_path, np.uint8, "w+", shape=(len(paths), size, size))
        errors = [""] * len(paths)
        bar = tqdm(total=len(paths), unit="img", desc=f"cache {size}px", disable=not progress, mininterval=1.0)
        with bar:
            if workers > 1:
                with ProcessPoolExecutor(workers) as pool:
                    try:
                        results = pool.map(
                            decode_or_reason, paths, [size] * len(paths), [intensity] * len(paths), chunksize=chunksize
                        )
                        for row, (image, reason) in enumerate(results):
                            images[row], errors[row] = (0 if image is None else image), reason
                            bar.update()
                    finally:  # an error or Ctrl-C: the queued decodes are dropped, not waited for
                        pool.shutdown(cancel_futures=True)
            else:
                for row, path in enumerate(paths):
                    image, errors[row] = decode_or_reason(path, size, intensity)
                    images[row] = 0 if image is None else image
                    bar.update()
        images.flush()
        del images
        ok = [not reason for reason in errors]
        index = pd.DataFrame(
            {
                "path": paths,
                "row": range(len(paths)),
                "ok": ok,
                "error": errors,
                **dict(zip(("bytes", "mtime_ns"), np.array([file_stamp(p) for p in paths]).T)),
            }
        )
        index.to_csv(index_path, index=False)
        meta = {
            "size": size,
            "count": len(paths),
            "failed": len(paths) - sum(ok),
            "dtype": "uint8",
            "layout": "images.u8 is (count, size, size) C-order",
            "source_hash": paths_hash(paths),
            "intensity": intensity.as_json(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        meta_path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if os.path.exists(final[META]):
            os.remove(final[META])  # the old cache is invalid from here on, before its images are replaced
    return ImageCache(out_dir, size, intensity)


def policy_text(policy: dict) -> str:
    """An intensity policy as the config keys that set it.

    Args:
        policy: Intensity.as_json() of a policy.

    Returns:
        "data.intensity=... data.intensity_percentiles=...".
    """
    return f"data.intensity={policy['policy']} data.intensity_percentiles={policy['percentiles']}"


def check_intensity(cache_dir: str, built: dict | None, wanted: Intensity) -> None:
    """DataError naming both policies when a cache was decoded under another intensity policy than `wanted`.

    Args:
        cache_dir: the cache folder (named in the error).
        built: the policy recorded in meta.json (None: a cache built before data.intensity existed).
        wanted: the run's policy.
    """
    if built == wanted.as_json():
        return
    before = (
        policy_text(built)
        if built
        else (
            "no recorded policy (built before data.intensity existed; 16-bit "
            "images were then scaled by their own maximum)"
        )
    )
    advice = f"or train with {policy_text(built)}" if built else "(8-bit images decode as before)"
    raise DataError(
        f"cache {cache_dir} was decoded with {before}, this run asks for "
        f"{policy_text(wanted.as_json())}; rebuild it with tools/prepare_data.py {advice}"
    )


class ImageCache:
    """Read-only view of a cache folder.

    `size` (data.size) and `intensity` (data.intensity*) must match those the cache was built with when given
    (a DataError otherwise, as for a folder that is no cache or whose files disagree).

    Args:
        cache_dir: the cache folder.
        size: the expected image side (None: not checked).
        intensity: the expected intensity policy (None: not checked).
    """

    def __init__(self, cache_dir: str, size: int | None = None, intensity: Intensity | None = None):
        self.dir = str(cache_dir)
        meta_path = os.path.join(self.dir, META)
        if not os.path.isfile(meta_path):
            raise DataError(
                f"{self.dir} is not an image cache (no {META}); build one with "
                f"tools/prepare_data.py or clear data.cache"
            )
        with open(meta_path, encoding="utf-8") as handle:
            self.meta = json.load(handle)
        self.size, self.count = int(self.meta["size"]), int(self.meta["count"])
        if size is not None and size != self.size:
            raise DataError(
                f"cache {self.dir} holds {self.size}px images but data.size={size}; rebuild it with "
                f"tools/prepare_data.py --size {size} or set data.size={self.size}"
            )
        if intensity is not None:
            check_intensity(self.dir, self.meta.get("intensity"), intensity)
        expected = self.count * self.size * self.size
        actual = os.path.getsize(os.path.join(self.dir, IMAGES))
        if actual != expected:
            raise DataError(
                f"{os.path.join(self.dir, IMAGES)} has {actual} bytes, meta.json says "
                f"{self.count} x {self.size} x {self.size} = {expected}; rebuild the cache"
            )
        self.index = pd.read_csv(
            os.path.join(self.dir, INDEX), dtype={"path": str, "error": str}, keep_default_na=False
        )
        if len(self.index) != self.count:
            raise DataError(
                f"{os.path.join(self.dir, INDEX)} has {len(self.index)} rows, meta.json says "
                f"{self.count}; rebuild the cache"
            )
        self.ok = self.index["ok"].to_numpy(dtype=bool)
        self._lookup = pd.Index(self.index["path"])
        self._images: np.memmap | None = None

    @property
    def images(self) -> np.memmap:
        """uint8 (count, size, size) read-only memmap, opened lazily in each process."""
        if self._images is None:
            self._images = np.memmap(
                os.path.join(self.dir, IMAGES), np.uint8, "r", shape=(self.count, self.size, self.size)
            )
        return self._images

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}  # DataLoader workers reopen the memmap, not copy it

    def __len__(self) -> int:
        return self.count

    @property
    def failed(self) -> pd.DataFrame:
        """Index rows (path, row, ok, error) of images that could not be decoded."""
        return self.index[~self.ok]

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Cache rows of `paths`; DataError naming the paths the cache does not hold.

        Args:
            paths: image paths.

        Returns:
            (N,) int64.
        """
        rows = self._lookup.get_indexer(pd.Index([str(p) for p in paths]))
        absent = np.flatnonzero(rows < 0)
        if absent.size:
            examples = [str(paths[i]) for i in absent[:5]]
            raise DataError(
                f"cache {self.dir} has no entry for {absent.size} of {len(paths)} images, e.g. "
                f"{examples}; rebuild it with tools/prepare_data.py for this dataset"
            )
        return rows.astype(np.int64)

    def holds(self, paths: Sequence[str]) -> np.ndarray:
        """Whether the cache has an entry for each path.

        Args:
            paths: image paths.

        Returns:
            (N,) bool.
        """
        return self._lookup.get_indexer(pd.Index([str(p) for p in paths])) >= 0

    def changed(self, paths: Sequence[str]) -> pd.DataFrame | None:
        """The cached `paths` whose source file now differs in size or modification time from when it was decoded.

        One stat per file; files that are gone are not changed: the cache may travel without them.

        Args:
            paths: image paths the cache holds.

        Returns:
            Rows (path, then, now), or None when the cache predates the recorded stamps.
        """
        if "mtime_ns" not in self.index:
            return None
        recorded = self.index.iloc[self.rows(paths)]
        now = np.array([file_stamp(p) for p in recorded["path"]]).reshape(-1, 2)
        then = recorded[["bytes", "mtime_ns"]].to_numpy(dtype=np.int64)
        differs = (now[:, 0] >= 0) & (then[:, 0] >= 0) & (now != then).any(axis=1)
        return pd.DataFrame(
            {
                "path": recorded["path"].to_numpy()[differs],
                "then": [f"{b} bytes, modified {t}" for b, t in then[differs]],
                "now": [f"{b} bytes, modified {t}" for b, t in now[differs]],
            }
        )

    def load(self, row: int) -> np.ndarray:
        """A copy of cache row `row`; ImageError with the recorded reason for a bad image.

        Args:
            row: the cache row.

        Returns:
            uint8 (size, size).
        """
        if not self.ok[row]:
            raise image_error(self.index["path"].iat[row], f"{self.index['error'].iat[row]} (recorded in {self.dir})")
        return np.array(self.images[row])
