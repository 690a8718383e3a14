"""Data fixtures: the real NIH / CheXpert label files (read once per session) and tiny files in tmp_path."""

from pathlib import Path

import pytest

from spml.config import load_config

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
NIH_LABELS = SHARED / "nih" / "Data_Entry_2017_v2020.csv.gz"
NIH_IMAGES = SHARED / "nih1000"
CHEXPERT_LABELS = SHARED / "chexpert" / "train.csv.gz"
TOOLS = Path(__file__).resolve().parents[2] / "tools"


def data_config(*overrides: str):
    """A DataConfig from dotted overrides (values as on the command line)."""
    return load_config([], [f"data.{item}" if not item.startswith("data.") else item for item in overrides]).data


def write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(path)


@pytest.fixture(scope="session")
def nih_table():
    from spml.data.readers.nih import read_nih

    if not NIH_LABELS.exists():
        pytest.skip("real NIH label file not available")
    return read_nih(str(NIH_IMAGES), str(NIH_LABELS))


@pytest.fixture(scope="session")
def chexpert_table():
    from spml.data.readers.chexpert import read_chexpert

    if not CHEXPERT_LABELS.exists():
        pytest.skip("real CheXpert label file not available")
    return read_chexpert(labels=str(CHEXPERT_LABELS))


NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
)


def nih_rows(*rows: tuple[str, str, str, str]) -> str:
    """(image, findings, patient, view) tuples -> NIH label file text."""
    return NIH_HEADER + "".join(
        f"{image},{findings},0,{patient},45,M,{view},2500,2048,0.14,0.14\n" for image, findings, patient, view in rows
    )


CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices\n"
)


def chexpert_row(path: str, labels: str = ",,,,,,,,,,,,,", view: str = "Frontal,AP") -> str:
    return f"{path},Female,60,{view},{labels}\n"


@pytest.fixture
def kit():
    """Helpers for tiny label files: kit.write, kit.config, kit.nih_rows, kit.chexpert_row, headers, paths."""
    from types import SimpleNamespace

    return SimpleNamespace(
        write=write,
        config=data_config,
        nih_rows=nih_rows,
        chexpert_row=chexpert_row,
        CHEXPERT_HEADER=CHEXPERT_HEADER,
        NIH_HEADER=NIH_HEADER,
        NIH_LABELS=NIH_LABELS,
        NIH_IMAGES=NIH_IMAGES,
        CHEXPERT_LABELS=CHEXPERT_LABELS,
        TOOLS=TOOLS,
    )
