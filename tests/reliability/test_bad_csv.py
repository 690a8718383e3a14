"""Broken label files through tools/train.py: each is a one-line usage error naming the file, row and column,
raised before any training step (no checkpoint, no log); harmless variants are read like the clean file."""

import numpy as np
import pytest

from spml.config import load_config
from spml.factories.data import build_data
from tests.reliability.conftest import CSV_RUN, NUM_IMAGES, csv_run_args, error_line, labels_for


def clean_lines() -> list[str]:
    return ["path,A,B", *("img{:02d}.png,{},{}".format(i, *labels_for(i)) for i in range(NUM_IMAGES))]


def replace_row(row: int, text: str):
    """Data row `row` (1-based) -> `text`."""

    def edit(lines: list[str]) -> list[str]:
        lines[row] = text
        return lines

    return edit


def encoded(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


# case -> (bytes of labels.csv made from the clean lines, fragments the message must contain)
CASES = {
    "missing column": (
        encoded([line.rsplit(",", 1)[0] for line in clean_lines()]),
        ["missing column(s) ['B']", "the header has ['path', 'A']"],
    ),
    "unknown label value 2": (
        encoded(replace_row(3, "img02.png,2,0")(clean_lines())),
        ["data row 3 (line 4), column 'A'", "unknown label value '2'"],
    ),
    "unknown label word": (
        encoded(replace_row(5, "img04.png,0,yes")(clean_lines())),
        ["data row 5 (line 6), column 'B'", "unknown label value 'yes'"],
    ),
    "empty path (pandas NaN)": (
        encoded(replace_row(2, ",1,0")(clean_lines())),
        ["data row 2 (line 3), column 'path'", "empty image path"],
    ),
    "NaN path": (
        encoded(replace_row(4, "NaN,1,1")(clean_lines())),
        ["data row 4 (line 5), column 'path'", "empty image path 'NaN'"],
    ),
    "NA path": (
        encoded(replace_row(6, "NA,1,1")(clean_lines())),
        ["data row 6 (line 7), column 'path'", "empty image path 'NA'"],
    ),
    "duplicate rows": (
        encoded([*clean_lines(), "img01.png,1,0"]),
        ["column 'path'", "duplicate image rows: 'img01.png' at data rows [2, 41]"],
    ),
    "semicolon delimiter": (encoded([line.replace(",", ";") for line in clean_lines()]), ["semicolon-separated"]),
    "tab delimiter": (encoded([line.replace(",", "\t") for line in clean_lines()]), ["tab-separated"]),
    "empty file": (b"", ["the file is empty"]),
    "blank lines only": (b"\n\n  \n", ["the file is empty"]),
    "header only": (b"path,A,B\n", ["no data rows"]),
    "non-UTF-8 byte": (
        encoded(clean_lines()).replace(b"img03.png", b"img\xff03.png"),
        ["not UTF-8 text: byte 0xff", "(line 5)"],
    ),
    "Latin-1 file": (
        encoded(replace_row(7, "röntgen.png,1,0")(clean_lines())).replace("ö".encode(), b"\xf6"),
        ["not UTF-8 text: byte 0xf6", "(line 8)"],
    ),
    "extra field in a row": (encoded(replace_row(6, "img05.png,1,0,1")(clean_lines())), ["malformed CSV", "line 7"]),
    "unclosed quote": (encoded(replace_row(9, '"img08.png,1,0')(clean_lines())), ["malformed CSV"]),
    "image listed but missing": (
        encoded(replace_row(8, "gone.png,1,0")(clean_lines())),
        ["1 of 40 image files", "do not exist", "gone.png", "data.missing=drop"],
    ),
    "column name twice": (
        encoded(["path,A,B,A", *(line + ",0" for line in clean_lines()[1:])]),
        ["column 'A' appears twice in the header (columns 2 and 4)"],
    ),
    "one image as x.png and ./x.png": (
        encoded([*clean_lines(), "./img01.png,0,1"]),
        ["column 'path': duplicate image rows: data rows [2, 41] ('img01.png', './img01.png') are one image file"],
    ),
    "one image through ..": (
        encoded(replace_row(12, "sub/../img03.png,1,1")(clean_lines())),
        ["duplicate image rows: data rows [4, 12] ('img03.png', 'sub/../img03.png')"],
    ),
    "path outside the root": (
        encoded(replace_row(8, "../img07.png,1,0")(clean_lines())),
        [
            "data row 8 (line 9), column 'path': image path '../img07.png' is outside data.root",
            "data.allow_outside_root=true",
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_label_file_is_a_clear_error_before_training(cli, dataset_dir, tmp_path, case):
    content, fragments = CASES[case]
    (dataset_dir / "labels.csv").write_bytes(content)
    out = tmp_path / "run"
    code, _, err = cli("train", *csv_run_args(dataset_dir, out))
    assert code == 2, err
    assert "labels.csv" in error_line(err), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (out / "checkpoints").exists() and not (out / "log.csv").exists()  # no training step ran


def test_label_file_that_does_not_exist(cli, dataset_dir, tmp_path):
    code, _, err = cli("train", *CSV_RUN, f"data.labels={dataset_dir / 'nope.csv'}", f"train.out={tmp_path / 'r'}")
    assert code == 2 and "label file" in err and "nope.csv does not exist" in err


@pytest.mark.parametrize("variant", ["CRLF line ends", "UTF-8 byte order mark", "1.0/0.0 values", "spaces"])
def test_harmless_variants_read_like_the_clean_file(dataset_dir, variant):
    labels = dataset_dir / "labels.csv"
    config = load_config([], [*CSV_RUN[2:], f"data.labels={labels}"], mode="supervised")
    reference = build_data(config).table.values()
    lines = clean_lines()
    text = {
        "CRLF line ends": "\r\n".join(lines) + "\r\n",
        "UTF-8 byte order mark": "\ufeff" + "\n".join(lines) + "\n",
        "1.0/0.0 values": "\n".join(lines).replace(",1", ",1.0").replace(",0", ",0.0") + "\n",
        "spaces": "\n".join(line.replace(",", " , ") for line in lines) + "\n",
    }[variant]
    if variant == "spaces":  # header names are taken as written; values and paths are stripped
        text = text.replace("path , A , B", "path,A,B")
    labels.write_text(text, encoding="utf-8", newline="")
    np.testing.assert_array_equal(build_data(config).table.values(), reference)


def test_every_case_changes_the_clean_file():
    assert all(content != encoded(clean_lines()) for content, _ in CASES.values())
    assert len(CASES) == len({content for content, _ in CASES.values()})  # no two cases write the same bytes
