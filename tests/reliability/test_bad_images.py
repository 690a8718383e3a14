"""Bad image files: every image header of every split is read before the first step, so a file whose header
shows the problem stops the run before training (data.bad_images=error) or leaves its split up front (skip);
files whose damage only decoding finds (truncated pixel data) are met during the run: error stops naming the
file; skip trains on, counts distinct bad images run-wide (also across DataLoader workers) against
data.bad_image_budget and reports them in <run>/skipped_images.csv; a batch of only bad images is passed over."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spml.config import load_config
from spml.data.dataset import CXRDataset, FileSource
from spml.data.table import DataError
from spml.engine.trainer import Trainer
from spml.factories import build_trainer
from spml.factories.data import build_data
from tests.reliability.conftest import csv_run_args, error_line


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (8-bit gray) but holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def encoded(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buffer, format=fmt)
    return buffer.getvalue()


def film(size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return ((np.sin(x * 6.0 / size) + np.cos(y * 9.0 / size)) * 60 + 128).astype(np.uint8)


# kind -> (writer of the bad file at a path, what the reason says); "missing" is deleted once the run has started
BAD = {
    "zero bytes": (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "truncated PNG": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) * 2 // 5]), "truncated"),
    "truncated JPEG": (lambda p: p.write_bytes(encoded(film(256), "JPEG")[:700]), "truncated"),
    "not an image (text)": (lambda p: p.write_text("Patient ID,Finding Labels\n"), "not a recognised image"),
    "HTML error page": (lambda p: p.write_text("<html><body>403 Forbidden</body></html>"), "not a recognised image"),
    "huge (12000 x 12000)": (lambda p: p.write_bytes(png_header(12000, 12000)), "over the limit"),
    "decompression bomb (20000 x 20000)": (lambda p: p.write_bytes(png_header(20000, 20000)), "too large"),
    "a directory": (lambda p: (p.unlink(), p.mkdir()), "directory"),
    "missing at run time": (lambda p: p.unlink(), "does not exist"),
}
# formats that are not bad: they must be decoded, never skipped
VALID = {
    "16-bit PNG": lambda p: p.write_bytes(encoded(film().astype(np.uint16) * 257, "PNG")),
    "RGBA PNG": lambda p: p.write_bytes(encoded(np.dstack([film()] * 3 + [np.full((64, 64), 90, np.uint8)]), "PNG")),
    "palette PNG": lambda p: p.write_bytes(palette_png(film())),
    "large 2048 x 2048 16-bit film": lambda p: p.write_bytes(encoded(film(2048).astype(np.uint16) * 257, "PNG")),
    "JPEG": lambda p: p.write_bytes(encoded(film(), "JPEG")),
}


def truncate(path: Path) -> None:
    """Cut a PNG inside its pixel data: the header is intact, so only decoding finds the damage."""
    BAD["truncated PNG"][0](path)


def palette_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("P").save(buffer, format="PNG")
    return buffer.getvalue()


def split_paths(args: list[str]) -> dict[str, list[str]]:
    """Image paths of each split, in dataset order (what the run will load)."""
    config = load_config([], args[2:], mode="supervised")
    bundle = build_data(config)
    return {name: frame["path"].tolist() for name, frame in bundle.frames.items()}


def trainer_for(args: list[str]) -> Trainer:
    return build_trainer(load_config([], args[2:], mode="supervised"))


def fit(trainer: Trainer) -> dict:
    try:
        return trainer.fit()
    finally:
        trainer.accelerator.end_training()


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_image_under_error_stops_the_run_naming_the_file(cli, dataset_dir, tmp_path, workers):
    args = csv_run_args(dataset_dir, tmp_path / "run", f"data.num_workers={workers}")
    victim = Path(split_paths(args)["train"][3])
    truncate(victim)
    code, _, err = cli("train", *args)
    assert code == 2, err
    assert f"{victim}: truncated or corrupt image data" in error_line(err)
    assert not (tmp_path / "run" / "skipped_images.csv").exists()


@pytest.mark.parametrize("kind", ["zero bytes", "HTML error page", "huge (12000 x 12000)"])
def test_header_check_stops_a_run_with_a_corrupt_test_image_before_step_1(cli, dataset_dir, tmp_path, kind):
    """Found before: a corrupt test image was met only after every epoch, and the run ended without test metrics."""
    args = csv_run_args(dataset_dir, tmp_path / "run")
    victim = Path(split_paths(args)["test"][-1])
    BAD[kind][0](victim)
    code, out, err = cli("train", *args)
    assert code == 2, err
    line = error_line(err)
    assert f"1 of 40 images cannot be used (train 0, val 0, test 1), e.g. {victim}: " in line and BAD[kind][1] in line
    assert "Found before training by reading every image header" in line and "data.bad_images=skip" in line
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "log.csv").exists()


def test_header_check_under_skip_leaves_the_image_out_up_front_and_lists_it(cli, dataset_dir, tmp_path):
    args = csv_run_args(dataset_dir, tmp_path / "run", "data.bad_images=skip")
    splits = split_paths(args)
    victims = {"test": Path(splits["test"][-1]), "train": Path(splits["train"][0])}
    victims["test"].write_text("<html><body>403 Forbidden</body></html>")
    victims["train"].write_bytes(b"")
    with pytest.warns(
        UserWarning,
        match=r"data.bad_images=skip: 2 of 40 images cannot be used \(train 1, val 0, "
        r"test 1\).*; they leave their splits before training",
    ):
        kept = split_paths(args)
        trainer = trainer_for(args)
    assert len(kept["test"]) == len(splits["test"]) - 1 and len(kept["train"]) == len(splits["train"]) - 1
    assert str(victims["test"]) not in kept["test"] and str(victims["train"]) not in kept["train"]
    assert len(trainer.train_loader.dataset) == len(kept["train"])
    summary = fit(trainer)
    assert summary["n_images"] == len(splits["test"]) - 1  # the test split was scored, without the bad image
    report = pd.read_csv(tmp_path / "run" / "skipped_images.csv", keep_default_na=False)
    assert report.to_dict("records") == [
        {"split": "train", "index": "", "path": str(victims["train"]), "reason": "the file is empty (0 bytes)"},
        {
            "split": "test",
            "index": "",
            "path": str(victims["test"]),
            "reason": "not a recognised image file (unknown format; DICOM files need the 128-byte preamble and 'DICM')",
        },
    ]


def test_header_check_counts_against_the_budget(cli, dataset_dir, tmp_path):
    args = csv_run_args(dataset_dir, tmp_path / "run", "data.bad_images=skip", "data.bad_image_budget=2")
    for path in split_paths(args)["val"][:3]:
        Path(path).write_bytes(b"")
    code, _, err = cli("train", *args)
    assert code == 2, err
    assert "3 of 40 images cannot be used (train 0, val 3, test 0)" in error_line(err)
    assert (
        "over data.bad_image_budget=2 (found before training by reading every image header and decoding the val "
        "and test images)"
    ) in error_line(err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_skip_trains_on_and_reports_every_bad_image_across_workers(dataset_dir, tmp_path, capsys):
    args = csv_run_args(
        dataset_dir, tmp_path / "run", "data.bad_images=skip", "data.bad_image_budget=12", "data.num_workers=2"
    )
    splits = split_paths(args)
    every = [path for name in ("train", "val", "test") for path in splits[name]]
    bad = dict(zip(BAD, map(Path, every[::4])))  # spread over all three splits
    valid = dict(zip(VALID, map(Path, every[2::4])))
    for kind, path in bad.items():
        if kind != "missing at run time":
            BAD[kind][0](path)
    for kind, path in valid.items():
        VALID[kind](path)
    trainer = trainer_for(args)
    BAD["missing at run time"][0](bad["missing at run time"])  # gone after the existence check
    summary = fit(trainer)

    report = pd.read_csv(tmp_path / "run" / "skipped_images.csv")
    assert list(report.columns) == ["split", "index", "path", "reason"]
    by_path = report.drop_duplicates("path").set_index("path")
    assert set(by_path.index) == {str(p) for p in bad.values()}  # every bad image, nothing valid
    for kind, path in bad.items():
        assert BAD[kind][1] in by_path.loc[str(path), "reason"], kind
        assert by_path.loc[str(path), "split"] in splits and str(path) in splits[by_path.loc[str(path), "split"]]
    bad_in_test = sum(str(p) in splits["test"] for p in bad.values())
    assert summary["n_images"] == len(splits["test"]) - bad_in_test  # the rest of the test split was scored
    out = capsys.readouterr().out
    per_split = ", ".join(f"{name} {sum(str(p) in splits[name] for p in bad.values())}" for name in splits)
    assert f"left out {len(bad)} distinct bad images ({per_split}; " in out and "skipped_images.csv" in out
    print(out.splitlines()[-1])  # (docs/reliability.md quotes it)


def test_skip_budget_counts_distinct_images_of_all_workers(cli, dataset_dir, tmp_path):
    args = csv_run_args(
        dataset_dir, tmp_path / "run", "data.bad_images=skip", "data.bad_image_budget=2", "data.num_workers=2"
    )
    train = split_paths(args)["train"]
    for path in train[:5]:
        truncate(Path(path))
    code, _, err = cli("train", *args)
    assert code == 2, err
    assert "over data.bad_image_budget=2" in error_line(err)
    report = pd.read_csv(tmp_path / "run" / "skipped_images.csv")
    assert report["path"].nunique() >= 3 and set(report["path"]) <= set(train[:5])
    assert not (tmp_path / "run" / "eval").exists()


def test_a_batch_of_only_bad_images_is_passed_over_and_counted(dataset_dir, tmp_path):
    args = csv_run_args(
        dataset_dir, tmp_path / "run", "data.bad_images=skip", "data.bad_image_budget=4", "train.checkpoint_every=1"
    )
    trainer = trainer_for(args)
    train = split_paths(args)["train"]
    first_batch = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:4]
    paths = np.array(train)[first_batch.numpy()]
    for path in paths:
        truncate(Path(path))
    fit(trainer)
    assert trainer.progress.global_step == trainer.steps_per_epoch  # the empty step still counts (exact resume)
    report = pd.read_csv(tmp_path / "run" / "skipped_images.csv")
    assert sorted(report["path"].unique()) == sorted(paths)
    assert (report["split"] == "train").all()


def test_all_bad_batch_at_the_dataset_level_is_empty_and_counts_against_the_budget(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(4)]
    for path in paths:
        path.write_bytes(b"")
    targets = np.zeros((4, 2), np.float32)
    dataset = CXRDataset(FileSource(paths, 16), targets, targets > -1, bad_images="skip", bad_image_budget=3)
    dataset.log_skips_to(tmp_path / "skips.csv", "train")
    with pytest.warns(UserWarning):
        batch = dataset.__getitems__([0, 1])
    assert batch["index"].shape == (0,) and batch["targets"].shape == (0, 2)
    with pytest.warns(UserWarning):
        dataset.__getitems__([0, 1, 2])  # 0 and 1 again: 3 distinct, within the budget
    with pytest.warns(UserWarning), pytest.raises(DataError, match="4 distinct bad images"):
        dataset.__getitems__([3])


@pytest.mark.parametrize("split, writer", [("val", "truncated PNG"), ("test", "truncated JPEG")])
def test_damage_only_decoding_finds_in_val_or_test_stops_the_run_before_step_1(
    cli, dataset_dir, tmp_path, split, writer
):
    """Found before: pixel data cut inside a val or test image passed the header check and stopped the run after
    all its epochs, with no metrics. The val and test images are decoded fully before the first step."""
    args = csv_run_args(dataset_dir, tmp_path / "run")
    victim = Path(split_paths(args)[split][0])
    BAD[writer][0](victim)
    code, _, err = cli("train", *args)
    line = error_line(err)
    assert code == 2 and f"{victim}: truncated" in line and "decoding the val and test images" in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()
    with pytest.warns(UserWarning, match=rf"1 of 40 images cannot be used \(.*{split} 1"):
        code, _, err = cli("train", *args, "data.bad_images=skip", f"train.out={tmp_path / 'skip'}")
    assert code == 0, err
    report = pd.read_csv(tmp_path / "skip" / "skipped_images.csv")
    assert report["path"].tolist() == [str(victim)] and report["split"].tolist() == [split]


def test_placeholder_images_far_below_the_training_size_are_warned_with_a_count(cli, dataset_dir, tmp_path):
    """Found before: five 1 x 1 placeholder PNGs trained as flat images without a word."""
    placeholders = [dataset_dir / f"img{i:02d}.png" for i in (1, 9, 17, 25, 33)]
    for path in placeholders:
        Image.new("L", (1, 1), 0).save(path)
    with pytest.warns(UserWarning, match=r"5 of 40 images are smaller than data.size=32 / 8 on a side"):
        code, _, err = cli("train", *csv_run_args(dataset_dir, tmp_path / "run"))
    assert code == 0, err
