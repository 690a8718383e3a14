"""The pointing game: pointing locations, hits, tolerance, the exact random-point baseline, Wilson intervals."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spml.evaluation.localization import grow, pointing_game, pointing_location, pointing_table, wilson_interval


def test_pointing_location_is_the_maximum_or_the_innermost_pixel_of_a_plateau():
    heatmap = np.zeros((8, 8))
    heatmap[2, 5] = 1.0
    assert pointing_location(heatmap) == (2, 5)
    heatmap[:, :] = 0.0
    heatmap[0:2, 0:4] = 3.0  # a plateau reaching the border
    assert pointing_location(heatmap) == (1, 3)  # its pixel nearest the image centre (3.5, 3.5)
    assert pointing_location(np.ones((8, 8))) is None and pointing_location(np.zeros((8, 8))) is None
    # a 2 x 2 map upsampled bilinearly (align_corners=False, as Grad-CAM's): the top-left cell's centre
    coarse = torch.tensor([[[[4.0, 1.0], [2.0, 3.0]]]])
    upsampled = F.interpolate(coarse, size=(64, 64), mode="bilinear")[0, 0].numpy()
    assert pointing_location(upsampled) == (15, 15)  # cell centre 15.5: the plateau ends at pixel 15


def test_hits_misses_flat_maps_and_the_exact_baseline():
    masks = np.zeros((3, 10, 10), bool)
    masks[:, 2:4, 2:7] = True  # 10 of 100 pixels
    heatmaps = np.zeros((3, 10, 10))
    heatmaps[0, 3, 6] = 1.0  # inside
    heatmaps[1, 8, 8] = 1.0  # outside
    result = pointing_game(heatmaps, masks)  # the third map is flat
    assert result["hit"].tolist() == [True, False, False] and result["flat"].tolist() == [False, False, True]
    assert np.allclose(result["baseline"], 0.10)
    assert result["points"].tolist() == [[3, 6], [8, 8], [-1, -1]]
    # the baseline is the hit rate of a uniform random point: brute force over every pixel
    every_pixel = np.stack([np.where(np.arange(100).reshape(10, 10) == k, 1.0, 0.0) for k in range(100)])
    brute = pointing_game(every_pixel, np.repeat(masks[:1], 100, 0))["hit"].mean()
    assert brute == pytest.approx(result["baseline"][0])


def test_tolerance_grows_the_region_and_its_baseline():
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 10, 10] = True
    heatmap = np.zeros((1, 20, 20))
    heatmap[0, 10, 12] = 1.0  # two pixels to the right
    assert not pointing_game(heatmap, mask, tolerance=1)["hit"][0]
    wide = pointing_game(heatmap, mask, tolerance=2)
    assert wide["hit"][0] and wide["baseline"][0] == pytest.approx(grow(mask[0], 2).mean())
    assert grow(mask[0], 2).sum() == 13  # the pixels within distance 2 of one pixel


def test_wilson_interval_matches_published_values_and_the_table():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    hit = np.array([True, True, False, True])
    table = pointing_table({"Nodule": {"hit": hit, "flat": np.zeros(4, bool), "baseline": np.full(4, 0.02)}})
    row = table.iloc[0]
    assert (row["images"], row["hits"], row["hit_rate"], row["baseline"]) == (4, 3, 0.75, pytest.approx(0.02))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson_interval(3, 4))
