"""Decoding speed (images/s, one thread) of spml.data.images per file kind, and of the header check; not a test.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tests/data/decode_speed.py [--size 2048] [--target 256] [--repeats 3]

Films of --size x --size pixels of each kind are written by other tools (tests/cxr_files.py) into a temporary
folder and decoded to --target px; the 811 real NIH sample PNGs (64 px) are decoded at 64 px. Run it with
PYTHONPATH at another checkout to compare versions (kinds that version cannot read print their error).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from spml.data import images
from tests.cxr_files import film16, write_dicom, write_png16, write_png16_colour

NIH_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "nih1000" / "images"


def rate(read: Callable[[str], object], paths: list[str], repeats: int) -> str:
    """Best-of-`repeats` images/s of `read` over `paths`, or the error it raised."""
    try:
        best = min(timed(read, paths) for _ in range(repeats))
    except ValueError as err:
        return f"fails: {str(err).split(': ', 1)[-1][:60]}"
    return f"{len(paths) / best:,.1f}"


def timed(read: Callable[[str], object], paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        read(path)
    return time.perf_counter() - start


def write_films(folder: Path, size: int) -> dict[str, Path]:
    film = film16(12, size)
    kinds = {
        "8-bit gray PNG": lambda p: Image.fromarray((film // 16).astype(np.uint8)).save(p),
        "8-bit JPEG (quality 95)": lambda p: Image.fromarray((film // 16).astype(np.uint8)).save(p, quality=95),
        "16-bit PNG, no sBIT (OpenCV)": lambda p: write_png16(p, film, "opencv"),
        "16-bit PNG, sBIT 12 (pypng)": lambda p: write_png16(p, film, "pypng", sbit=12),
        "48-bit RGB PNG (OpenCV)": lambda p: write_png16_colour(p, np.repeat(film[..., None], 3, 2), "opencv"),
        "DICOM 12-bit, window": lambda p: write_dicom(p, film, window=(2048, 4096)),
        "DICOM 12-bit, no window": lambda p: write_dicom(p, film),
        "DICOM RLE Lossless": lambda p: write_dicom(p, film, window=(2048, 4096), syntax=RLELossless),
        "DICOM JPEG-LS Lossless": lambda p: write_dicom(p, film, window=(2048, 4096), syntax=JPEGLSLossless),
        "DICOM JPEG 2000 Lossless": lambda p: write_dicom(p, film, window=(2048, 4096), syntax=JPEG2000Lossless),
    }
    paths = {}
    for i, (kind, write) in enumerate(kinds.items()):
        paths[kind] = folder / f"{i}{'.jpg' if 'JPEG (' in kind else '.dcm' if 'DICOM' in kind else '.png'}"
        write(paths[kind])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--target", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    nih = sorted(str(p) for p in NIH_IMAGES.glob("*.png"))
    check = getattr(images, "check_image", None)
    print("| kind | images/s |\n|---|---:|")
    print(f"| {len(nih)} NIH sample PNGs, header check | {rate(check, nih, 5) if check else 'n/a'} |")
    print(f"| {len(nih)} NIH sample PNGs, decode 64 px | {rate(lambda p: images.load_gray(p, 64), nih, 5)} |")
    with tempfile.TemporaryDirectory() as folder:
        for kind, path in write_films(Path(folder), args.size).items():
            decode = rate(lambda p: images.load_gray(p, args.target), [str(path)] * 4, args.repeats)
            print(f"| {args.size} px {kind} -> {args.target} px | {decode} |")


if __name__ == "__main__":
    main()
