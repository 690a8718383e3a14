"""Batched reads (CXRDataset.__getitems__): the same batches as the per-item path, bad images still skipped."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from spml.config import load_config
from spml.data.cache import build_cache
from spml.data.dataset import ArraySource, CacheSource, CXRDataset, FileSource, collate_skip_none
from spml.data.loader import EpochSampler, make_train_loader

N, C, SIZE = 12, 3, 8


@pytest.fixture
def cached(tmp_path):
    """(paths, cache folder) of N random PNGs; the one at position 5 is corrupt."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        path = tmp_path / f"{i}.png"
        if i == 5:
            path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        else:
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(path)
        paths.append(str(path))
    build_cache(paths, SIZE, str(tmp_path / "cache"), workers=1, progress=False)
    return paths, str(tmp_path / "cache")


def dataset(source, cls=CXRDataset, **kwargs) -> CXRDataset:
    rng, n = np.random.default_rng(1), len(source)
    targets = rng.integers(0, 2, (n, C)).astype(np.float32)
    return cls(source, targets, rng.random((n, C)) > 0.3, rng.random((n, C)) > 0.7, **kwargs)


def assert_same_batch(batch: dict, reference: dict) -> None:
    assert set(batch) == set(reference)
    for key, value in reference.items():
        assert batch[key].dtype == value.dtype and torch.equal(batch[key], value), key


def test_array_batch_equals_collated_items():
    images = np.random.default_rng(2).integers(0, 256, (N, SIZE, SIZE), dtype=np.uint8)
    data = dataset(ArraySource(images))
    indices = [7, 0, 11, 3, 3]
    batch = collate_skip_none(data.__getitems__(indices))
    assert_same_batch(batch, default_collate([data[i] for i in indices]))


def test_cache_batch_equals_decoded_files_in_request_order(cached):
    paths, cache = cached
    good = [9, 2, 7, 0, 11]  # unsorted rows: the reader sorts them and must restore the order
    from_cache = collate_skip_none(dataset(CacheSource(cache, paths, SIZE)).__getitems__(good))
    from_files = default_collate([dataset(FileSource(paths, SIZE))[i] for i in good])
    assert_same_batch(from_cache, from_files)


def test_cache_batch_with_a_bad_image_falls_back_to_skipping_it(cached):
    paths, cache = cached
    data = dataset(CacheSource(cache, paths, SIZE), bad_images="skip")
    with pytest.warns(UserWarning, match="skipping bad image 5"):
        batch = collate_skip_none(data.__getitems__([4, 5, 6]))
    assert batch["index"].tolist() == [4, 6] and len(data.skipped) == 1


def test_loader_batches_equal_the_per_item_loader(cached):
    paths, cache = cached
    good = [path for i, path in enumerate(paths) if i != 5]
    config = load_config([], ["data.batch_size=4", "data.num_workers=0"]).data

    class PerItem(CXRDataset):
        __getitems__ = None  # the DataLoader then fetches item by item

    loaders = [
        make_train_loader(
            dataset(CacheSource(cache, good, SIZE), cls),
            EpochSampler(len(good), 3),
            config.batch_size,
            config.num_workers,
        )
        for cls in (CXRDataset, PerItem)
    ]
    for batched, per_item in zip(*loaders, strict=True):
        assert_same_batch(batched, per_item)
