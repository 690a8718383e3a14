"""Image decoding: every pixel format against an independent expectation, and each bad-file kind."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spml.data.images import ImageError, load_gray

NIH_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "nih1000" / "images"
rng = np.random.default_rng(0)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma in float64, computed independently of Pillow."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def block_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Area average onto size x size for integer factors (what an area resize must give)."""
    h, w = image.shape
    return image.reshape(size, h // size, size, w // size).mean((1, 3))


def save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path, **kwargs)
    return path


def test_gray_8bit_is_exact_and_shrinks_by_area(tmp_path):
    gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    path = save(tmp_path / "g.png", gray)
    assert np.array_equal(load_gray(path, 64), gray)
    small = load_gray(path, 16)
    assert small.dtype == np.uint8 and small.shape == (16, 16)
    assert np.abs(small.astype(float) - block_mean(gray.astype(float), 16)).max() <= 1


def test_non_square_image_is_squashed(tmp_path):
    tall = rng.integers(0, 256, (64, 32), dtype=np.uint8)  # height 64, width 32
    out = load_gray(save(tmp_path / "tall.png", tall), 16)
    assert out.shape == (16, 16)
    assert np.abs(out.astype(float) - tall.astype(float).reshape(16, 4, 16, 2).mean((1, 3))).max() <= 1


def test_rgb_and_rgba_become_luma_ignoring_alpha(tmp_path):
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (32, 32, 1), dtype=np.uint8)], 2)
    for name, array in (("rgb.png", rgb), ("rgba.png", rgba)):
        out = load_gray(save(tmp_path / name, array), 32)
        assert np.abs(out - luma(rgb.astype(float))).max() <= 1, name


def test_palette_maps_through_the_palette(tmp_path):
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(palette.tobytes())
    image.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert np.abs(load_gray(tmp_path / "p.png", 32) - luma(palette[index].astype(float))).max() <= 1


def test_jpeg_gray_and_colour(tmp_path):
    y, x = np.mgrid[0:256, 0:256]
    smooth = (127 + 100 * np.sin(x / 23.0) * np.cos(y / 31.0)).astype(np.uint8)
    save(tmp_path / "g.jpg", smooth, quality=95)
    save(tmp_path / "c.jpg", np.stack([smooth, smooth[::-1], smooth[:, ::-1]], 2), quality=95)
    colour_luma = luma(np.stack([smooth, smooth[::-1], smooth[:, ::-1]], 2).astype(float))
    for name, expected in (("g.jpg", smooth.astype(float)), ("c.jpg", colour_luma)):
        assert np.abs(load_gray(tmp_path / name, 256) - expected).mean() < 2, name
        assert np.abs(load_gray(tmp_path / name, 64) - block_mean(expected, 64)).mean() < 2, name


def test_upscaling_small_images(tmp_path):
    out = load_gray(save(tmp_path / "s.png", rng.integers(0, 256, (20, 30), dtype=np.uint8)), 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = save(tmp_path / "good.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    jpeg = save(tmp_path / "good.jpg", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    files = {
        "missing": (tmp_path / "nope.png", "does not exist"),
        "empty": (tmp_path / "empty.png", "empty (0 bytes)"),
        "truncated png": (tmp_path / "cut.png", "truncated"),
        "truncated jpeg": (tmp_path / "cut.jpg", "truncated"),
        "not an image": (tmp_path / "notes.png", "not a recognised image"),
        "directory": (tmp_path / "folder.png", "directory"),
    }
    files["empty"][0].write_bytes(b"")
    files["truncated png"][0].write_bytes(good.read_bytes()[:300])
    files["truncated jpeg"][0].write_bytes(jpeg.read_bytes()[:400])
    files["not an image"][0].write_text("Patient ID,Finding Labels\n")
    files["directory"][0].mkdir()
    return files


def test_each_bad_image_kind_names_the_file_and_reason(tmp_path):
    for kind, (path, reason) in bad_files(tmp_path).items():
        with pytest.raises(ImageError) as info:
            load_gray(path, 32)
        assert str(path) in str(info.value) and reason in str(info.value), kind
        assert info.value.path == str(path) and reason in info.value.reason
        assert isinstance(info.value, ValueError)


def test_too_many_pixels_are_refused_before_decoding(tmp_path):
    path = save(tmp_path / "big.png", np.zeros((100, 120), np.uint8))
    with pytest.raises(ImageError, match=r"big\.png: image is 120 x 100 = 12,000 pixels, over the limit"):
        load_gray(path, 32, max_pixels=10_000)
    assert load_gray(path, 32, max_pixels=12_000).shape == (32, 32)


@pytest.mark.skipif(not NIH_IMAGES.is_dir(), reason="shared NIH sample not present")
def test_all_nih_sample_images_decode():
    paths = sorted(NIH_IMAGES.glob("*.png"))
    assert len(paths) == 811
    for path in paths:
        out = load_gray(path, 64)
        assert out.shape == (64, 64) and out.dtype == np.uint8
        with Image.open(path) as image:  # the sample is already 64 px: decoding must equal Pillow's own luma
            assert image.size == (64, 64)
            assert np.array_equal(out, np.asarray(image.convert("RGB").convert("L"))), path
