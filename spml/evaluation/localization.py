"""The pointing game: does a heatmap's maximum fall inside the finding? Per class, against the exact
hit rate of a uniformly random point (the finding's share of the image)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage, stats


def pointing_location(heatmap: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of a heatmap's maximum; None for a flat map (no evidence anywhere).

    A maximum reached on several pixels points at the one nearest the image centre (then the first in row
    order). Bilinear upsampling of a coarse Grad-CAM map places each coarse value at its cell's centre and
    repeats the border cells' values out to the image edge: a border cell's maximum becomes a plateau whose
    innermost pixel is that cell's centre, the only place the value was computed for.

    Args:
        heatmap: the heatmap (S, S).

    Returns:
        (row, column), or None.
    """
    top = heatmap.max()
    if not np.isfinite(top) or top <= heatmap.min():
        return None
    rows, cols = np.nonzero(heatmap >= top)
    centre = (np.asarray(heatmap.shape) - 1) / 2
    nearest = np.argmin((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2)
    return int(rows[nearest]), int(cols[nearest])


def grow(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """The mask (S, S) grown by `tolerance` pixels (a disc of that radius); tolerance 0 returns it as is.

    Args:
        mask: the region, bool.
        tolerance: the growth radius in pixels.

    Returns:
        The grown mask (S, S).
    """
    if tolerance <= 0:
        return mask
    y, x = np.ogrid[-tolerance : tolerance + 1, -tolerance : tolerance + 1]
    return ndimage.binary_dilation(mask, structure=x * x + y * y <= tolerance * tolerance)


def pointing_game(heatmaps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> dict[str, np.ndarray]:
    """Hits and random-point baselines of N heatmaps against their finding's region.

    Args:
        heatmaps: (N, S, S) float, one map per image for the class explained.
        masks: (N, S, S) bool, where the finding is (spml.data.synthetic.lesion_masks).
        tolerance: a point up to this many pixels outside the region still counts (the region is grown by a
            disc; the baseline uses the grown region too, so the comparison stays fair).

    Returns:
        hit (N,) bool: the maximum (pointing_location) lies in the (grown) region; a flat map is a miss.
        flat (N,) bool: the map had no maximum.
        baseline (N,) float: the (grown) region's share of the image, the exact hit probability of a pixel
        drawn uniformly at random.
        points (N, 2) int: the pointing locations (-1 for a flat map).
    """
    if heatmaps.shape != masks.shape or heatmaps.ndim != 3:
        raise ValueError(f"heatmaps {heatmaps.shape} and masks {masks.shape} must share one (N, S, S) shape")
    n = len(heatmaps)
    hit, flat, baseline = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n)
    points = np.full((n, 2), -1, np.int64)
    for i in range(n):
        region = grow(masks[i].astype(bool), tolerance)
        baseline[i] = region.mean()
        point = pointing_location(heatmaps[i])
        if point is None:
            flat[i] = True
            continue
        points[i] = point
        hit[i] = region[point]
    return {"hit": hit, "flat": flat, "baseline": baseline, "points": points}


def wilson_interval(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion hits / n (NaN, NaN for n = 0).

    Args:
        hits: successes.
        n: trials.
        confidence: the interval's confidence level.

    Returns:
        (low, high).
    """
    if n == 0:
        return math.nan, math.nan
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the bounds are exactly 0 and 1 at no hit and all hits (the formula leaves rounding residue there)
    return 0.0 if hits == 0 else centre - half, 1.0 if hits == n else centre + half


def pointing_table(results: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """One row per class from {class: pointing_game(...)}: images, hits, hit_rate with its 95% Wilson
    interval, baseline (mean region share = the random point's expected hit rate), flat maps.

    Args:
        results: {class: pointing_game(...)}.

    Returns:
        The table, one row per class.
    """
    rows = []
    for name, result in results.items():
        n, hits = len(result["hit"]), int(result["hit"].sum())
        low, high = wilson_interval(hits, n)
        rows.append(
            {
                "class": name,
                "images": n,
                "hits": hits,
                "hit_rate": hits / n if n else math.nan,
                "ci_low": low,
                "ci_high": high,
                "baseline": float(result["baseline"].mean()) if n else math.nan,
                "flat_maps": int(result["flat"].sum()),
            }
        )
    return pd.DataFrame(
        rows, columns=["class", "images", "hits", "hit_rate", "ci_low", "ci_high", "baseline", "flat_maps"]
    )
