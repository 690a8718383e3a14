"""The synthetic phantoms: determinism, shapes, CXR-like label statistics, patients, reader and source."""
import numpy as np
import pytest

from spml.config import load_config
from spml.data.readers import READERS
from spml.data.synthetic import CLASSES, Phantoms, read_synthetic, synthetic_source
from spml.data.table import META_COLUMNS, DataError


def data_config(*overrides):
    return load_config([], ["data.dataset=synthetic", *overrides]).data


@pytest.fixture(scope="module")
def large():
    return Phantoms(6000, 1.5, 0)


def test_same_seed_same_images_and_labels():
    a, b, c = Phantoms(300, 1.5, 3), Phantoms(300, 1.5, 3), Phantoms(300, 1.5, 4)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.render(32), b.render(32))
    assert not np.array_equal(a.labels, c.labels) and not np.array_equal(a.render(32), c.render(32))


@pytest.mark.parametrize("size", [32, 64, 256])
def test_shape_and_dtype(size):
    images = Phantoms(12, 1.5, 0).render(size)
    assert images.shape == (12, size, size) and images.dtype == np.uint8
    assert images.std() > 20  # a picture, not a flat field


def test_labels_do_not_depend_on_size():
    a, b = read_synthetic(data_config("data.size=32")), read_synthetic(data_config("data.size=128"))
    assert a.frame.equals(b.frame) and a.source_hash == b.source_hash


def test_prevalence_and_no_finding_rate(large):
    prevalence = large.labels.mean(0)
    assert len(CLASSES) >= 8
    assert np.all((prevalence >= 0.03) & (prevalence <= 0.25)), dict(zip(CLASSES, prevalence))
    no_finding = (large.labels.sum(1) == 0).mean()
    assert 0.40 <= no_finding <= 0.55


def test_single_positive_masking_hides_at_least_35_percent(large):
    positives = large.labels.sum(1)
    hidden = np.maximum(positives - 1, 0).sum() / positives.sum()
    assert hidden >= 0.35


def test_findings_co_occur_as_designed(large):
    labels = large.labels
    cardio, edema = labels[:, CLASSES.index("Cardiomegaly")], labels[:, CLASSES.index("Edema")]
    assert edema[cardio].mean() > 2 * edema[~cardio].mean()


def test_patients_have_one_to_three_images_sharing_anatomy(large):
    table = read_synthetic(data_config("data.synthetic.num_images=6000"))
    counts = table.frame.groupby("patient_id").size()
    assert counts.min() >= 1 and counts.max() <= 3 and abs(counts.mean() - 1.5) < 0.1
    assert (counts > 1).mean() > 0.3
    images = large.render(32).reshape(len(large), -1).astype(np.float32)
    images = (images - images.mean(1, keepdims=True)) / images.std(1, keepdims=True)  # exposure apart
    follow_up = np.flatnonzero(large.visit == 1)
    same = np.abs(images[follow_up] - images[follow_up - 1]).mean()  # a first image and its follow-up
    other = np.abs(images[follow_up] - images[np.roll(follow_up, 7) - 1]).mean()  # another patient's
    assert same < 0.9 * other


def test_images_per_patient_out_of_range_is_a_config_error():
    with pytest.raises(DataError, match="data.synthetic.images_per_patient"):
        Phantoms(10, 3.5, 0)


def test_reader_table_and_source():
    config = data_config("data.size=32", "data.synthetic.num_images=200", "data.synthetic.seed=5")
    table = READERS.get("synthetic")(config)
    assert list(table.frame.columns) == [*META_COLUMNS, *CLASSES] and table.classes == CLASSES
    assert (table.frame["path"] == "").all() and table.source == "synthetic:5:200"
    assert set(np.unique(table.values())) <= {0.0, 1.0}
    full = Phantoms(200, 1.5, 5)
    assert np.array_equal(table.values(), full.labels)
    rows = np.array([7, 3, 150])
    source = synthetic_source(config, table.subset(rows))
    assert len(source) == 3
    expected = full.render(32)[rows]
    assert all(np.array_equal(source.load(i), expected[i]) for i in range(3))


def test_source_refuses_a_table_from_other_parameters():
    table = read_synthetic(data_config("data.synthetic.num_images=50"))
    with pytest.raises(DataError, match="data.synthetic"):
        synthetic_source(data_config("data.synthetic.num_images=60"), table)
