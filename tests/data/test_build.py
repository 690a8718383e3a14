"""build_data: splits, SPML observed labels (in memory or from a masked file), supervised targets, real NIH images."""

import importlib.util
import shutil

import numpy as np
import pytest
import torch

from spml.data.masking import manifest_path, read_masked
from spml.data.table import DataError
from spml.factories.data import build_data


def run_mask_tool(kit, *args):
    spec = importlib.util.spec_from_file_location("mask_labels", kit.TOOLS / "mask_labels.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.main([str(a) for a in args])


def split_patients(bundle):
    return {name: set(frame["patient_id"]) for name, frame in bundle.frames.items()}


def test_spml_bundle_masks_the_train_split_only(tiny_config):
    bundle = build_data(tiny_config("spml"))
    train, val, test = bundle.train, bundle.val, bundle.test
    patients = split_patients(bundle)
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    assert len(train) + len(val) + len(test) + bundle.manifest["rows_dropped"] == len(bundle.table.frame)
    assert (train.observed.sum(1) == 1).all(), "single positive: one observed positive per train row"
    assert (train.targets[train.observed] == 1).all(), "an observed positive is a true positive"
    assert bundle.manifest["rows_kept"] == len(train) and sum(bundle.manifest["hidden_positives"].values()) > 0
    assert not val.observed.any() and not test.observed.any()
    np.testing.assert_array_equal(bundle.pos_counts, train.observed.sum(0))
    val_positives = ((val.targets > 0.5) & val.known).sum(1)
    assert bundle.expected_positives == pytest.approx(val_positives.float().mean().item())
    item = train[0]
    assert item["image"].dtype == torch.uint8 and tuple(item["observed"].shape) == (len(bundle.classes),)
    again = build_data(tiny_config("spml"))
    np.testing.assert_array_equal(again.train.observed, train.observed)


def test_masked_file_drives_spml_and_supervised_training(tiny_config, kit, tmp_path):
    masked = tmp_path / "masked.csv"
    assert (
        run_mask_tool(kit, "--dataset", "synthetic", "--out", masked, "--seed", 5, "data.synthetic.num_images=400") == 0
    )
    frame, manifest = read_masked(masked)
    bundle = build_data(tiny_config("spml", f"data.masked_labels={masked}"))
    assert bundle.manifest == manifest
    assert (bundle.train.observed.sum(1) == 1).all()
    assert bundle.pos_counts.sum() == len(bundle.train) < manifest["rows_kept"]  # val/test rows are not trained on

    partial = tmp_path / "partial.csv"
    assert (
        run_mask_tool(
            kit,
            "--dataset",
            "synthetic",
            "--out",
            partial,
            "--scheme",
            "keep_fraction",
            "--fraction",
            0.5,
            "--no-positive",
            "keep",
            "data.synthetic.num_images=400",
        )
        == 0
    )
    supervised = build_data(tiny_config("supervised", f"data.masked_labels={partial}"))
    assert 0.4 < supervised.train.known.float().mean() < 0.6  # half of the known labels were kept
    full = build_data(tiny_config("supervised"))
    assert full.train.known.all() and full.manifest is None
    # --no-positive keep: every train row is in the file, so the rows are those of the full-label run
    np.testing.assert_array_equal(full.frames["train"]["patient_id"], supervised.frames["train"]["patient_id"])
    known = supervised.train.known
    np.testing.assert_array_equal(supervised.train.targets[known], full.train.targets[known])

    edited = tmp_path / "edited.csv"
    shutil.copy(masked, edited)
    shutil.copy(manifest_path(masked), manifest_path(edited))
    edited.write_text(edited.read_text().replace(",1", ",0", 1))
    with pytest.raises(DataError, match="edited after masking"):
        build_data(tiny_config("spml", f"data.masked_labels={edited}"))
    with pytest.raises(DataError, match="re-run tools/mask_labels.py"):
        build_data(tiny_config("spml", f"data.masked_labels={masked}", "data.synthetic.seed=9"))


def test_missing_images_stop_before_training(tiny_config, kit, tmp_path):
    rows = kit.nih_rows(("a.png", "Mass", "1", "PA"), ("b.png", "Edema", "2", "PA"))
    kit.write(tmp_path / "Data_Entry_2017.csv", rows)
    kit.write(tmp_path / "images" / "a.png", b"")
    with pytest.raises(DataError, match=r"1 of 2 image files .*b\.png.*data.missing=drop"):
        build_data(tiny_config("supervised", "data.dataset=nih", f"data.root={tmp_path}"))


def test_real_nih_images_with_missing_drop(tiny_config, kit):
    nih = ["data.dataset=nih", f"data.root={kit.NIH_IMAGES}", f"data.labels={kit.NIH_LABELS}", "data.size=32"]
    with pytest.warns(UserWarning, match="dropped 111309"):
        bundle = build_data(tiny_config("supervised", *nih, "data.missing=drop", "data.split=stratified"))
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 811
    assert bundle.table.frame.attrs["missing_dropped"] == 111_309
    image = bundle.val[0]["image"]
    assert tuple(image.shape) == (1, 32, 32) and image.dtype == torch.uint8
    np.testing.assert_array_equal(bundle.pos_counts, ((bundle.train.targets > 0.5) & bundle.train.known).sum(0))


def test_in_memory_priority_masking_observes_the_first_listed_finding(tiny_config):
    first, second = "Pneumothorax", "Effusion"
    bundle = build_data(
        tiny_config("spml", "data.mask_scheme=priority", f"data.mask_params={{order: [{first}, {second}]}}")
    )
    classes, train = list(bundle.classes), bundle.train
    has_first = (train.targets[:, classes.index(first)] == 1).numpy()
    has_second_only = ~has_first & (train.targets[:, classes.index(second)] == 1).numpy()
    assert has_first.any() and has_second_only.any()
    assert train.observed[has_first, classes.index(first)].all()
    assert train.observed[has_second_only, classes.index(second)].all()
    assert bundle.manifest["scheme"] == "priority" and bundle.manifest["scheme_params"]["order"] == [first, second]
