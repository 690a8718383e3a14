"""The VinDr-CXR reader (spml/data/readers/vindr.py) on files in the dataset's layout written with pandas: three
radiologists per training image, reader agreement, the consensus test file, the registry and the config path."""

import numpy as np
import pandas as pd
import pytest

from spml.data.readers import READERS
from spml.data.readers.vindr import read_vindr
from spml.data.table import OFFICIAL_SPLIT, DataError
from spml.factories.data import read_table
from tests.data.conftest import data_config

LABELS = ["Aortic enlargement", "Cardiomegaly", "Pleural effusion", "Other diseases", "No finding"]


@pytest.fixture
def vindr(tmp_path):
    """root/annotations/image_labels_{train,test}.csv: 6 training images x 3 readers (random 0/1), 3 test images
    (one consensus row each, "Other disease" as the test file spells it). Returns (root, train votes (6, 3, C))."""
    rng = np.random.default_rng(4)
    votes = (rng.random((6, 3, len(LABELS))) < 0.4).astype(int)
    rows = [
        {"image_id": f"img{i}", "rad_id": f"R{r + 1}", **dict(zip(LABELS, votes[i, r]))}
        for i in range(6)
        for r in range(3)
    ]
    folder = tmp_path / "vindr" / "annotations"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).sample(frac=1.0, random_state=0).to_csv(folder / "image_labels_train.csv", index=False)
    test = pd.DataFrame({"image_id": ["t0", "t1", "t2"], **{name: [1, 0, 0] for name in LABELS}})
    test.rename(columns={"Other diseases": "Other disease"}).to_csv(folder / "image_labels_test.csv", index=False)
    return tmp_path / "vindr", votes


@pytest.mark.parametrize("agreement", [1, 2, 3])
def test_an_image_is_positive_when_enough_of_its_readers_marked_it(vindr, agreement):
    root, votes = vindr
    table = read_vindr(str(root), agreement=agreement)
    frame = table.frame.set_index("patient_id").loc[[f"img{i}" for i in range(6)]]
    expected = (votes.sum(1) >= agreement).astype(float)  # (6, C), independent of the reader's pandas path
    np.testing.assert_array_equal(frame[LABELS].to_numpy(), expected)
    assert table.classes == tuple(LABELS) and len(table.frame) == 6
    assert frame["path"].str.endswith(".dicom").all() and all(
        f"/train/img{i}" in p for i, p in enumerate(frame["path"])
    )


def test_the_official_split_adds_the_consensus_test_file(vindr):
    root, _ = vindr
    table = read_vindr(str(root), classes=["Other diseases", "Cardiomegaly"], official_split=True)
    test = table.frame[table.frame[OFFICIAL_SPLIT] == "test"]
    assert list(test["patient_id"]) == ["t0", "t1", "t2"] and table.classes == ("Other diseases", "Cardiomegaly")
    assert test["Other diseases"].tolist() == [1.0, 0.0, 0.0] and test["path"].str.contains("/test/t").all()
    assert (table.frame[OFFICIAL_SPLIT] == "train").sum() == 6


def test_registered_and_read_from_the_config(vindr):
    root, _ = vindr
    assert READERS.get("vindr") is read_vindr
    from_config = read_table(data_config("dataset=vindr", f"root={root}", "split=official"))
    pd.testing.assert_frame_equal(from_config.frame, read_vindr(str(root), official_split=True).frame)


def test_bad_input_is_refused_naming_the_file(vindr):
    root, _ = vindr
    file = root / "annotations" / "image_labels_train.csv"
    frame = pd.read_csv(file, dtype=str)
    frame.loc[2, "Cardiomegaly"] = "2"
    frame.to_csv(file, index=False)
    with pytest.raises(DataError, match="image_labels_train.csv"):
        read_vindr(str(root))
    with pytest.raises(DataError, match="data.views"):
        read_vindr(str(root), views=["PA"])
    with pytest.raises(DataError, match="image_labels_train.csv"):
        read_vindr(str(root / "elsewhere"))
