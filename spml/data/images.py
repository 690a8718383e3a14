"""Decode one image file (PNG/JPEG/..., 8/16-bit, gray/RGB/RGBA/palette) to a square grayscale uint8 array.

Geometry: the image is squashed to size x size (no padding, aspect ratio not kept), the usual CXR
convention (CheXNet, torchxrayvision resize the whole film). Down-scaling averages pixel areas
(Pillow BOX); up-scaling is bicubic. JPEGs are first reduced by the decoder itself (Pillow `draft`,
a power-of-two DCT scaling that never goes below the target size).

Intensity: 8-bit gray is kept; colour images become ITU-R 601 luma (L = 0.299 R + 0.587 G + 0.114 B);
alpha is ignored (CXR PNGs with alpha carry an opaque channel); palette images map through the
palette. Integer images wider than 8 bits (PNG I;16, 32-bit I) are scaled by their actual bit depth,
the smallest b >= 8 with max < 2**b: a 12-bit film stored in 16 bits spans 0..4095 and maps 4095 -> 255
(never clipped, never divided by 65535 into a near-black image).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 100_000_000  # refuse larger images (a 10k x 10k film) before decoding them

_COLOUR_MODES = {"1", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


class ImageError(ValueError):
    """An image file that cannot be used; the message starts with the path, `reason` says why."""

    def __init__(self, message: str, *, path: str = "", reason: str = ""):
        super().__init__(message)
        self.path, self.reason = path, reason


def image_error(path: str, reason: str) -> ImageError:
    return ImageError(f"{path}: {reason}", path=str(path), reason=reason)


def to_gray(image: Image.Image, path: str = "") -> Image.Image:
    """Any Pillow image -> mode "L" (8-bit) or "F" (float in [0, 255], for > 8-bit and float images)."""
    if image.mode == "L":
        return image
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (32-bit)
        values = np.clip(np.asarray(image).astype(np.float32), 0, None)
        bits = max(8, int(values.max()).bit_length())
        return Image.fromarray(values * np.float32(255.0 / (2 ** bits - 1)), mode="F")
    if image.mode == "F":  # float TIFF: [0, 1] data is stretched to [0, 255], anything else clipped
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        scale = 255.0 if values.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(values * np.float32(scale), 0, 255), mode="F")
    if image.mode in _COLOUR_MODES:
        return image.convert("L")
    raise image_error(path, f"unsupported pixel mode {image.mode!r}")


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Squash to (size, size): area averaging when shrinking, bicubic when enlarging."""
    if image.size == (size, size):
        return image
    shrinking = image.width >= size and image.height >= size
    return image.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)


def load_gray(path: str | os.PathLike, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode `path` -> uint8 (size, size) grayscale. Raises ImageError naming the file and the reason
    (missing, empty, not an image, truncated/corrupt, over `max_pixels`, unsupported mode)."""
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise image_error(path, "the file is empty (0 bytes)")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise image_error(path, f"image is {width} x {height} = {width * height:,} pixels, over the "
                                        f"limit of {max_pixels:,}; downscale it first")
            if image.format == "JPEG":
                image.draft("L", (size, size))
            image.load()
            gray = resize_square(to_gray(image, path), size)
    except ImageError:
        raise
    except FileNotFoundError:
        raise image_error(path, "the file does not exist") from None
    except IsADirectoryError:
        raise image_error(path, "is a directory, not an image file") from None
    except UnidentifiedImageError:
        raise image_error(path, "not a recognised image file (unknown format)") from None
    except Image.DecompressionBombError as err:
        raise image_error(path, f"image too large: {err}") from None
    except OSError as err:
        if err.errno is not None:  # a file-system error (permissions, I/O), not bad image data
            raise image_error(path, f"cannot read the file: {err.strerror}") from None
        raise image_error(path, f"truncated or corrupt image data ({err})") from None
    except (SyntaxError, ValueError, EOFError) as err:  # Pillow's other corrupt-data errors
        raise image_error(path, f"truncated or corrupt image data ({err or type(err).__name__})") from None
    if gray.mode == "F":
        return np.rint(np.clip(np.asarray(gray), 0, 255)).astype(np.uint8)
    return np.asarray(gray, dtype=np.uint8)
