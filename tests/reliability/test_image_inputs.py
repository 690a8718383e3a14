"""Real-site image inputs through the tools as a user calls them: training on a CSV that lists DICOMs and 16-bit
PNGs, on a MIMIC-CXR DICOM tree, prepare_data.py caching DICOMs (with the intensity policy in meta.json), and
predict.py on a folder mixing PNG, DICOM, a broken image and files that are not images."""

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.uid import RLELossless

from spml.data.cache import ImageCache
from spml.data.images import Intensity, load_gray
from tests.cxr_files import film16, write_dicom, write_mimic, write_png16, write_sr
from tests.reliability.conftest import CSV_RUN, NUM_IMAGES, csv_run_args, error_line, labels_for, tiny_run_args

FAST = ("model.backbone=resnet10t", "train.max_steps=3")


@pytest.fixture
def mixed_dir(png_folder, tmp_path) -> Path:
    """The 40 NIH films as a site may store them, with labels.csv (path,A,B): 12-bit DICOMs with a window in the
    header, MONOCHROME1 RLE-compressed DICOMs without one, 16-bit PNGs (OpenCV, no sBIT) and 8-bit PNGs."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = ["path,A,B"]
    for i in range(NUM_IMAGES):
        film = np.asarray(Image.open(png_folder / f"img{i:02d}.png"), np.uint16) * 16 + i % 16  # 12 bits
        name = f"img{i:02d}.{'png' if i % 4 >= 2 else 'dcm'}"
        if i % 4 == 0:
            write_dicom(folder / name, film, window=(2048, 4096))
        elif i % 4 == 1:
            write_dicom(folder / name, 4095 - film, photometric="MONOCHROME1", syntax=RLELossless)
        elif i % 4 == 2:
            write_png16(folder / name, film, "opencv")
        else:
            (folder / name).write_bytes((png_folder / name).read_bytes())
        rows.append("{},{},{}".format(name, *labels_for(i)))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_train_on_a_csv_of_dicoms_and_16bit_pngs(cli, mixed_dir, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", *csv_run_args(mixed_dir, run, *FAST))
    assert code == 0, err
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["n_images"] == 8 and not (run / "skipped_images.csv").exists()


def test_prepare_data_caches_dicoms_and_training_reads_the_cache(cli, mixed_dir, tmp_path):
    write_sr(mixed_dir / "img05.dcm")  # a report where an image should be: recorded as failed in the cache
    cache = tmp_path / "cache"
    dataset = [
        "--dataset",
        "csv",
        "--size",
        "32",
        f"data.labels={mixed_dir / 'labels.csv'}",
        "data.csv.label_columns=[A,B]",
    ]
    code, out, err = cli("prepare_data", *dataset, "--out", str(cache), "--workers", "2")
    assert code == 0, err
    assert "1 images could not be decoded" in out and "img05.dcm: a DICOM without image pixels (Basic Text SR" in out
    assert json.loads((cache / "meta.json").read_text())["intensity"] == Intensity().as_json()
    opened = ImageCache(str(cache), 32, Intensity())
    for path in (mixed_dir / "img00.dcm", mixed_dir / "img01.dcm", mixed_dir / "img02.png"):
        assert np.array_equal(opened.load(int(opened.rows([str(path)])[0])), load_gray(path, 32))

    args = csv_run_args(mixed_dir, tmp_path / "run", *FAST, f"data.cache={cache}")
    code, _, err = cli("train", *args)  # data.bad_images=error: the cache's record stops the run before training
    assert code == 2 and "img05.dcm: a DICOM without image pixels" in error_line(err)
    assert "Found before training" in error_line(err) and not (tmp_path / "run" / "checkpoints").exists()
    code, _, err = cli("train", *args, "data.bad_images=skip")
    assert code == 0, err
    skipped = pd.read_csv(tmp_path / "run" / "skipped_images.csv")
    assert skipped["path"].tolist() == [str(mixed_dir / "img05.dcm")]
    code, _, err = cli(
        "train", *csv_run_args(mixed_dir, tmp_path / "other", f"data.cache={cache}", "data.intensity=window")
    )
    assert code == 2
    assert (
        "was decoded with data.intensity=auto data.intensity_percentiles=[0.5, 99.5], this run asks for "
        "data.intensity=window"
    ) in error_line(err)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.intensity=max", "data.intensity: 'max' is not one of ['auto', 'bits', 'window']"),
        ("data.intensity_percentiles=[99,1]", "data.intensity_percentiles=[99.0, 1.0]: give [low, high] with 0 <= low"),
    ],
)
def test_a_bad_intensity_policy_stops_before_training(cli, tmp_path, override, message):
    code, _, err = cli("train", *tiny_run_args(tmp_path / "run", override))
    assert code == 2 and message in error_line(err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_on_the_mimic_cxr_dicom_release(cli, tmp_path):
    root = write_mimic(tmp_path / "mimic", image_format="dcm")
    args = [
        *CSV_RUN[:2],
        "data.dataset=mimic",
        f"data.root={root}",
        "data.mimic_format=dcm",
        *(item for item in CSV_RUN[2:] if not item.startswith(("data.csv", "data.dataset"))),
        *FAST,
        f"train.out={tmp_path / 'run'}",
    ]
    code, _, err = cli("train", *args)
    assert code == 0, err
    assert (tmp_path / "run" / "eval" / "metrics.json").exists()


@pytest.fixture
def folder(tmp_path) -> Path:
    """A folder as a site exports it: 8-bit and 16-bit PNGs, DICOMs (one without a suffix), a broken PNG, a report
    (DICOM SR), a README and a spreadsheet."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    film = film16(12)
    Image.fromarray((film // 16).astype(np.uint8)).save(folder / "a8bit.png")
    write_png16(folder / "b16bit.png", film, "opencv")
    write_dicom(folder / "c.dcm", film, window=(1500, 2000))
    write_dicom(folder / "sub" / "IM0001", film, photometric="MONOCHROME1")  # DICOMDIR-style name
    (folder / "broken.png").write_text("<html><body>404 Not Found</body></html>")
    write_sr(folder / "report.dcm")
    (folder / "README.txt").write_text("exported films\n")
    (folder / "sub" / "labels.xlsx").write_bytes(b"PK\x03\x04")
    return folder


def test_predict_scores_every_image_of_a_mixed_folder_and_reports_the_rest(cli, reference_run, folder, tmp_path):
    out = tmp_path / "p.csv"
    code, stdout, err = cli("predict", str(reference_run), str(folder), "--out", str(out))
    assert code == 0, err
    scored = pd.read_csv(out)["path"].tolist()
    assert scored == [str(folder / name) for name in ("a8bit.png", "b16bit.png", "c.dcm", "sub/IM0001")]
    not_scored = pd.read_csv(tmp_path / "p_not_scored.csv").set_index("path")["reason"]
    assert sorted(not_scored.index) == sorted(
        str(folder / name) for name in ("README.txt", "broken.png", "report.dcm", "sub/labels.xlsx")
    )
    assert "not a recognised image file" in not_scored[str(folder / "broken.png")]
    assert "a DICOM without image pixels (Basic Text SR Storage" in not_scored[str(folder / "report.dcm")]
    assert "not an image file (suffix .txt" in not_scored[str(folder / "README.txt")]
    assert "not scored: 4 files" in err and f"{folder / 'broken.png'}: not a recognised image file" in err


def test_predict_with_bad_images_error_stops_naming_the_file(cli, reference_run, folder, tmp_path):
    out = tmp_path / "p.csv"
    code, _, err = cli("predict", str(reference_run), str(folder), "--out", str(out), "--bad-images", "error")
    assert code == 2
    assert f"{folder / 'broken.png'}: not a recognised image file" in error_line(err)
    assert "--bad-images skip scores the other files" in error_line(err) and not out.exists()


def test_a_burned_in_marker_does_not_change_predictions(cli, reference_run, tmp_path):
    """Found before: one 65535 pixel in a 16-bit film changed a prediction from 0.16 to 0.47. (The tiny synthetic-set
    model here is much less sensitive: the old decoding moved its predictions by up to 0.021, now 0.0013.)"""
    film = film16(12)
    marked = film.copy()
    marked[2:4, 2:4] = 65535
    write_png16(tmp_path / "film.png", film, "opencv")
    write_png16(tmp_path / "marked.png", marked, "opencv")
    code, _, err = cli(
        "predict",
        str(reference_run),
        str(tmp_path / "film.png"),
        str(tmp_path / "marked.png"),
        "--out",
        str(tmp_path / "p.csv"),
    )
    assert code == 0, err
    frame = pd.read_csv(tmp_path / "p.csv")
    probs = frame[[c for c in frame.columns[1:] if not c.endswith("_decision")]].to_numpy()
    assert np.abs(probs[0] - probs[1]).max() < 0.005, probs


def prepare_cache(cli, dataset_dir: Path, cache: Path, *extra: str) -> None:
    code, _, err = cli(
        "prepare_data",
        "--dataset",
        "csv",
        "--size",
        "32",
        f"data.labels={dataset_dir / 'labels.csv'}",
        "data.csv.label_columns=[A,B]",
        "--out",
        str(cache),
        "--workers",
        "0",
        *extra,
    )
    assert code == 0, err


def test_a_cache_notices_films_re_exported_under_the_same_names(cli, dataset_dir, tmp_path):
    """Found before: 20 films re-exported after the cache was built trained on their old pixels, without a word."""
    cache = tmp_path / "cache"
    prepare_cache(cli, dataset_dir, cache)
    for name in ("img03.png", "img17.png"):  # re-exported by another tool (OpenCV), brighter
        path = dataset_dir / name
        cv2.imwrite(
            str(path), np.clip(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(int) + 70, 0, 255).astype(np.uint8)
        )
    code, _, err = cli("train", *csv_run_args(dataset_dir, tmp_path / "run", f"data.cache={cache}"))
    line = error_line(err)
    assert code == 2 and f"image cache {cache}: 2 of 40 source images changed since the cache decoded them" in line
    assert str(dataset_dir / "img03.png") in line and "rebuild the cache" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_cache_of_a_partial_download_serves_that_part_under_missing_drop(cli, dataset_dir, tmp_path):
    """Found before: data.cache with data.missing=drop on a partial download was refused ("no entry for ...")."""
    for name in ("img05.png", "img06.png", "img30.png"):
        (dataset_dir / name).unlink()
    cache = tmp_path / "cache"
    prepare_cache(cli, dataset_dir, cache, "data.missing=drop")
    args = csv_run_args(dataset_dir, tmp_path / "run", f"data.cache={cache}")
    code, _, err = cli("train", *args)
    line = error_line(err)
    assert (
        code == 2
        and f"3 of 40 image files listed in {dataset_dir / 'labels.csv'} have no entry in the image cache {cache}"
        in line
        and "data.missing=drop" in line
    )
    with pytest.warns(UserWarning, match="data.missing=drop: dropped 3 of 40 rows .* no entry in the image cache"):
        code, _, err = cli("train", *args, "data.missing=drop")
    assert code == 0, err
    assert (tmp_path / "run" / "eval" / "metrics.json").exists()
