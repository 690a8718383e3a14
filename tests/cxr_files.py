"""Tiny datasets in the real file formats of NIH ChestX-ray14, CheXpert and MIMIC-CXR(-JPG) (label files,
official split files, 32 px images), written into a folder, for end-to-end runs of the readers; and image
files written the way imaging sites' tools write them (16-bit PNGs by Pillow, OpenCV and pypng, with and
without an sBIT chunk; 48-bit RGB and 16-bit grey+alpha PNGs; JPEGs with an EXIF Orientation; DICOMs built
with pydicom as modalities write them), never through spml's own code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import png
from PIL import Image, PngImagePlugin
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from spml.data.readers.chexpert import CLASSES as CHEXPERT_CLASSES
from spml.data.readers.nih import CLASSES as NIH_CLASSES

COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def save_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)).save(path)


def random_labels(rng: np.random.Generator, rows: int, classes: int, uncertain: bool) -> np.ndarray:
    """(rows, classes) 1 / 0 / -1 / NaN values, each row with at least one certain positive."""
    values = rng.choice(
        [1.0, 0.0, -1.0, np.nan] if uncertain else [1.0, 0.0],
        size=(rows, classes),
        p=[0.25, 0.35, 0.1, 0.3] if uncertain else [0.3, 0.7],
    )
    values[np.arange(rows), rng.integers(0, classes, rows)] = 1.0
    return values


def write_nih(root: Path, patients: int = 24, seed: int = 0) -> Path:
    """Data_Entry_2017_v2020.csv, images/<patient>_<followup>.png, train_val_list.txt / test_list.txt."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, test = [], []
    for patient in range(1, patients + 1):
        for followup in range(int(rng.integers(1, 3))):
            name = f"{patient:08d}_{followup:03d}.png"
            findings = [c for c in NIH_CLASSES if rng.random() < 0.2]
            rows.append(
                f"{name},{'|'.join(findings) or 'No Finding'},{followup},{patient},50,M,"
                f"{'PA' if followup % 2 == 0 else 'AP'},1024,1024,0.14,0.14\n"
            )
            save_image(root / "images" / name, patient * 10 + followup)
            (test if patient % 4 == 0 else []).append(name)
    header = (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Sex,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
    )
    (root / "Data_Entry_2017_v2020.csv").write_text(header + "".join(rows))
    names = [row.split(",")[0] for row in rows]
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(n for n in names if n not in test) + "\n")
    return root


def chexpert_frame(rng: np.random.Generator, folder: str, patients: range, uncertain: bool) -> pd.DataFrame:
    """Rows of one CheXpert CSV: 1-2 studies per patient, 1-3 views per study (the first frontal)."""
    rows = []
    for patient in patients:
        for study in range(1, int(rng.integers(1, 3)) + 1):
            for view in range(1, int(rng.integers(1, 4)) + 1):
                frontal = view < 3
                rows.append(
                    {
                        "Path": f"CheXpert-v1.0-small/{folder}/patient{patient:05d}/study{study}/view{view}_"
                        f"{'frontal' if frontal else 'lateral'}.jpg",
                        "Sex": "Female",
                        "Age": 60,
                        "Frontal/Lateral": "Frontal" if frontal else "Lateral",
                        "AP/PA": "AP" if frontal else "",
                    }
                )
    frame = pd.DataFrame(rows)
    values = random_labels(rng, len(frame), len(CHEXPERT_CLASSES), uncertain)
    study = frame["Path"].str.rsplit("/", n=1).str[0]
    values = pd.DataFrame(values).groupby(study.to_numpy()).transform("first").to_numpy()  # labels per study
    return pd.concat([frame, pd.DataFrame(values, columns=list(CHEXPERT_CLASSES))], axis=1)


def write_chexpert(root: Path, seed: int = 0) -> Path:
    """train.csv (1/0/-1/blank) and valid.csv (0/1 only; every competition label has positive and negative
    studies) with their images under root/train and root/valid."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train = chexpert_frame(rng, "train", range(1, 31), uncertain=True)
    valid = chexpert_frame(rng, "valid", range(64541, 64553), uncertain=False)
    study = valid["Path"].str.rsplit("/", n=1).str[0]
    first_of_study = ~study.duplicated()
    for c, name in enumerate(COMPETITION):  # alternate positive / negative studies per label
        flags = (np.cumsum(first_of_study.to_numpy()) + c) % 2
        valid[name] = flags.astype(float)
    for frame, file in ((train, "train.csv"), (valid, "valid.csv")):
        frame.to_csv(root / file, index=False)
        for i, path in enumerate(frame["Path"]):
            save_image(root / path.split("/", 1)[1], i)
    return root


def write_chexpert_test(root: Path, studies: int = 6, seed: int = 0) -> pd.DataFrame:
    """The official test set's layout: test_labels.csv (Study = CheXpert-v1.0/test/patientNNNNN/studyN + the 14
    observations, 0/1, one row per study) beside train.csv, and 1-3 images per study folder under root/test (the
    third a lateral view). Every competition label has positive and negative studies. Returns the file's frame."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(studies):
        study = f"test/patient{64741 + s // 2:05d}/study{s % 2 + 1}"
        rows.append(
            {
                "Study": f"CheXpert-v1.0/{study}",
                **{
                    name: float((s + c) % 2) if name in COMPETITION else float(rng.random() < 0.3)
                    for c, name in enumerate(CHEXPERT_CLASSES)
                },
            }
        )
        for view in range(1, int(rng.integers(1, 4)) + 1):
            save_image(root / study / f"view{view}_{'frontal' if view < 3 else 'lateral'}.jpg", 1000 + 10 * s + view)
    frame = pd.DataFrame(rows)
    frame.to_csv(root / "test_labels.csv", index=False)
    return frame


def write_mimic(root: Path, subjects: int = 16, seed: int = 0, image_format: str = "jpg") -> Path:
    """mimic-cxr-2.0.0-{chexpert,metadata,split}.csv and files/pXX/p<subject>/s<study>/<dicom>.jpg (image_format
    "dcm": 12-bit DICOMs named <dicom>.dcm, as in the MIMIC-CXR DICOM release)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    studies, images = [], []
    for s in range(subjects):
        subject = str(10000000 + s)
        for k in range(int(rng.integers(1, 3))):
            study = str(50000000 + 10 * s + k)
            studies.append({"subject_id": subject, "study_id": study})
            for v in range(int(rng.integers(1, 3))):
                dicom = f"d{s:03d}{k}{v}"
                split = "test" if s % 4 == 0 else "validate" if s % 4 == 1 else "train"
                images.append(
                    {
                        "dicom_id": dicom,
                        "subject_id": subject,
                        "study_id": study,
                        "ViewPosition": ["PA", "AP", "LATERAL"][v % 3] if v < 2 else "LATERAL",
                        "split": split,
                    }
                )
                path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.{image_format}"
                if image_format == "dcm":
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_dicom(path, film16(12, 32, seed=len(images)), window=(2048, 4096))
                else:
                    save_image(path, len(images))
    labels = pd.DataFrame(studies)
    values = random_labels(rng, len(labels), len(CHEXPERT_CLASSES), uncertain=True)
    labels = pd.concat([labels, pd.DataFrame(values, columns=list(CHEXPERT_CLASSES))], axis=1)
    labels.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    meta = pd.DataFrame(images)
    meta.drop(columns="split").to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    meta[["dicom_id", "study_id", "subject_id", "split"]].to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)
    return root


WRITERS = {"nih": write_nih, "chexpert": write_chexpert, "mimic": write_mimic}


# ----------------------------------------------------------------------------------------------- image files
def film16(bits: int = 12, size: int = 64, seed: int = 0) -> np.ndarray:
    """uint16 (size, size) chest-film-like data of `bits` significant bits, as a detector delivers it: a body
    (heart on the left of the image, so the film is not symmetric) over a darker background, noise, using about
    8-85 % of the 0..2**bits-1 range (a detector's film rarely spans its whole range)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    body = np.exp(-(((x - 0.5) / 0.38) ** 4 + ((y - 0.55) / 0.45) ** 4))
    lungs = np.exp(-(((np.abs(x - 0.5) - 0.18) / 0.11) ** 2 + ((y - 0.45) / 0.22) ** 2))
    heart = np.exp(-(((x - 0.38) / 0.12) ** 2 + ((y - 0.62) / 0.1) ** 2))
    unit = 0.08 + 0.6 * body - 0.35 * lungs + 0.3 * heart + rng.normal(0, 0.02, (size, size))
    return np.rint(np.clip(unit, 0.0, 0.85) * (2**bits - 1)).astype(np.uint16)


def write_png16(path: Path, values: np.ndarray, writer: str = "pillow", sbit: int | None = None) -> Path:
    """A 16-bit grayscale PNG as site tools write it. pillow: the values as given (an sBIT chunk added through
    PngInfo when `sbit`); opencv: cv2.imwrite (never an sBIT chunk); pypng: with `sbit`, pypng's bitdepth=sbit,
    which scales the values to 16 bits and writes the sBIT chunk as the PNG specification asks."""
    values = np.asarray(values, np.uint16)
    if writer == "pillow":
        info = PngImagePlugin.PngInfo()
        if sbit:
            info.add(b"sBIT", bytes([sbit]))
        Image.fromarray(values).save(path, pnginfo=info)
    elif writer == "opencv":
        assert sbit is None and cv2.imwrite(str(path), values)
    elif writer == "pypng":
        with open(path, "wb") as handle:
            png.Writer(values.shape[1], values.shape[0], greyscale=True, bitdepth=sbit or 16).write(handle, values)
    else:
        raise ValueError(writer)
    return path


def write_png16_colour(path: Path, channels: np.ndarray, writer: str = "pypng", sbit: int | None = None) -> Path:
    """A 16-bit PNG of (H, W, C) channels: C=2 grey+alpha, 3 RGB (48-bit), 4 RGBA (64-bit). opencv writes RGB(A)
    (given in BGR(A) order, as OpenCV keeps them); pypng writes every layout (bitdepth=sbit scales + sBIT)."""
    channels = np.asarray(channels, np.uint16)
    height, width, planes = channels.shape
    if writer == "opencv":
        assert sbit is None and cv2.imwrite(str(path), channels[..., [2, 1, 0, 3][:planes]])
        return path
    with open(path, "wb") as handle:
        png.Writer(width, height, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=sbit or 16).write(
            handle, channels.reshape(height, width * planes)
        )
    return path


def write_rotated_jpeg(path: Path, upright: np.ndarray, orientation: int) -> Path:
    """An 8-bit JPEG stored rotated, as a camera or scanner stores it, with the EXIF Orientation (6: turn 90
    degrees clockwise to view, 8: counter-clockwise) that brings it upright."""
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(upright).transpose(stored).save(path, quality=95, exif=exif.tobytes())
    return path


DX_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")  # Digital X-Ray Image Storage - For Presentation
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")


def dicom_file(sop_class: UID) -> FileDataset:
    """A DICOM Part 10 dataset with the patient/study/series/instance attributes a modality writes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.StudyDate = "P0001", "Test^Patient", "20240101"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "SR" if sop_class == BASIC_TEXT_SR else "DX"
    return ds


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    rescale: tuple[float, float] | None = None,
    window: tuple | None = None,
    voi_lut: tuple[Sequence[int], np.ndarray] | None = None,
    syntax: UID | None = None,
    high_bits: np.ndarray | None = None,
) -> Path:
    """A single- or multi-frame (stored (F, H, W)) greyscale DX image. rescale: (slope, intercept); window:
    (center, width), each a number or a list (several windows); voi_lut: (LUTDescriptor, LUTData); syntax: a
    compressed transfer syntax pydicom or its plugins encode (RLE Lossless, JPEG-LS, JPEG 2000); high_bits: values
    OR-ed into the unused bits above BitsStored (overlay bits some modalities leave there)."""
    ds = dicom_file(DX_PRESENTATION)
    frames = stored.shape[0] if stored.ndim == 3 else 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelSpacing = [0.14, 0.14]
    if frames > 1:
        ds.NumberOfFrames = frames
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = rescale[0], rescale[1], "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()  # LUTData as OW bytes, as modalities write it
        item.add_new("LUTDescriptor", "US", list(voi_lut[0]))
        item.add_new("LUTData", "OW", np.asarray(voi_lut[1], "<u2").tobytes())
        ds.VOILUTSequence = [item]
    pixels = stored.astype(np.int16 if signed else np.uint16)
    if high_bits is not None:
        pixels = pixels | high_bits.astype(pixels.dtype)
    ds.PixelData = pixels.tobytes()
    if syntax is not None:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_sr(path: Path) -> Path:
    """A Basic Text SR document (a report, no pixels), as a reporting system stores it next to the images."""
    ds = dicom_file(BASIC_TEXT_SR)
    ds.ValueType, ds.ContinuityOfContent, ds.CompletionFlag, ds.VerificationFlag = (
        "CONTAINER",
        "SEPARATE",
        "COMPLETE",
        "UNVERIFIED",
    )
    ds.save_as(path, enforce_file_format=True)
    return path


def write_every_kind(folder: Path) -> list[Path]:
    """One file of each real-site kind above (64 px films) in `folder`: 16-bit PNGs from each writer with and
    without sBIT and with a marker pixel, 48/64-bit RGB(A) and 16-bit grey+alpha PNGs, rotated JPEGs, and
    DICOMs (windows, VOI LUT, rescale, MONOCHROME1, signed, overlay bits, compressed transfer syntaxes)."""
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    folder.mkdir(parents=True, exist_ok=True)
    film, marked = film16(12), film16(12)
    marked[2:4, 2:4] = 65535
    rgb = np.repeat(film[..., None], 3, 2)
    alpha = np.full((64, 64, 1), 65535, np.uint16)
    lut = np.rint(4095 * (np.arange(4096) / 4095) ** 0.6)
    paths = [
        write_png16(folder / f"{writer}{'_sbit' if sbit else ''}.png", film, writer, sbit)
        for writer, sbit in (("pillow", None), ("pillow", 12), ("opencv", None), ("pypng", None), ("pypng", 12))
    ]
    paths += [
        write_png16(folder / "marker.png", marked, "opencv"),
        write_png16_colour(folder / "rgb48.png", rgb, "opencv"),
        write_png16_colour(folder / "rgba64.png", np.concatenate([rgb, alpha], 2), "pypng"),
        write_png16_colour(folder / "la16.png", np.concatenate([film[..., None], alpha], 2), "pypng"),
        write_rotated_jpeg(folder / "rotated.jpg", (film // 16).astype(np.uint8), 6),
    ]
    dicoms = {
        "window": {"window": (1500, 2000)},
        "windows": {"window": ([1500, 800], [2000, 600])},
        "voi_lut": {"voi_lut": ([4096, 0, 12], lut)},
        "rescale": {"rescale": (2.0, -1024.0)},
        "mono1": {"photometric": "MONOCHROME1"},
        "overlay": {"high_bits": np.full(film.shape, 1 << 14)},
        "rle": {"syntax": RLELossless},
        "jpegls": {"syntax": JPEGLSLossless},
        "j2k": {"syntax": JPEG2000Lossless, "window": (1500, 2000)},
    }
    paths += [write_dicom(folder / f"{name}.dcm", film, **options) for name, options in dicoms.items()]
    paths.append(write_dicom(folder / "signed.dcm", film.astype(np.int16) - 2048, signed=True))
    return paths
