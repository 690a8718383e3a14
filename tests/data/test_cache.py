"""The uint8 memmap cache: round trip, bad images in the index, atomic builds, size/path checks, speed."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import spml.data.cache as cache_module
from spml.data.cache import ImageCache, build_cache, paths_hash
from spml.data.images import ImageError, Intensity, load_gray
from spml.data.table import DataError
from tests.cxr_files import write_every_kind

NIH_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "nih1000" / "images"


@pytest.fixture
def images(tmp_path):
    """Six good images of mixed modes and sizes, and one truncated file; -> list of paths (str)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "img"
    folder.mkdir()
    paths = []
    for i, (shape, mode) in enumerate(
        [
            ((40, 40), "L"),
            ((50, 30, 3), "RGB"),
            ((64, 64, 4), "RGBA"),
            ((24, 24), "L"),
            ((33, 47, 3), "RGB"),
            ((64, 64), "L"),
        ]
    ):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        paths.append(str(path))
    bad = folder / "bad.png"
    bad.write_bytes(Path(paths[0]).read_bytes()[:100])
    paths.insert(3, str(bad))
    return paths


def test_round_trip_equals_direct_decode(images, tmp_path):
    cache = build_cache(images, 16, str(tmp_path / "c"), workers=0, progress=False)
    assert len(cache) == len(images) and cache.size == 16
    for row, path in enumerate(images):
        if path.endswith("bad.png"):
            with pytest.raises(ImageError, match="bad.png: truncated"):
                cache.load(row)
        else:
            assert np.array_equal(cache.load(row), load_gray(path, 16))
    assert cache.failed["path"].tolist() == [images[3]] and "truncated" in cache.failed["error"].iloc[0]
    assert list(cache.rows(images[::-1])) == list(range(len(images)))[::-1]


def test_files_layout_and_meta(images, tmp_path):
    out = tmp_path / "c"
    build_cache(images, 8, str(out), workers=0, progress=False)
    assert sorted(os.listdir(out)) == ["images.u8", "index.csv", "meta.json"]
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["size"], meta["count"], meta["failed"]) == (8, len(images), 1)
    assert meta["source_hash"] == paths_hash(images) and meta["created"]
    raw = np.fromfile(out / "images.u8", np.uint8).reshape(len(images), 8, 8)  # plain row-major (N, S, S)
    assert np.array_equal(raw[5], load_gray(images[5], 8))
    index = (out / "index.csv").read_text().splitlines()
    assert index[0] == "path,row,ok,error,bytes,mtime_ns" and index[4].startswith(f"{images[3]},3,False,truncated")
    stat = os.stat(images[5])  # each source's size and modification time, to notice a re-exported file
    assert index[6] == f"{images[5]},5,True,,{stat.st_size},{stat.st_mtime_ns}"


def test_process_pool_gives_the_same_cache(images, tmp_path):
    serial = build_cache(images, 16, str(tmp_path / "a"), workers=0, progress=False)
    pooled = build_cache(images, 16, str(tmp_path / "b"), workers=2, progress=False, chunksize=2)
    assert np.array_equal(np.asarray(serial.images), np.asarray(pooled.images))
    assert serial.index.equals(pooled.index)


def test_failed_build_leaves_no_files_and_keeps_an_older_cache(images, tmp_path, monkeypatch):
    out = tmp_path / "c"
    calls = []

    def decode_then_fail(path, size, intensity):
        calls.append(path)
        if len(calls) == 4:
            raise RuntimeError("disk went away")
        return load_gray(path, size, intensity)

    monkeypatch.setattr(cache_module, "load_gray", decode_then_fail)
    with pytest.raises(RuntimeError, match="disk went away"):
        build_cache(images, 16, str(out), workers=0, progress=False)
    assert len(calls) == 4 and os.listdir(out) == []  # no final files, no temporaries

    monkeypatch.setattr(cache_module, "load_gray", load_gray)
    first = np.asarray(build_cache(images[:3], 16, str(out), workers=0, progress=False).images).copy()
    monkeypatch.setattr(cache_module, "load_gray", decode_then_fail)
    calls.clear()
    with pytest.raises(RuntimeError):
        build_cache(images, 16, str(out), workers=0, progress=False)
    kept = ImageCache(str(out), 16)
    assert len(kept) == 3 and np.array_equal(np.asarray(kept.images), first)
    assert sorted(os.listdir(out)) == ["images.u8", "index.csv", "meta.json"]


@pytest.mark.parametrize("intensity", [Intensity(), Intensity("window", (2.0, 98.0)), Intensity("bits")])
def test_cache_equals_direct_decoding_for_every_real_site_kind(tmp_path, intensity):
    paths = [str(p) for p in write_every_kind(tmp_path / "img")]
    cache = build_cache(paths, 32, str(tmp_path / "c"), workers=2, progress=False, chunksize=3, intensity=intensity)
    assert not len(cache.failed)
    for row, path in enumerate(paths):
        assert np.array_equal(cache.load(row), load_gray(path, 32, intensity)), path


def test_cache_records_its_intensity_policy_and_refuses_another(images, tmp_path):
    out = tmp_path / "c"
    build_cache(images, 16, str(out), workers=0, progress=False, intensity=Intensity("window", (1.0, 99.0)))
    assert json.loads((out / "meta.json").read_text())["intensity"] == {"policy": "window", "percentiles": [1.0, 99.0]}
    ImageCache(str(out), 16, Intensity("window", (1.0, 99.0)))
    with pytest.raises(
        DataError,
        match=r"was decoded with data.intensity=window data.intensity_percentiles=\[1.0, "
        r"99.0\], this run asks for data.intensity=auto data.intensity_percentiles="
        r"\[0.5, 99.5\]; rebuild it with tools/prepare_data.py",
    ):
        ImageCache(str(out), 16, Intensity())
    meta = json.loads((out / "meta.json").read_text())
    del meta["intensity"]  # a cache built before the policy was recorded
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="no recorded policy .built before data.intensity existed"):
        ImageCache(str(out), 16, Intensity())


def test_bad_path_lists_fail_before_writing(images, tmp_path):
    with pytest.raises(ValueError, match="duplicate paths"):
        build_cache([*images, images[0]], 16, str(tmp_path / "c"), workers=0, progress=False)
    with pytest.raises(ValueError, match="empty"):
        build_cache([], 16, str(tmp_path / "d"), workers=0, progress=False)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_open_errors_name_the_problem(images, tmp_path):
    out = str(tmp_path / "c")
    build_cache(images, 16, out, workers=0, progress=False)
    with pytest.raises(DataError, match=r"holds 16px images but data.size=32"):
        ImageCache(out, 32)
    with pytest.raises(DataError, match=r"no entry for 1 of 2 images, e.g. \['/elsewhere/x.png'\]"):
        ImageCache(out, 16).rows([images[0], "/elsewhere/x.png"])
    with pytest.raises(DataError, match="not an image cache"):
        ImageCache(str(tmp_path), 16)
    with open(os.path.join(out, "images.u8"), "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DataError, match="bytes"):
        ImageCache(out, 16)


def test_cache_pickles_without_the_pixels(images, tmp_path):
    import pickle

    cache = build_cache(images, 16, str(tmp_path / "c"), workers=0, progress=False)
    cache.load(0)
    copy = pickle.loads(pickle.dumps(cache))  # what a DataLoader worker receives
    assert cache._images is not None and copy._images is None  # the memmap is reopened, not copied
    assert np.array_equal(copy.load(5), cache.load(5))


@pytest.mark.skipif(not NIH_IMAGES.is_dir(), reason="shared NIH sample not present")
def test_cache_speedup_over_decoding(tmp_path):
    paths = [str(p) for p in sorted(NIH_IMAGES.glob("*.png"))]
    cache = build_cache(paths, 64, str(tmp_path / "c"), workers=0, progress=False)
    start = time.perf_counter()
    decoded = [load_gray(p, 64) for p in paths]
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    rows = cache.rows(paths)
    cached = [cache.load(int(r)) for r in rows]
    cache_s = time.perf_counter() - start
    assert all(np.array_equal(a, b) for a, b in zip(decoded, cached))
    print(
        f"\n{len(paths)} images at 64 px: decode {len(paths) / decode_s:.0f} img/s, "
        f"cache {len(paths) / cache_s:.0f} img/s, ratio {decode_s / cache_s:.1f}x"
    )


@pytest.mark.skipif(not NIH_IMAGES.is_dir(), reason="shared NIH sample not present")
def test_prepare_data_tool_caches_the_nih_sample_and_lists_failures(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from prepare_data import main

    root = tmp_path / "nih"
    (root / "images").mkdir(parents=True)
    (root / "Data_Entry_2017_v2020.csv.gz").symlink_to(NIH_IMAGES.parents[1] / "nih" / "Data_Entry_2017_v2020.csv.gz")
    names = sorted(p.name for p in NIH_IMAGES.glob("*.png"))
    for name in names[1:]:
        (root / "images" / name).symlink_to(NIH_IMAGES / name)
    (root / "images" / names[0]).write_bytes(b"not a png")
    out = tmp_path / "cache"
    with pytest.warns(UserWarning, match="dropped"):
        assert (
            main(
                [
                    "--dataset",
                    "nih",
                    "--root",
                    str(root),
                    "--size",
                    "16",
                    "--out",
                    str(out),
                    "--workers",
                    "2",
                    "data.missing=drop",
                ]
            )
            == 0
        )
    printed = capsys.readouterr().out
    assert "cached 811 images" in printed and "images/s" in printed
    assert "1 images could not be decoded" in printed and names[0] in printed
    cache = ImageCache(str(out), 16)
    assert len(cache) == 811 and cache.failed["path"].tolist() == [str(root / "images" / names[0])]
