"""Masked label files (tools/mask_labels.py) that do not belong to the run's data are refused before training."""

import json

import pytest

from spml.config import load_config
from spml.factories.data import build_data
from tests.conftest import TINY
from tests.reliability.conftest import error_line, tiny_run_args


@pytest.fixture
def masked(tools, tmp_path):
    """A single-positive file masked from the synthetic set of TINY (400 phantoms, seed 0)."""
    path = tmp_path / "masked.csv"
    assert tools.mask_labels.main(["--dataset", "synthetic", "--out", str(path), *TINY]) == 0
    return path


def edit_one_label(path):
    lines = path.read_text().splitlines(keepends=True)
    header, row = lines[0].split(","), lines[1].split(",")
    column = next(j for j in range(1, len(row)) if row[j].strip() == "1")
    row[column], row[column % (len(row) - 1) + 1] = "", "1"  # move the observed positive to another class
    lines[1] = ",".join(row) if row[-1].endswith("\n") else ",".join(row) + "\n"
    assert len(header) == len(row)
    path.write_text("".join(lines))


def drop_last_row(path):
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


def manifest_of(path):
    return path.with_name(path.name + ".manifest.json")


def unchanged(path):
    pass


# case -> (what is done to the masked file, overrides of the run, fragment of the refusal)
CASES = {
    "another dataset (synthetic seed 1)": (unchanged, ["data.synthetic.seed=1"], "re-run tools/mask_labels.py"),
    "another dataset size": (unchanged, ["data.synthetic.num_images=300"], "re-run tools/mask_labels.py"),
    "other classes": (unchanged, ["data.classes=[Cardiomegaly,Effusion]"], "has classes"),
    "a label edited after masking": (edit_one_label, [], "edited after masking"),
    "a row deleted after masking": (drop_last_row, [], "edited after masking"),
    "manifest deleted": (lambda path: manifest_of(path).unlink(), [], "has no manifest"),
    "manifest not JSON": (lambda path: manifest_of(path).write_text("{oops"), [], "not valid JSON"),
}


def test_the_untouched_file_is_accepted(masked):
    config = load_config([], [*TINY, f"data.masked_labels={masked}"], mode="spml")
    bundle = build_data(config)
    assert bundle.manifest["masked_sha256"] and bundle.train.observed.any(1).all()


@pytest.mark.parametrize("case", list(CASES))
def test_a_masked_file_that_does_not_fit_is_refused(cli, masked, tmp_path, case):
    change, extra, fragment = CASES[case]
    change(masked)
    out = tmp_path / "run"
    code, _, err = cli("train", *tiny_run_args(out, f"data.masked_labels={masked}", *extra))
    assert code == 2, err
    line = error_line(err)
    assert "masked.csv" in line and fragment in line, line
    assert not (out / "checkpoints").exists() and not (out / "log.csv").exists()


def test_the_manifest_records_what_the_refusal_compares(masked):
    manifest = json.loads(manifest_of(masked).read_text())
    assert {"source_hash", "masked_sha256", "classes", "seed", "scheme"} <= set(manifest)
