"""Images wider than 8 bits under data.intensity, in files written by other tools (Pillow, OpenCV, pypng):
16-bit PNGs with and without sBIT, 12-bit data in 16-bit containers, burned-in marker pixels, 48/64-bit RGB(A)
and 16-bit grey+alpha PNGs against independent float64 references; JPEG EXIF orientation; 8-bit images
unchanged under every policy."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spml.data.images import Intensity, load_gray, percentile_range
from tests.cxr_files import film16, write_png16, write_png16_colour, write_rotated_jpeg

NIH_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "nih1000" / "images"
LOW, HIGH = Intensity().percentiles
TOLERANCE = 0.5 + 1e-3  # rounding to uint8 (+ float32 arithmetic)


def window_reference(values: np.ndarray, low: float = LOW, high: float = HIGH) -> np.ndarray:
    """The percentile window in float64, from its definition."""
    values = values.astype(np.float64)
    black, white = np.percentile(values, [low, high])
    return np.clip((values - black) / (white - black) * 255, 0, 255)


def luma16(channels: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of 16-bit RGB channels in float64."""
    rgb = channels.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def with_marker(values: np.ndarray, value: int, where=(slice(2, 4), slice(2, 4))) -> np.ndarray:
    """A burned-in bright marker (a few pixels at `value`), as a text label or lead letter leaves."""
    marked = values.copy()
    marked[where] = value
    return marked


@pytest.mark.parametrize("writer", ["pypng", "pillow"])
def test_sbit_12_in_a_16bit_png_maps_the_declared_range(tmp_path, writer):
    """pypng writes 12-bit data scaled to 16 bits + sBIT 12 (the PNG specification's way); a site tool writes the
    raw 0..4095 values + sBIT 12 (Pillow with an sBIT chunk). Both mean v12 * 255 / 4095."""
    film = film16(12)
    out = load_gray(write_png16(tmp_path / "f.png", film, writer, sbit=12), 64)
    assert np.abs(out - film * 255.0 / 4095).max() <= TOLERANCE


@pytest.mark.parametrize("writer, marker", [("pillow", 65535), ("pillow", 4095), ("pypng", 4095)])
def test_a_burned_in_marker_does_not_move_a_film_with_sbit(tmp_path, writer, marker):
    film = film16(12)
    clean = load_gray(write_png16(tmp_path / "clean.png", film, writer, sbit=12), 64)
    marked = load_gray(write_png16(tmp_path / "marked.png", with_marker(film, marker), writer, sbit=12), 64)
    outside = np.ones_like(film, bool)
    outside[2:4, 2:4] = False
    assert np.array_equal(marked[outside], clean[outside])  # a fixed range: only the marker's pixels change
    assert (marked[2:4, 2:4] == 255).all()


@pytest.mark.parametrize("writer", ["pillow", "opencv", "pypng"])
def test_16bit_png_without_sbit_gets_the_robust_window(tmp_path, writer):
    film = film16(12)  # 12-bit data in a 16-bit container, no sBIT: nothing says where white is
    out = load_gray(write_png16(tmp_path / "f.png", film, writer), 64)
    assert np.abs(out - window_reference(film)).max() <= TOLERANCE


@pytest.mark.parametrize("writer", ["pillow", "opencv", "pypng"])
@pytest.mark.parametrize("marker", [65535, 4095])
def test_a_burned_in_marker_barely_changes_a_film_without_sbit(tmp_path, writer, marker):
    """The reported failure: one bright marker halved the film's brightness or made it near black."""
    film = film16(12, size=128)
    clean = load_gray(write_png16(tmp_path / "clean.png", film, writer), 128).astype(float)
    marked = load_gray(write_png16(tmp_path / "marked.png", with_marker(film, marker), writer), 128).astype(float)
    outside = np.ones_like(clean, bool)
    outside[2:4, 2:4] = False
    difference = np.abs(marked - clean)[outside]
    assert difference.mean() < 0.5 and difference.max() <= 2, (difference.mean(), difference.max())
    assert (marked[2:4, 2:4] == 255).all()


def test_bits_and_window_policies(tmp_path):
    film = film16(12)
    with_sbit = write_png16(tmp_path / "sbit.png", film, "pillow", sbit=12)
    without = write_png16(tmp_path / "plain.png", film, "pillow")
    bits, window = Intensity("bits"), Intensity("window", (2.0, 98.0))
    assert np.abs(load_gray(with_sbit, 64, bits) - film * 255.0 / 4095).max() <= TOLERANCE
    # no sBIT: bits takes the container's depth (this film is then dark: the reason auto windows instead)
    assert np.abs(load_gray(without, 64, bits) - film * 255.0 / 65535).max() <= TOLERANCE
    for path in (with_sbit, without):  # window ignores sBIT
        assert np.abs(load_gray(path, 64, window) - window_reference(film, 2.0, 98.0)).max() <= TOLERANCE


def test_16bit_film_shrinks_by_area_after_the_window(tmp_path):
    film = film16(12, size=128)
    out = load_gray(write_png16(tmp_path / "f.png", film, "opencv"), 32)
    expected = window_reference(film).reshape(32, 4, 32, 4).mean((1, 3))
    assert np.abs(out - expected).max() <= TOLERANCE


@pytest.mark.parametrize(
    "layout, writer", [("RGB", "opencv"), ("RGB", "pypng"), ("RGBA", "opencv"), ("RGBA", "pypng"), ("LA", "pypng")]
)
def test_16bit_colour_and_grey_alpha_pngs_keep_all_16_bits(tmp_path, layout, writer):
    """Pillow keeps only the high byte of these layouts (12-bit data then comes out near black)."""
    rng = np.random.default_rng(3)
    base = film16(12).astype(np.int64)
    rgb = np.clip(base[..., None] + rng.integers(-200, 200, (64, 64, 3)), 0, 4095).astype(np.uint16)
    alpha = np.full((64, 64, 1), 65535, np.uint16)
    channels = {"RGB": rgb, "RGBA": np.concatenate([rgb, alpha], 2), "LA": np.concatenate([rgb[..., :1], alpha], 2)}[
        layout
    ]
    out = load_gray(write_png16_colour(tmp_path / "c.png", channels, writer), 64)
    gray = channels[..., 0].astype(np.float64) if layout == "LA" else luma16(channels)
    assert np.abs(out - window_reference(gray)).max() <= TOLERANCE


def test_48bit_rgb_with_sbit_and_equal_channels_is_the_grey_film(tmp_path):
    film = film16(12)
    rgb = np.repeat(film[..., None], 3, 2)
    grey = load_gray(write_png16(tmp_path / "g.png", film, "pypng", sbit=12), 64)
    colour = load_gray(write_png16_colour(tmp_path / "c.png", rgb, "pypng", sbit=12), 64)
    assert np.array_equal(colour, grey)
    plain = [
        load_gray(write_png16(tmp_path / "gp.png", film, "opencv"), 64),
        load_gray(write_png16_colour(tmp_path / "cp.png", rgb, "opencv"), 64),
    ]
    assert np.array_equal(*plain)


@pytest.mark.parametrize("orientation", [6, 8])
def test_jpeg_exif_orientation_brings_the_film_upright(tmp_path, orientation):
    upright = (film16(8, size=128) * 1.0).astype(np.uint8)  # asymmetric: heart on one side
    out = load_gray(write_rotated_jpeg(tmp_path / "r.jpg", upright, orientation), 128).astype(float)
    assert np.abs(out - upright).mean() < 2  # JPEG loss only
    for turned in (np.rot90(upright, 1), np.rot90(upright, -1)):
        assert np.abs(out - turned).mean() > 10  # what ignoring the tag gave


def test_exif_orientation_also_applies_to_16bit_pngs(tmp_path):
    film = film16(12)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(film, 1).copy()).save(tmp_path / "r.png", exif=exif.tobytes())
    upright = load_gray(write_png16(tmp_path / "u.png", film, "pillow"), 64)
    assert np.array_equal(load_gray(tmp_path / "r.png", 64), upright)


def test_8bit_images_are_the_same_under_every_policy(tmp_path):
    rng = np.random.default_rng(0)
    paths = [tmp_path / "g.png", tmp_path / "c.png", tmp_path / "j.jpg"]
    Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(paths[1])
    Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(paths[2])
    paths += sorted(NIH_IMAGES.glob("*.png"))[:20]
    for path in paths:
        default = load_gray(path, 32)
        for policy in ("bits", "window"):
            assert np.array_equal(load_gray(path, 32, Intensity(policy, (5.0, 95.0))), default), (path, policy)


@pytest.mark.parametrize("dtype, top", [(np.uint16, 4096), (np.uint16, 65536), (np.uint8, 256), (np.uint16, 3)])
def test_histogram_percentiles_equal_numpys(dtype, top):
    rng = np.random.default_rng(top)
    for shape in ((64, 64), (37, 101), (1, 1), (2, 3)):
        values = rng.integers(0, top, shape).astype(dtype)
        for percentiles in ((0.5, 99.5), (0.0, 100.0), (2.0, 98.0), (33.3, 66.7)):
            expected = np.percentile(values.astype(np.float64), percentiles)
            assert np.allclose(percentile_range(values, Intensity("window", percentiles)), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "policy, percentiles, message",
    [
        ("max", (0.5, 99.5), r"data.intensity='max'; choose from \['auto', 'bits', 'window'\]"),
        ("window", (50, 50), r"data.intensity_percentiles=\[50, 50\]: give \[low, high\]"),
        ("window", (-1, 99), r"data.intensity_percentiles"),
        ("window", (1, 2, 3), r"data.intensity_percentiles"),
    ],
)
def test_bad_policies_are_refused_naming_the_key(policy, percentiles, message):
    with pytest.raises(ValueError, match=message):
        Intensity(policy, percentiles)
