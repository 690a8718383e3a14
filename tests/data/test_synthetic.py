"""The synthetic phantoms: determinism, shapes, CXR-like label statistics, patients, reader and source,
the finding masks (where each finding changes the picture)."""

import hashlib

import numpy as np
import pytest

from spml.data.readers import READERS
from spml.data.synthetic import (
    CLASSES,
    MASK_MIN_CHANGE,
    Phantoms,
    SyntheticSpec,
    lesion_masks,
    lung_fields,
    read_synthetic,
    render_chunk,
    synthetic_source,
)
from spml.data.table import META_COLUMNS, DataError


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
    a = read_synthetic(num_images=100)
    assert a.frame.equals(read_synthetic(num_images=100).frame)
    assert synthetic_source(SyntheticSpec(num_images=100), a, 32).load(0).shape == (32, 32)  # the size is the source's


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
    table = read_synthetic(num_images=6000)
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
    table = READERS.build("synthetic", num_images=200, seed=5)
    assert list(table.frame.columns) == [*META_COLUMNS, *CLASSES] and table.classes == CLASSES
    assert (table.frame["path"] == "").all() and table.source == "synthetic:5:200"
    assert set(np.unique(table.values())) <= {0.0, 1.0}
    full = Phantoms(200, 1.5, 5)
    assert np.array_equal(table.values(), full.labels)
    rows = np.array([7, 3, 150])
    source = synthetic_source(SyntheticSpec(200, 1.5, 5), table.subset(rows), 32)
    assert len(source) == 3
    expected = full.render(32)[rows]
    assert all(np.array_equal(source.load(i), expected[i]) for i in range(3))


def test_source_refuses_a_table_from_other_parameters():
    table = read_synthetic(num_images=50)
    with pytest.raises(DataError, match="data.synthetic"):
        synthetic_source(SyntheticSpec(num_images=60), table, 32)


# sha256 of Phantoms(n, 1.5, seed).render(size) written by the generator of commit 0b35213, before the finding
# masks were added (render_chunk split into draw + noise): the pictures must not change.
RENDER_PINS = {
    (600, 3, 32): "dab91db297cde9b7d2a40b9a5f6105a2c6af44d35387f0e67c2fa5004cdb35ba",
    (300, 1, 64): "ea41b91d6b00cb70b642b5d2afcfb81714e76566cfbe26c939f2019759472886",
}


@pytest.mark.parametrize("n, seed, size", sorted(RENDER_PINS))
def test_images_are_byte_identical_to_the_generator_before_masks(n, seed, size):
    images = Phantoms(n, 1.5, seed).render(size)
    assert hashlib.sha256(images.tobytes()).hexdigest() == RENDER_PINS[(n, seed, size)]


@pytest.fixture(scope="module")
def masked():
    phantoms = Phantoms(300, 1.5, 1)
    return phantoms, phantoms.masks(np.arange(300), 64)


def test_masks_exist_exactly_for_the_findings_an_image_has(masked):
    phantoms, masks = masked
    assert masks.shape == (300, len(CLASSES), 64, 64) and masks.dtype == bool
    present = masks.any((2, 3))
    assert np.array_equal(present, phantoms.labels)
    area = masks.mean((2, 3))
    nodule, emphysema = CLASSES.index("Nodule"), CLASSES.index("Emphysema")
    assert area[phantoms.labels[:, nodule], nodule].max() < 0.03  # a small blob
    assert area[phantoms.labels[:, emphysema], emphysema].min() > 0.15  # both lungs


def test_nodule_mask_is_centred_on_the_drawn_nodule(masked):
    phantoms, masks = masked
    p, c = phantoms.params, CLASSES.index("Nodule")
    rows = np.flatnonzero(phantoms.labels[:, c])
    geometry = lung_fields(phantoms.labels, p)
    distance, centre_inside = [], []
    for i in rows:  # the nodule's centre from its parameters, mapped to pixels as the renderer maps coordinates
        side = p["nod_side"][i]
        u = geometry["cx"][i, side] + geometry["a"][i, side] * p["nod_r"][i] * np.cos(p["nod_theta"][i])
        v = geometry["cy"][i, side] + geometry["b"][i, side] * p["nod_r"][i] * np.sin(p["nod_theta"][i])
        x, y = ((np.array([u, v]) * p["scale"][i] + [p["shift_x"][i], p["shift_y"][i]]) + 1) * 32 - 0.5
        ys, xs = np.nonzero(masks[i, c])
        distance.append(np.hypot(xs.mean() - x, ys.mean() - y))
        centre_inside.append(masks[i, c][int(round(y)), int(round(x))])
    # a nodule at the lung border or behind the heart is drawn (and masked) only where there is lung
    assert len(rows) > 20 and np.median(distance) < 1.0 and max(distance) < 4 and np.mean(centre_inside) > 0.9


def test_outside_its_mask_a_finding_barely_changes_the_rendered_pixels(masked):
    phantoms, masks = masked
    rows = np.arange(64)
    params = {name: values[rows] for name, values in phantoms.params.items()}
    labels = phantoms.labels[rows]
    with_all = render_chunk(labels, params, 64, np.random.default_rng(0)).astype(int)
    for c in range(len(CLASSES)):
        without = labels.copy()
        without[:, c] = False
        changed = np.abs(with_all - render_chunk(without, params, 64, np.random.default_rng(0)).astype(int))
        inside = masks[rows, c]
        # same pixel noise: outside the mask the noise-free change is < MASK_MIN_CHANGE of the grey range
        assert changed[~inside].max() <= MASK_MIN_CHANGE * 255 + 1, CLASSES[c]
        if inside.any():
            assert changed[inside].mean() >= MASK_MIN_CHANGE * 255 * 0.8, CLASSES[c]


def test_lesion_masks_follow_the_frame_rows_and_the_chosen_classes():
    spec = SyntheticSpec(num_images=120, seed=2)
    table = read_synthetic(120, seed=2, classes=["Nodule", "Effusion"])
    frame = table.frame.iloc[[40, 3, 99]]
    masks = lesion_masks(spec, frame, ["Nodule", "Effusion"], 32)
    expected = Phantoms(120, 1.5, 2).masks(np.array([40, 3, 99]), 32)
    assert np.array_equal(masks, expected[:, [CLASSES.index("Nodule"), CLASSES.index("Effusion")]])
    with pytest.raises(DataError, match="not findings"):
        lesion_masks(spec, frame, ["Hernia"], 32)
