"""Image sources, CXRDataset items, bad-image skipping under a budget, and the seeded loader."""

import numpy as np
import pytest
import torch
from PIL import Image

from spml.data.cache import build_cache
from spml.data.dataset import ArraySource, CacheSource, CXRDataset, FileSource, collate_skip_none
from spml.data.images import ImageError
from spml.data.table import DataError

C = 3


@pytest.fixture
def files(tmp_path):
    """Five 20 px PNGs, the 2nd and 4th of them corrupt -> list of paths."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        if i in (1, 3):
            path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        else:
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def labels(n):
    targets = (np.arange(n * C).reshape(n, C) % 2).astype(np.float32)
    return targets, np.ones((n, C), bool)


def test_item_keys_dtypes_and_shapes():
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16), dtype=np.uint8)
    targets, known = labels(4)
    observed = np.zeros((4, C), bool)
    observed[2, 1] = True
    item = CXRDataset(ArraySource(images), targets, known, observed)[2]
    assert set(item) == {"image", "targets", "known", "observed", "index"}
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (1, 16, 16)
    assert torch.equal(item["image"][0], torch.from_numpy(images[2]))
    assert item["targets"].dtype == torch.float32 and torch.equal(item["targets"], torch.from_numpy(targets[2]))
    assert item["known"].dtype == torch.bool and item["observed"].tolist() == [False, True, False]
    assert item["index"].dtype == torch.int64 and item["index"].shape == () and int(item["index"]) == 2
    unobserved = CXRDataset(ArraySource(images), targets, known)[0]
    assert unobserved["observed"].dtype == torch.bool and not unobserved["observed"].any()


def test_shapes_must_match_the_source():
    targets, known = labels(3)
    with pytest.raises(ValueError, match=r"targets has shape \(3, 3\), expected \(4, C\)"):
        CXRDataset(ArraySource(np.zeros((4, 8, 8), np.uint8)), targets, known)


def test_bad_image_raises_by_default(files):
    dataset = CXRDataset(FileSource(files, 8), *labels(5))
    assert dataset[0]["image"].shape == (1, 8, 8)
    with pytest.raises(ImageError, match="1.png"):
        dataset[1]


def test_skip_reports_drops_and_respects_the_budget(files, caplog):
    dataset = CXRDataset(FileSource(files, 8), *labels(5), bad_images="skip", bad_image_budget=1)
    with pytest.warns(UserWarning, match="skipping bad image 1"):
        batch = collate_skip_none([dataset[i] for i in range(3)])
    assert batch["index"].tolist() == [0, 2] and batch["image"].shape == (2, 1, 8, 8)
    assert dataset.skipped == [(1, files[1], dataset.skipped[0][2])] and "not a recognised" in dataset.skipped[0][2]
    assert "1.png" in caplog.text
    with pytest.warns(UserWarning), pytest.raises(DataError, match="data.bad_image_budget=1"):
        dataset[3]


def test_cache_source_matches_file_source_and_skips_recorded_failures(files, tmp_path):
    build_cache(files, 8, str(tmp_path / "cache"), workers=0, progress=False)
    order = files[::-1]
    cached, direct = CacheSource(str(tmp_path / "cache"), order, 8), FileSource(order, 8)
    for i in (0, 2, 4):
        assert np.array_equal(cached.load(i), direct.load(i))
    dataset = CXRDataset(cached, *labels(5), bad_images="skip")
    with pytest.warns(UserWarning, match="3.png"):
        assert dataset[1] is None
    with pytest.raises(DataError, match="data.size=16"):
        CacheSource(str(tmp_path / "cache"), files, 16)


def test_a_batch_of_only_bad_images_is_a_clear_error():
    with pytest.raises(DataError, match="all 2 images of a batch were bad"):
        collate_skip_none([None, None])
