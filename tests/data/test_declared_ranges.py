"""Image files whose declarations lie or are missing, written by other tools (Pillow, pypng, tifffile, pydicom):
an sBIT the data contradict, float TIFFs (overshoot, +Inf, detector counts), DICOM pixel padding, WindowWidth 0,
multi-page TIFFs. Each decodes like the same film without the defect (within 1 grey level in mean) or is refused
by name. Found before: mean 10 instead of 168 (sBIT), 0.7 (float TIFF), a 25-level shift (padding), a refusal
as "corrupt" (WindowWidth 0), page 0 (a thumbnail) read without a word."""

import warnings

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from spml.data.images import ImageError, check_image, load_gray
from tests.cxr_files import film16, write_dicom, write_png16

SIZE = 64


def reference(tmp_path, values: np.ndarray) -> np.ndarray:
    """The film decoded from a plain 16-bit PNG without any declaration (the robust window)."""
    return load_gray(write_png16(tmp_path / "reference.png", values, "opencv"), SIZE)


@pytest.mark.parametrize("sbit", [8, 10])
def test_an_sbit_the_data_contradict_falls_back_to_the_window_and_says_so_once(tmp_path, sbit):
    values = film16(12, SIZE)  # 12-bit data (up to about 3480)
    paths = [write_png16(tmp_path / f"lying{i}.png", film16(12, SIZE, seed=i), "pillow", sbit) for i in range(3)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = [load_gray(path, SIZE) for path in paths]
    said = [w for w in caught if "sBIT chunk declares" in str(w.message)]
    assert len(said) <= 1  # once per kind of file (an earlier test may already have said it in this process)
    assert abs(decoded[0].mean() - reference(tmp_path, values).mean()) < 1
    for writer, bits in (("pypng", 12), ("pillow", 12)):  # declarations that hold: scaled as the spec asks, unscaled
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_gray(write_png16(tmp_path / f"honest-{writer}.png", values, writer, bits), SIZE)


@pytest.mark.parametrize("defect", ["overshoot 1.02", "one +Inf pixel", "detector counts 0..4080", "NaN pixel"])
def test_float_tiffs_get_the_window_of_their_finite_pixels(tmp_path, defect):
    values = film16(12, SIZE)
    unit = values.astype(np.float32) / values.max()
    data = {
        "overshoot 1.02": unit,
        "one +Inf pixel": unit,
        "detector counts 0..4080": values.astype(np.float32),
        "NaN pixel": unit,
    }[defect].copy()
    if defect == "overshoot 1.02":
        data[3, 3] = 1.02
    elif defect == "one +Inf pixel":
        data[3, 3] = np.inf
    elif defect == "NaN pixel":
        data[3, 3] = np.nan
    path = tmp_path / "film.tif"
    tifffile.imwrite(path, data)
    decoded = load_gray(path, SIZE)
    assert abs(decoded.astype(float).mean() - reference(tmp_path, values).mean()) < 1.5, decoded.mean()


def test_a_float_tiff_without_a_finite_pixel_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "nan.tif", np.full((8, 8), np.nan, np.float32))
    with pytest.raises(ImageError, match="without a finite pixel"):
        load_gray(tmp_path / "nan.tif", SIZE)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_declared_pixel_padding_takes_no_part_in_the_window(tmp_path, photometric):
    values = film16(12, SIZE)
    padded = values.copy()
    padded[:, :12] = 4095  # a collimation border
    plain = load_gray(write_dicom(tmp_path / "plain.dcm", values, photometric=photometric), SIZE)
    path = write_dicom(tmp_path / "padded.dcm", padded, photometric=photometric)
    ds = pydicom.dcmread(path)
    ds.add_new(0x00280120, "US", 4095)  # PixelPaddingValue
    ds.save_as(path)
    decoded = load_gray(path, SIZE)
    film = np.s_[:, 16:]  # away from the border (resizing blends the columns next to it)
    assert abs(decoded[film].astype(float).mean() - plain[film].astype(float).mean()) < 3  # (was about 25)
    assert (decoded[:, :10] == 0).all()  # the padding itself: black


def test_window_width_zero_is_no_window(tmp_path):
    values = film16(12, SIZE)
    path = write_dicom(tmp_path / "ww0.dcm", values, window=(2048, 0))
    check_image(path)
    decoded = load_gray(path, SIZE)
    plain = load_gray(write_dicom(tmp_path / "plain.dcm", values), SIZE)
    assert np.array_equal(decoded, plain)


def test_a_multi_page_tiff_is_read_from_its_film_page(tmp_path):
    values = film16(12, SIZE)
    thumbnail = np.zeros((16, 16), np.uint16)
    path = tmp_path / "pacs.tif"
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(thumbnail)
        tiff.write(values)
    assert np.array_equal(load_gray(path, SIZE), reference(tmp_path, values))


def test_a_tiff_of_two_films_is_refused_by_name(tmp_path):
    path = tmp_path / "two.tif"
    frames = [Image.fromarray(film16(12, SIZE, seed=i)) for i in range(2)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    for read in (check_image, lambda p: load_gray(p, SIZE)):
        with pytest.raises(ImageError, match=f"{path}: 2 pages, 2 of them 64 x 64 films; spml reads one film"):
            read(path)
