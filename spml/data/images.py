"""Decode one image file (PNG/JPEG/TIFF/... 8 or 16 bits, or DICOM) to a square grayscale uint8 array.

Geometry: the EXIF Orientation tag is applied first (a film stored rotated comes out upright), then the
image is squashed to size x size (no padding, aspect ratio not kept), the usual CXR convention (CheXNet,
torchxrayvision resize the whole film). Down-scaling averages pixel areas (Pillow BOX); up-scaling is
bicubic. JPEGs are first reduced by the decoder itself (Pillow `draft`, a power-of-two DCT scaling that
never goes below the target size).

8-bit samples are kept under every policy: gray as it is; colour becomes ITU-R 601 luma (L = 0.299 R + 0.587 G + 0.114 B);
alpha is ignored (CXR PNGs with alpha carry an opaque channel); palette images map through the palette.

Wider samples (16-bit PNG in every layout, 16/32-bit TIFF, DICOM) become 0..255 under an `Intensity`
policy (data.intensity; docs/reliability.md "Image decoding" explains the choice of the default):

* window: a robust per-image window: the values at the low and high percentiles
  (data.intensity_percentiles, default 0.5 and 99.5) map to 0 and 255, values outside are clipped, so a
  few extreme pixels (a burned-in marker, a text label, a dead detector element) cannot move the film.
* bits: a fixed range from the declared bit depth: the PNG sBIT chunk, else the container depth; DICOM
  BitsStored (through the modality LUT). An sBIT of b bits means values 0..2**b-1 when the film's high
  percentile fits there (data written unscaled), else values scaled to the container as the PNG
  specification asks (the low bits are not significant); pixels beyond the range are clipped.
* auto (default): the file's own declaration when it has one (a DICOM VOI LUT or window, the first of
  several; a PNG sBIT chunk), otherwise window.
A DICOM of at most 8 stored bits without a VOI LUT or window (under window or bits: with one too) keeps its
BitsStored range, as 8-bit images do.

DICOM (pydicom): modality LUT (RescaleSlope/Intercept or Modality LUT Sequence), then the policy (under
auto the header's VOI LUT Sequence, else its first WindowCenter/WindowWidth, maps the VOI output range to
0..255), then MONOCHROME1 is inverted. Refused by name: multi-frame files, objects without image pixels
(structured reports, presentation states), photometric interpretations other than MONOCHROME1/2, and
compressed transfer syntaxes without an installed decoder (`MissingDecoderError`: pip install 'spml[dicom]').

Decoders: Pillow for everything it holds; OpenCV (libpng) for the 16-bit PNG layouts Pillow reduces to
their high byte (48/64-bit RGB(A), 16-bit grey+alpha; pypng decodes them too but about 13x slower); pypng
reads a PNG's header chunks (bit depth, colour type, sBIT); pydicom (+ pylibjpeg/pyjpegls plugins for
compressed transfer syntaxes) for DICOM.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import png
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

MAX_PIXELS = 100_000_000  # refuse larger images (a 10k x 10k film) before decoding them
POLICIES = ("auto", "bits", "window")
DICOM_EXTRA = "pip install 'spml[dicom]' (pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-libjpeg, pyjpegls)"

_COLOUR_MODES = {"1", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_LUMA = np.array([0.299, 0.587, 0.114])
_ORIENTATION = 0x0112  # EXIF tag


class ImageError(ValueError):
    """An image file that cannot be used; the message starts with the path, `reason` says why.

    Args:
        message: the message.
        path: the file.
        reason: why it cannot be used.
    """

    def __init__(self, message: str, *, path: str = "", reason: str = ""):
        super().__init__(message)
        self.path, self.reason = path, reason


class MissingDecoderError(ValueError):
    """A compressed DICOM whose decoder plugin is not installed: a setup problem, never skipped as a bad image."""


def image_error(path: str, reason: str) -> ImageError:
    """The ImageError "<path>: <reason>".

    Args:
        path: the image file (named in errors).
        reason: why it cannot be used.

    Returns:
        The ImageError (to raise).
    """
    return ImageError(f"{path}: {reason}", path=str(path), reason=reason)


@dataclass(frozen=True)
class Intensity:
    """How samples wider than 8 bits become 0..255 (see the module docstring).

    An unknown policy or bad percentiles are a ValueError.

    Attributes:
        policy: auto | bits | window.
        percentiles: (low, high) in [0, 100] of the window (and of the sBIT test).
    """

    policy: str = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"data.intensity={self.policy!r}; choose from {list(POLICIES)}")
        values = tuple(float(p) for p in self.percentiles)
        if len(values) != 2 or not 0 <= values[0] < values[1] <= 100:
            raise ValueError(
                f"data.intensity_percentiles={list(self.percentiles)}: give [low, high] with "
                "0 <= low < high <= 100, e.g. [0.5, 99.5]"
            )
        object.__setattr__(self, "percentiles", values)

    def as_json(self) -> dict:
        return {"policy": self.policy, "percentiles": list(self.percentiles)}

    @classmethod
    def from_settings(cls, settings: dict) -> Intensity:
        """The policy of a run's data settings.

        The `intensity`, `intensity_percentiles` keys, as in data.* or an exported model.json's `data`; absent keys (a
        model exported before the policy existed) take the defaults.

        Args:
            settings: the data settings.

        Returns:
            The Intensity.
        """
        return cls(settings.get("intensity", cls.policy), tuple(settings.get("intensity_percentiles", cls.percentiles)))


# ----------------------------------------------------------------------------------------- wide samples
def scale_to_gray(values: np.ndarray, black: float, white: float) -> np.ndarray:
    """black -> 0, white -> 255 linearly, clipped (a flat range: > black -> 255).

    Args:
        values: (H, W) samples.
        black: the value mapped to 0.
        white: the value mapped to 255.

    Returns:
        float32 (H, W) in [0, 255].
    """
    values = values.astype(np.float32)
    if white <= black:
        return np.where(values > black, np.float32(255), np.float32(0))
    gray = (values - np.float32(black)) * np.float32(255.0 / (white - black))
    return np.clip(gray, 0, 255, out=gray)


def percentile_range(values: np.ndarray, intensity: Intensity) -> tuple[float, float]:
    """The (low, high) percentiles of `values` as np.percentile (linear interpolation) gives them.

    Unsigned integer samples take them from the cumulative histogram instead: the same values, about 7x faster.

    Args:
        values: the samples.
        intensity: the policy (its percentiles).

    Returns:
        (low, high).
    """
    if values.dtype.kind != "u" or values.dtype.itemsize > 2:
        low, high = np.percentile(values, intensity.percentiles)
        return float(low), float(high)
    cumulative = np.bincount(values.ravel()).cumsum()
    ranks = (values.size - 1) * np.asarray(intensity.percentiles) / 100  # positions in the sorted samples
    below = np.floor(ranks)
    under, over = sorted_samples(cumulative, below), sorted_samples(cumulative, below + 1)
    low, high = under + (ranks - below) * (over - under)
    return float(low), float(high)


def sorted_samples(cumulative: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The samples at 0-based `ranks` of the sorted data whose cumulative histogram is `cumulative`.

    Args:
        cumulative: the cumulative histogram of the samples (index = sample value).
        ranks: 0-based ranks in the sorted samples.

    Returns:
        The sample values, one per rank.
    """
    return np.searchsorted(cumulative, np.minimum(ranks, cumulative[-1] - 1), side="right")


def wide_to_gray(
    values: np.ndarray, container_bits: int, declared_bits: int | None, intensity: Intensity
) -> np.ndarray:
    """Samples of an image wider than 8 bits (integers, or the luma of 16-bit channels) -> gray.

    Args:
        values: (H, W) samples.
        container_bits: bits per sample of the file (16 for PNG).
        declared_bits: its sBIT or None.
        intensity: the intensity policy.

    Returns:
        float32 (H, W) in [0, 255].
    """
    low, high = percentile_range(values, intensity)
    if (
        intensity.policy == "auto"
        and declared_bits is not None
        and not declaration_holds(values, high, declared_bits, container_bits)
    ):
        warn_once(
            f"sBIT {declared_bits} of {container_bits}",
            f"data.intensity=auto: a {container_bits}-bit PNG's sBIT chunk declares {declared_bits} significant "
            f"bits, but its film reaches {high:.0f}, neither within {declared_bits} bits nor scaled to the "
            "container: the declaration is not trusted, the film gets the robust window (said once per "
            "process and kind of file)",
        )
        declared_bits = None
    if intensity.policy == "window" or (intensity.policy == "auto" and declared_bits is None):
        return scale_to_gray(values, low, high)
    bits = declared_bits or container_bits
    unscaled = high <= 2**bits - 1
    return scale_to_gray(values, 0, 2 ** (bits if unscaled else container_bits) - 1)


def declaration_holds(values: np.ndarray, high: float, bits: int, container_bits: int) -> bool:
    """Whether integer samples fit an sBIT of `bits`.

    True when the film (its high percentile `high`) lies within `bits` bits (written unscaled), or 99 % of the values
    are scaled to the container in one of the ways the PNG specification names (a left shift, with or without the
    high bits replicated into the low ones, or a multiplication by (2**container - 1) / (2**bits - 1)); a few
    burned-in marker pixels do not count. Other samples (colour luma) are taken as declared.

    Args:
        values: the samples.
        high: their high percentile.
        bits: the declared significant bits.
        container_bits: bits per sample of the file.

    Returns:
        True when the declaration holds.
    """
    if values.dtype.kind not in "ui" or high <= 2**bits - 1:
        return True
    values = values.astype(np.int64)
    shift = container_bits - bits
    shifted = (values >> shift) << shift
    replicated = shifted | (shifted >> bits) if shift <= bits else shifted
    factor = (2**container_bits - 1) / (2**bits - 1)
    multiplied = np.rint(np.rint(values / factor) * factor).astype(np.int64)
    return any(np.mean(values == scaled) >= 0.99 for scaled in (shifted, replicated, multiplied))


_WARNED: set[str] = set()


def warn_once(kind: str, message: str) -> None:
    """A UserWarning the first time this process meets a `kind` of file (not for each image of that kind).

    Args:
        kind: the kind of file.
        message: the warning.
    """
    if kind not in _WARNED:
        _WARNED.add(kind)
        warnings.warn(message, stacklevel=3)


def float_to_gray(values: np.ndarray, path: str, intensity: Intensity) -> np.ndarray:
    """Floating-point samples (a float TIFF) -> gray.

    A float image declares no range: under auto and window the robust window of the finite pixels (as for 16-bit data
    without a declaration), so an interpolation overshoot (1.02 in [0, 1] data) or detector counts (0..4080) window
    like any film; under bits the range [0, 1]. Non-finite pixels are masked: they take no part in the window, NaN
    and -inf become black, +inf white. An image without a finite pixel is refused.

    Args:
        values: (H, W) float samples.
        path: the image file (named in errors).
        intensity: the intensity policy.

    Returns:
        float32 (H, W) in [0, 255].
    """
    finite = np.isfinite(values)
    if not finite.any():
        raise image_error(path, "a floating-point image without a finite pixel")
    black, white = (0.0, 1.0) if intensity.policy == "bits" else percentile_range(values[finite], intensity)
    gray = scale_to_gray(np.where(finite, values, np.float32(black)), black, white)
    gray[values == np.inf] = 255
    return gray


# ----------------------------------------------------------------------------------------- Pillow / PNG
def png_header(path: str) -> png.Reader:
    """pypng reader positioned after the chunks before the pixel data (IHDR, sBIT, ...).

    Args:
        path: the PNG file.

    Returns:
        The png.Reader.
    """
    reader = png.Reader(filename=path)
    reader.preamble()
    return reader


def significant_bits(reader: png.Reader) -> int | None:
    """The sBIT chunk's significant bits of the grey or colour channels (not alpha).

    Args:
        reader: the PNG's header (png_header).

    Returns:
        The bits, or None without sBIT.
    """
    if not reader.sbit:
        return None
    return max(tuple(reader.sbit)[: 3 if reader.color_type & 2 else 1])


def png16_gray(path: str, reader: png.Reader, intensity: Intensity) -> np.ndarray:
    """Gray of a 16-bit colour or grey+alpha PNG.

    OpenCV (libpng) keeps all 16 bits; it returns B, G, R(, A) channels, grey+alpha as grey in B, G and R.

    Args:
        path: the image file (named in errors).
        reader: its pypng header.
        intensity: the intensity policy.

    Returns:
        float32 (H, W) in [0, 255].
    """
    import cv2

    samples = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if samples is None or samples.dtype != np.uint16 or samples.ndim != 3:
        raise image_error(path, "truncated or corrupt image data (OpenCV could not decode this 16-bit PNG)")
    values = samples[..., :3].astype(np.float32) @ _LUMA[::-1].astype(np.float32)
    return wide_to_gray(values, 16, significant_bits(reader), intensity)


def to_gray(
    image: Image.Image, path: str = "", intensity: Intensity = Intensity(), declared_bits: int | None = None
) -> Image.Image:
    """Any loaded Pillow image -> mode "L" (8-bit) or "F" (float in [0, 255], for > 8-bit and float images).

    Args:
        image: the loaded image.
        path: the image file (named in errors).
        intensity: the intensity policy.
        declared_bits: the PNG sBIT of a 16-bit gray image (None: absent).

    Returns:
        The gray image.
    """
    if image.mode == "L":
        return image
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (32-bit)
        container = 16 if image.mode.startswith("I;16") else 32
        return Image.fromarray(wide_to_gray(np.asarray(image), container, declared_bits, intensity), mode="F")
    if image.mode == "F":
        return Image.fromarray(float_to_gray(np.asarray(image, dtype=np.float32), path, intensity), mode="F")
    if image.mode in _COLOUR_MODES:
        return image.convert("L")
    raise image_error(path, f"unsupported pixel mode {image.mode!r}")


def upright(gray: Image.Image, source: Image.Image) -> Image.Image:
    """`gray` (decoded from `source`) turned as the source's EXIF Orientation says (Pillow's exif_transpose).

    Args:
        gray: the decoded gray image.
        source: the opened file's image (its EXIF).

    Returns:
        The upright gray image.
    """
    orientation = source.getexif().get(_ORIENTATION, 1)
    if orientation == 1:
        return gray
    exif = Image.Exif()
    exif[_ORIENTATION] = orientation
    gray.info["exif"] = exif.tobytes()
    return ImageOps.exif_transpose(gray)


def pillow_gray(image: Image.Image, path: str, size: int, intensity: Intensity) -> Image.Image:
    """An opened Pillow image -> upright "L" or "F" gray image (see the module docstring).

    Args:
        image: the opened image.
        path: the image file (named in errors).
        size: the target side (JPEG draft scaling never goes below it).
        intensity: the intensity policy.

    Returns:
        The gray image.
    """
    header = png_header(path) if image.format == "PNG" and image.mode not in ("L", "P", "1") else None
    if header is not None and header.bitdepth == 16 and header.color_type != 0:  # colour or grey+alpha
        gray = Image.fromarray(png16_gray(path, header, intensity), mode="F")
    else:
        if image.format == "JPEG":
            image.draft("L", (size, size))
        image.load()
        gray = to_gray(image, path, intensity, significant_bits(header) if header is not None else None)
    return upright(gray, image)


# ----------------------------------------------------------------------------------------- DICOM
def is_dicom(path: str) -> bool:
    """Whether the file starts with the DICOM Part 10 preamble and b"DICM".

    Args:
        path: the file.

    Returns:
        True for a DICOM file.
    """
    from pydicom.misc import is_dicom as has_dicom_prefix

    return has_dicom_prefix(path)


def check_dicom(ds, path: str, max_pixels: int) -> None:
    """Refuse, by name, the DICOMs spml cannot use (see the module docstring); reads the header only.

    Args:
        ds: the pydicom dataset.
        path: the image file (named in errors).
        max_pixels: the largest image accepted.
    """
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    image_module = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PhotometricInterpretation")
    if any(ds.get(key) in (None, "") for key in image_module):
        kind = UID(str(ds.get("SOPClassUID", ""))).name or "unknown SOP class"
        raise image_error(
            path, f"a DICOM without image pixels ({kind}, modality {ds.get('Modality', '?')}): not an image"
        )
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise image_error(path, f"a multi-frame DICOM ({frames} frames); spml reads single-frame images")
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise image_error(
            path,
            f"DICOM photometric interpretation {photometric!r} is not supported; spml reads "
            "greyscale MONOCHROME1/MONOCHROME2 images",
        )
    check_pixels(path, (int(ds.Columns), int(ds.Rows)), max_pixels)
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is not None and syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            raise image_error(
                path, f"DICOM transfer syntax {syntax.name} ({syntax}) has no decoder in pydicom"
            ) from None
        if not available:
            raise MissingDecoderError(
                f"{path}: compressed DICOM ({syntax.name}) needs a pixel data decoder that "
                f"is not installed: {DICOM_EXTRA}"
            )


def has_voi_lut(ds) -> bool:
    """Whether the header has a usable VOI LUT Sequence (what pydicom's apply_voi_lut prefers over a window).

    Args:
        ds: the pydicom dataset.

    Returns:
        True when usable.
    """
    items = ds.get("VOILUTSequence")
    return bool(items) and None not in (items[0].get("LUTDescriptor"), items[0].get("LUTData"))


def has_window(ds) -> bool:
    """Whether the header has a usable first WindowCenter/WindowWidth.

    A width below 1 (0: what some writers put when there is no window) declares none.

    Args:
        ds: the pydicom dataset.

    Returns:
        True when usable.
    """
    if any(ds.get(key) in (None, "") for key in ("WindowCenter", "WindowWidth")):
        return False
    width = ds.WindowWidth
    return float(width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width) >= 1


def voi_to_gray(values: np.ndarray, ds) -> np.ndarray:
    """The header's VOI LUT (else its first window) applied to modality values, its output range -> [0, 255].

    Args:
        values: (H, W) modality values.
        ds: the pydicom dataset.

    Returns:
        float32 (H, W) in [0, 255].
    """
    from pydicom.pixels import apply_voi, apply_windowing

    if has_voi_lut(ds):
        entries, first, _ = ds.VOILUTSequence[0].LUTDescriptor
        domain = np.arange(first, first + (entries or 2**16))  # every input the LUT maps
        outputs = apply_voi(domain, ds)
        values = apply_voi(np.rint(values).astype(np.int64), ds)  # LUT inputs are integers
    else:
        with np.errstate(over="ignore"):  # SIGMOID windows at the extremes
            outputs = apply_windowing(np.array([-1e30, 1e30]), ds)  # the window's output range
        values = apply_windowing(values, ds)
    return scale_to_gray(values, float(outputs.min()), float(outputs.max()))


def dicom_gray(path: str, intensity: Intensity, max_pixels: int) -> np.ndarray:
    """Gray of a single-frame greyscale DICOM (see the module docstring).

    Args:
        path: the image file (named in errors).
        intensity: the intensity policy.
        max_pixels: the largest image accepted.

    Returns:
        float32 (H, W) in [0, 255].
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    with pydicom_errors(path):
        ds = pydicom.dcmread(path)
    check_dicom(ds, path, max_pixels)
    if "PixelData" not in ds:
        raise image_error(path, "a DICOM without PixelData: not an image")
    with pydicom_errors(path):
        stored = ds.pixel_array
        values = apply_modality_lut(stored, ds)
        padding = padding_mask(stored, ds)
        if intensity.policy == "auto" and (has_voi_lut(ds) or has_window(ds)):
            gray = voi_to_gray(values, ds)
        elif intensity.policy == "bits" or int(ds.BitsStored) <= 8:
            bits, signed = int(ds.BitsStored), int(ds.get("PixelRepresentation", 0)) == 1
            ends = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
            black, white = np.sort(apply_modality_lut(ends, ds).astype(np.float64))
            gray = scale_to_gray(values, black, white)
        else:
            gray = scale_to_gray(values, *percentile_range(values[~padding], intensity))
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":  # 0 is white
        gray = np.float32(255) - gray
    gray[padding] = 0  # outside the film: black, under either interpretation
    return gray


def padding_mask(stored: np.ndarray, ds) -> np.ndarray:
    """The pixels the header declares as padding, which take no part in the window.

    PixelPaddingValue, up to PixelPaddingRangeLimit: the collimation border many CR/DX writers fill. All False
    without one, or when the whole image would be padding.

    Args:
        stored: (H, W) stored pixel values.
        ds: the pydicom dataset.

    Returns:
        (H, W) bool.
    """
    value, limit = ds.get("PixelPaddingValue"), ds.get("PixelPaddingRangeLimit")
    if value is None:
        return np.zeros(stored.shape, bool)
    low, high = sorted((int(value), int(value if limit is None else limit)))
    mask = (stored >= low) & (stored <= high)
    return mask if not mask.all() else np.zeros(stored.shape, bool)


@contextlib.contextmanager
def pydicom_errors(path: str) -> Iterator[None]:
    """pydicom's errors on damaged files or inconsistent headers -> ImageError naming the file.

    pydicom raises many exception types there (ValueError, KeyError, struct.error, ...); the blocks hold pydicom's
    reading and LUT calls and the arithmetic on their results.

    Args:
        path: the DICOM file.

    Yields:
        None: the guarded block.
    """
    from pydicom.errors import InvalidDicomError

    try:
        yield
    except (ImageError, MissingDecoderError, OSError):
        raise
    except InvalidDicomError as err:
        raise image_error(path, f"not a valid DICOM file ({err})") from None
    except Exception as err:  # noqa: BLE001 (see the docstring)
        raise image_error(path, f"truncated or corrupt DICOM data ({type(err).__name__}: {err})") from None


# ----------------------------------------------------------------------------------------- entry points
def check_pixels(path: str, size: tuple[int, int], max_pixels: int) -> None:
    """ImageError when an image of `size` has more than `max_pixels` pixels.

    Args:
        path: the image file (named in errors).
        size: (width, height).
        max_pixels: the largest image accepted.
    """
    width, height = size
    if width * height > max_pixels:
        raise image_error(
            path,
            f"image is {width} x {height} = {width * height:,} pixels, over the "
            f"limit of {max_pixels:,}; downscale it first",
        )


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Squash to (size, size): area averaging when shrinking, bicubic when enlarging.

    Args:
        image: the gray image.
        size: the side in pixels.

    Returns:
        The resized image.
    """
    if image.size == (size, size):
        return image
    shrinking = image.width >= size and image.height >= size
    return image.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)


@contextlib.contextmanager
def named_errors(path: str) -> Iterator[None]:
    """Turn the errors of reading a bad file into ImageError naming `path` and the reason.

    Args:
        path: the image file.

    Yields:
        None: the guarded block.
    """
    try:
        if os.path.getsize(path) == 0:
            raise image_error(path, "the file is empty (0 bytes)")
        yield
    except (ImageError, MissingDecoderError):
        raise
    except FileNotFoundError:
        raise image_error(path, "the file does not exist") from None
    except IsADirectoryError:
        raise image_error(path, "is a directory, not an image file") from None
    except UnidentifiedImageError:
        raise image_error(
            path, "not a recognised image file (unknown format; DICOM files need the 128-byte preamble and 'DICM')"
        ) from None
    except Image.DecompressionBombError as err:
        raise image_error(path, f"image too large: {err}") from None
    except OSError as err:
        if err.errno is not None:  # a file-system error (permissions, I/O), not bad image data
            raise image_error(path, f"cannot read the file: {err.strerror}") from None
        raise image_error(path, f"truncated or corrupt image data ({err})") from None
    except (SyntaxError, ValueError, EOFError, png.Error) as err:  # Pillow's and pypng's other corrupt-data errors
        raise image_error(path, f"truncated or corrupt image data ({err or type(err).__name__})") from None


def check_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Open `path` and read its header only (no pixel decoding); raises ImageError.

    The refusals load_gray can make before decoding (missing, empty, not an image, over `max_pixels`, unusable DICOM).

    Args:
        path: the image file.
        max_pixels: the largest image accepted.

    Returns:
        (width, height) of the film.
    """
    import pydicom

    path = os.fspath(path)
    with named_errors(path):
        if is_dicom(path):
            with pydicom_errors(path):
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            check_dicom(ds, path, max_pixels)
            return int(ds.Columns), int(ds.Rows)
        with Image.open(path) as image:
            film_page(image, path)
            check_pixels(path, image.size, max_pixels)
            return image.size


def film_page(image: Image.Image, path: str) -> None:
    """Seek a multi-page image to its largest page.

    A TIFF with a thumbnail page before the film, as some PACS exports write; several pages of that size (several
    films in one file) are refused by name, as multi-frame DICOMs are. Reads the page headers only.

    Args:
        image: the opened image.
        path: the image file (named in errors).
    """
    if getattr(image, "n_frames", 1) == 1:
        return
    sizes = [page.size for page in ImageSequence.Iterator(image)]
    areas = [width * height for width, height in sizes]
    largest = max(areas)
    if areas.count(largest) > 1:
        width, height = sizes[areas.index(largest)]
        raise image_error(
            path,
            f"{len(sizes)} pages, {areas.count(largest)} of them {width} x {height} films; spml "
            "reads one film per file",
        )
    image.seek(areas.index(largest))


def load_gray(
    path: str | os.PathLike, size: int, intensity: Intensity = Intensity(), max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode `path` -> square grayscale (see the module docstring).

    Raises ImageError naming the file and the reason (missing, empty, not an image, truncated/corrupt, over
    `max_pixels`, unsupported mode, unusable DICOM), MissingDecoderError for a compressed DICOM without its decoder
    plugin.

    Args:
        path: the image file.
        size: the output side in pixels.
        intensity: the intensity policy.
        max_pixels: the largest image accepted.

    Returns:
        uint8 (size, size).
    """
    path = os.fspath(path)
    with named_errors(path):
        if is_dicom(path):
            gray = Image.fromarray(dicom_gray(path, intensity, max_pixels), mode="F")
        else:
            with Image.open(path) as image:
                film_page(image, path)
                check_pixels(path, image.size, max_pixels)
                gray = pillow_gray(image, path, size, intensity)
        gray = resize_square(gray, size)
    if gray.mode == "F":
        return np.rint(np.clip(np.asarray(gray), 0, 255)).astype(np.uint8)
    return np.asarray(gray, dtype=np.uint8)
