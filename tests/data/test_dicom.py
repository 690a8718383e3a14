"""DICOM input: files built with pydicom the way modalities write them (and pydicom's own test files shipped in
its wheel), each against an independent reference or an identity: header windows (LINEAR formula of DICOM
PS3.3 C.11.2.1.2.1), multi-valued windows, a VOI LUT Sequence, rescale slope/intercept, MONOCHROME1, 12 bits in
16 with overlay bits, signed data, compressed transfer syntaxes; refusals named: multi-frame, SR, colour,
a compressed file without its decoder plugin, a truncated file."""

import subprocess
import sys

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from spml.data.images import ImageError, Intensity, MissingDecoderError, check_image, load_gray
from tests.conftest import REPO
from tests.cxr_files import film16, write_dicom, write_sr

TOLERANCE = 0.5 + 1e-3


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (VOI LUT Function LINEAR) onto 0..255, in float64."""
    values = values.astype(np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    inside = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.where(values <= low, 0.0, np.where(values > high, 255.0, inside))


def percentile_window(values: np.ndarray) -> np.ndarray:
    black, white = np.percentile(values.astype(np.float64), Intensity().percentiles)
    return np.clip((values - black) / (white - black) * 255, 0, 255)


@pytest.fixture
def film():
    return film16(12)


def test_window_from_the_header(tmp_path, film):
    path = write_dicom(tmp_path / "w.dcm", film, window=(1500, 2000))
    assert np.abs(load_gray(path, 64) - linear_window(film, 1500, 2000)).max() <= TOLERANCE


def test_the_first_of_several_windows_is_used(tmp_path, film):
    several = write_dicom(tmp_path / "m.dcm", film, window=([1500, 800], [2000, 600]))
    first = write_dicom(tmp_path / "f.dcm", film, window=(1500, 2000))
    assert np.array_equal(load_gray(several, 64), load_gray(first, 64))


def test_rescale_slope_and_intercept_come_before_the_window(tmp_path, film):
    path = write_dicom(tmp_path / "r.dcm", film, rescale=(2.0, -1024.0), window=(2000, 4000))
    expected = linear_window(film * 2.0 - 1024.0, 2000, 4000)
    assert np.abs(load_gray(path, 64) - expected).max() <= TOLERANCE


def test_voi_lut_sequence(tmp_path, film):
    lut = np.rint(4095 * (np.arange(4096) / 4095) ** 0.6).astype(np.uint16)  # a 12-bit display curve
    path = write_dicom(tmp_path / "v.dcm", film, voi_lut=([4096, 0, 12], lut), window=(100, 50))  # LUT wins
    assert np.abs(load_gray(path, 64) - lut[film] * 255.0 / 4095).max() <= TOLERANCE


def test_monochrome1_is_inverted_after_the_window(tmp_path, film):
    mono2 = load_gray(write_dicom(tmp_path / "2.dcm", film, window=(1500, 2000)), 64).astype(int)
    mono1 = load_gray(write_dicom(tmp_path / "1.dcm", film, window=(1500, 2000), photometric="MONOCHROME1"), 64)
    assert np.abs(mono1 - (255 - mono2)).max() <= 1  # (round(255 - x) vs 255 - round(x) at exact halves)
    assert np.abs(mono1 - (255 - mono2)).mean() < 0.01


def test_12_bits_stored_ignore_overlay_bits_above_them(tmp_path, film):
    overlay = np.where(np.arange(film.size).reshape(film.shape) % 5 == 0, 1 << 15, 0)
    clean = load_gray(write_dicom(tmp_path / "c.dcm", film), 64)
    assert np.array_equal(load_gray(write_dicom(tmp_path / "o.dcm", film, high_bits=overlay), 64), clean)
    assert np.abs(clean - percentile_window(film)).max() <= TOLERANCE  # no window in the header: robust window


def test_signed_pixel_data(tmp_path, film):
    signed = film.astype(np.int16) - 2048  # -2048..2047 in 12 bits
    path = write_dicom(tmp_path / "s.dcm", signed, signed=True, rescale=(1.0, 0.0))
    assert np.abs(load_gray(path, 64) - percentile_window(signed)).max() <= TOLERANCE
    bits = load_gray(path, 64, Intensity("bits"))  # the BitsStored range -2048..2047
    assert np.abs(bits - (signed + 2048.0) * 255 / 4095).max() <= TOLERANCE


def test_policies_on_a_windowed_dicom(tmp_path, film):
    path = write_dicom(tmp_path / "w.dcm", film, window=(1500, 2000))
    assert np.abs(load_gray(path, 64, Intensity("window")) - percentile_window(film)).max() <= TOLERANCE
    assert np.abs(load_gray(path, 64, Intensity("bits")) - film * 255.0 / 4095).max() <= TOLERANCE


def test_8bit_dicom_keeps_its_values(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (40, 40)).astype(np.uint16)
    stored[0, 0] = 255
    assert np.array_equal(load_gray(write_dicom(tmp_path / "8.dcm", stored, bits_stored=8), 40), stored)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_compressed_transfer_syntaxes_decode_like_the_uncompressed_file(tmp_path, film, syntax):
    plain = load_gray(write_dicom(tmp_path / "p.dcm", film, window=(1500, 2000)), 48)
    compressed = write_dicom(tmp_path / "c.dcm", film, window=(1500, 2000), syntax=syntax)
    assert np.array_equal(load_gray(compressed, 48), plain)


def test_pydicom_test_files_in_four_transfer_syntaxes_decode_alike():
    names = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
    decoded = [load_gray(get_testdata_file(name), 32) for name in names]
    assert all(np.array_equal(decoded[0], other) for other in decoded[1:])
    ct = load_gray(get_testdata_file("CT_small.dcm"), 32)  # signed, rescale intercept, a header window
    assert ct.std() > 20


@pytest.mark.parametrize(
    "make, reason",
    [
        (
            lambda p: write_dicom(p, np.stack([film16(12)] * 2)),
            "a multi-frame DICOM (2 frames); spml reads single-frame",
        ),
        (lambda p: write_sr(p), "a DICOM without image pixels (Basic Text SR Storage, modality SR): not an image"),
        (lambda p: get_testdata_file("rtdose.dcm"), "a multi-frame DICOM (15 frames)"),
        (lambda p: get_testdata_file("rtplan.dcm"), "without image pixels (RT Plan Storage"),
        (lambda p: get_testdata_file("test-SR.dcm"), "without image pixels (Comprehensive SR Storage"),
        (lambda p: get_testdata_file("SC_rgb_small_odd.dcm"), "photometric interpretation 'RGB' is not supported"),
    ],
)
def test_unusable_dicoms_are_refused_by_name_from_the_header(tmp_path, make, reason):
    path = str(make(tmp_path / "x.dcm") or "")
    for read in (lambda: check_image(path), lambda: load_gray(path, 32)):
        with pytest.raises(ImageError) as info:
            read()
        assert str(info.value).startswith(f"{path}: ") and reason in info.value.reason


def test_truncated_dicom_is_found_at_decode_time(tmp_path, film):
    data = write_dicom(tmp_path / "w.dcm", film).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 3000])
    check_image(tmp_path / "cut.dcm")  # the header is intact
    with pytest.raises(ImageError, match=r"cut\.dcm: truncated or corrupt DICOM data"):
        load_gray(tmp_path / "cut.dcm", 32)
    with pytest.raises(ImageError, match=r"MR_truncated\.dcm: truncated or corrupt DICOM data"):
        load_gray(get_testdata_file("MR_truncated.dcm"), 32)


def test_a_compressed_dicom_without_its_decoder_names_the_extra(tmp_path, film):
    path = write_dicom(tmp_path / "ls.dcm", film, syntax=JPEGLSLossless)
    blocked = ["pylibjpeg", "openjpeg", "libjpeg", "jpeg_ls", "gdcm"]  # the extra's plugins, as if not installed
    script = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked}))\n"
        "from spml.data.images import MissingDecoderError, check_image, load_gray\n"
        "for read in (check_image, lambda p: load_gray(p, 32)):\n"
        "    try:\n        read(sys.argv[1])\n    except MissingDecoderError as err:\n        print(err)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line == lines[0] for line in lines), proc.stdout + proc.stderr
    assert lines[0] == (
        f"{path}: compressed DICOM (JPEG-LS Lossless Image Compression) needs a pixel data decoder "
        "that is not installed: pip install 'spml[dicom]' (pylibjpeg, pylibjpeg-openjpeg, "
        "pylibjpeg-libjpeg, pyjpegls)"
    )
    assert issubclass(MissingDecoderError, ValueError) and not issubclass(MissingDecoderError, ImageError)
