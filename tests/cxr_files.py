"""Tiny datasets in the real file formats of NIH ChestX-ray14, CheXpert and MIMIC-CXR-JPG (label files,
official split files, 32 px images), written into a folder, for end-to-end runs of the readers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from spml.data.readers.chexpert import CLASSES as CHEXPERT_CLASSES
from spml.data.readers.nih import CLASSES as NIH_CLASSES

COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def save_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)).save(path)


def random_labels(rng: np.random.Generator, rows: int, classes: int, uncertain: bool) -> np.ndarray:
    """(rows, classes) 1 / 0 / -1 / NaN values, each row with at least one certain positive."""
    values = rng.choice([1.0, 0.0, -1.0, np.nan] if uncertain else [1.0, 0.0], size=(rows, classes),
                        p=[0.25, 0.35, 0.1, 0.3] if uncertain else [0.3, 0.7])
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
            rows.append(f"{name},{'|'.join(findings) or 'No Finding'},{followup},{patient},50,M,"
                        f"{'PA' if followup % 2 == 0 else 'AP'},1024,1024,0.14,0.14\n")
            save_image(root / "images" / name, patient * 10 + followup)
            (test if patient % 4 == 0 else []).append(name)
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Sex,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")
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
                rows.append({"Path": f"CheXpert-v1.0-small/{folder}/patient{patient:05d}/study{study}/view{view}_"
                                     f"{'frontal' if frontal else 'lateral'}.jpg", "Sex": "Female", "Age": 60,
                             "Frontal/Lateral": "Frontal" if frontal else "Lateral", "AP/PA": "AP" if frontal else ""})
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


def write_mimic(root: Path, subjects: int = 16, seed: int = 0) -> Path:
    """mimic-cxr-2.0.0-{chexpert,metadata,split}.csv and files/pXX/p<subject>/s<study>/<dicom>.jpg."""
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
                images.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                               "ViewPosition": ["PA", "AP", "LATERAL"][v % 3] if v < 2 else "LATERAL",
                               "split": split})
                save_image(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg",
                           len(images))
    labels = pd.DataFrame(studies)
    values = random_labels(rng, len(labels), len(CHEXPERT_CLASSES), uncertain=True)
    labels = pd.concat([labels, pd.DataFrame(values, columns=list(CHEXPERT_CLASSES))], axis=1)
    labels.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    meta = pd.DataFrame(images)
    meta.drop(columns="split").to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    meta[["dicom_id", "study_id", "subject_id", "split"]].to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)
    return root


WRITERS = {"nih": write_nih, "chexpert": write_chexpert, "mimic": write_mimic}
