"""build_data's output pinned for the label-source combinations (mode x masked file x in-memory masking x
data.mask_val) and the three real-format readers, so a restructuring of spml/data/build.py is proven to give
identical splits, targets, known, observed, counts and manifests.

The pins (build_pins.json) were written by the build_data of commit 3d3e890, before build.py was split into
named steps: `python tests/data/test_build_pinned.py` rewrites them (only do that for an intended change).
"""

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from spml.config import load_config
from spml.data.masking import mask_splits, mask_table, row_keys, write_masked
from spml.data.table import dataset_root
from spml.factories.data import build_data, read_split, read_table
from tests.conftest import TINY
from tests.cxr_files import WRITERS

PINS = Path(__file__).with_name("build_pins.json")
SYNTHETIC = [item for item in TINY if item.startswith("data.")]
FILE_SPLIT = ["data.val_fraction=0.25", "data.test_fraction=0.25"]


def whole_table_file(scheme: str, no_positive: str, **params):
    """A masked file of the whole table (as tools/mask_labels.py writes it)."""

    def write(config, path):
        table = read_table(config.data)
        frame, manifest = mask_table(
            table, scheme, 5, no_positive, dataset_root(config.data.root, config.data.labels), **params
        )
        write_masked(frame, manifest, path)

    return write


def split_file(scheme: str, names: tuple[str, ...], no_positive: str = "drop", **params):
    """A masked file of the chosen splits of this config's split (as tools/masking_experiment.py writes it)."""

    def write(config, path):
        table, split = read_split(config.data)
        frame, manifest = mask_splits(
            table, split, names, scheme, 7, no_positive, dataset_root(config.data.root, config.data.labels), **params
        )
        write_masked(frame, manifest, path)

    return write


# name -> (mode, dataset writer (None: synthetic), overrides, masked-file writer or None)
CASES = {
    "spml in memory": ("spml", None, [], None),
    "spml in memory, mask_val": ("spml", None, ["data.mask_val=true"], None),
    "spml in memory keep_k, no_positive keep": (
        "spml",
        None,
        ["data.mask_scheme=keep_k", "data.mask_params={k: 2}", "data.mask_no_positive=keep"],
        None,
    ),
    "spml masked file": ("spml", None, [], whole_table_file("single_positive", "drop")),
    "spml masked file, mask_val": (
        "spml",
        None,
        ["data.mask_val=true"],
        split_file("single_positive", ("train", "val")),
    ),
    "supervised full, stratified": ("supervised", None, ["data.split=stratified"], None),
    "supervised partial file": ("supervised", None, [], whole_table_file("keep_fraction", "keep", fraction=0.5)),
    "supervised partial file, mask_val": (
        "supervised",
        None,
        ["data.mask_val=true"],
        split_file("keep_fraction", ("train", "val"), "keep", fraction=0.5),
    ),
    "nih official, supervised": ("supervised", "nih", ["data.split=official"], None),
    "nih spml masked file": ("spml", "nih", FILE_SPLIT, whole_table_file("single_positive", "drop")),
    "chexpert official mixed, spml": (
        "spml",
        "chexpert",
        ["data.split=official", "data.uncertainty=mixed", "data.blank=unknown"],
        None,
    ),
    "mimic official, supervised zeros": (
        "supervised",
        "mimic",
        ["data.split=official", "data.uncertainty=zeros"],
        None,
    ),
}


def digest(value) -> str:
    if isinstance(value, np.ndarray):
        data = value.dtype.str.encode() + str(value.shape).encode() + np.ascontiguousarray(value).tobytes()
    else:
        data = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def bundle_digests(name: str, folder: Path) -> dict[str, str]:
    """Digest of every part of the bundle of case `name`, built from files written under `folder`."""
    mode, dataset, overrides, masked_writer = CASES[name]
    if dataset is None:
        data = SYNTHETIC
    else:
        root = WRITERS[dataset](folder / dataset)
        data = [f"data.dataset={dataset}", f"data.root={root}", "data.size=32", "data.num_workers=0"]
    config = load_config([], [*data, *overrides], mode=mode)
    if masked_writer is not None:
        masked_writer(config, folder / "masked.csv")
        config = load_config([], [*data, *overrides, f"data.masked_labels={folder / 'masked.csv'}"], mode=mode)
    bundle = build_data(config)
    root = dataset_root(config.data.root, config.data.labels)
    out = {
        "classes": digest(list(bundle.classes)),
        "pos_counts": digest(bundle.pos_counts),
        "expected_positives": digest(repr(bundle.expected_positives)),
    }
    if bundle.manifest is not None:
        out["manifest"] = digest({k: v for k, v in bundle.manifest.items() if k not in ("source", "root")})
    for split in ("train", "val", "test"):
        dataset_ = getattr(bundle, split)
        frame = bundle.frames[split]
        out[f"{split}/rows"] = digest(frame[["patient_id", "study_id", "view"]].to_numpy().tolist())
        out[f"{split}/paths"] = digest(row_keys(frame["path"].to_numpy(), root).tolist())
        out[f"{split}/targets"] = digest(np.asarray(dataset_.targets))
        out[f"{split}/known"] = digest(np.asarray(dataset_.known))
        out[f"{split}/observed"] = digest(np.asarray(dataset_.observed))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_build_data_output_is_pinned(name, tmp_path):
    pinned = json.loads(PINS.read_text())[name]
    assert bundle_digests(name, tmp_path) == pinned


if __name__ == "__main__":  # rewrite the pins from the current build_data
    pins = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as temporary:
            pins[case] = bundle_digests(case, Path(temporary))
    PINS.write_text(json.dumps(pins, indent=1) + "\n")
    print(f"wrote {len(pins)} cases to {PINS}", file=sys.stderr)
