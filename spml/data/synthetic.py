"""The built-in dataset: CXR-like grayscale phantoms with 10 findings, rendered vectorised in numpy.

A phantom is a body outline, two lung fields with vessel-like markings and ribs, a mediastinum and a
heart shadow, pixel noise and exposure changes. Findings change it locally or globally, each with
a severity drawn from subtle to obvious (graded difficulty):

  Atelectasis         one lung loses volume (raised base, heart shifted towards it) + a plate-like line
  Cardiomegaly        heart shadow wider than about half the thorax (normal hearts vary too)
  Consolidation       dense patchy haze filling an upper or lower zone of one lung, bounded by a fissure
  Edema               bilateral perihilar ("bat wing") haze
  Effusion            basal fluid with a meniscus blunting the costophrenic angle (one or both sides)
  Emphysema           larger, darker lungs with sparse markings
  Mass                large blob (lobulated) in a lung
  Nodule              small bright blob in a lung (vessel markings look alike)
  Pleural_Thickening  bright band along the lateral lung border
  Pneumothorax        dark apical-lateral rim without markings, behind a thin pleural line

Labels follow CXR statistics: about half the images have no finding, prevalences 4-23%, and findings
co-occur (cardiomegaly-edema-effusion, consolidation-atelectasis, mass-nodule, emphysema-pneumothorax),
so single-positive masking hides about 45% of the positives. Patients have 1-3 images sharing their
anatomy and markings; a follow-up keeps the previous image's findings half of the time.

Everything is drawn from the seed: labels and phantom parameters do not depend on the image size.
Rows of the LabelTable have path "" (in memory) and study_id "<i>", the phantom's number, which
`synthetic_source` uses to pick the images of any subset of the table.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spml.data.dataset import ArraySource
from spml.data.readers import READERS
from spml.data.table import DataError, LabelTable, make_table

CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumothorax",
)
GENERATOR_VERSION = 1  # bump when the labels or the pictures change (it enters the source hash)
NO_FINDING = 0.5  # share of images without a finding
FINDING_COUNTS = (0.48, 0.30, 0.15, 0.07)  # P(1, 2, 3, 4 findings | at least one)
# Sampling weights (tuned: prevalences come out near 15, 7, 10, 5, 22, 4, 7, 9, 6, 5 %) and pairwise
# affinities that multiply a class's weight once its partner is present.
BASE_WEIGHT = np.array([1.3, 0.55, 0.8, 0.34, 2.0, 0.36, 0.62, 0.9, 0.55, 0.55])
AFFINITY = {
    ("Cardiomegaly", "Edema"): 4.0,
    ("Cardiomegaly", "Effusion"): 3.0,
    ("Edema", "Effusion"): 4.0,
    ("Atelectasis", "Consolidation"): 3.0,
    ("Atelectasis", "Effusion"): 3.0,
    ("Consolidation", "Effusion"): 2.0,
    ("Mass", "Nodule"): 3.0,
    ("Emphysema", "Pneumothorax"): 4.0,
    ("Effusion", "Pleural_Thickening"): 1.5,
}
PERSIST = 0.5  # chance that a follow-up image keeps the previous image's findings
GRID = 16  # lung-marking texture: GRID x GRID random values per patient, interpolated to the image
RENDER_CHUNK = 256  # images rendered per numpy batch (and per pixel-noise seed)
# A finding's mask (finding_masks): where it changes the noise-free picture by at least this share of the grey
# range, about the pixel noise's standard deviation (0.01-0.03): a smaller change is not visible in one image.
MASK_MIN_CHANGE = 0.02


def affinity_matrix() -> np.ndarray:
    """Multiplicative weight of class c once class j is present (symmetric).

    Returns:
        (C, C) float64.
    """
    matrix = np.ones((len(CLASSES), len(CLASSES)))
    for (a, b), value in AFFINITY.items():
        i, j = CLASSES.index(a), CLASSES.index(b)
        matrix[i, j] = matrix[j, i] = value
    return matrix


def sample_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Findings of `n` images: none with prob NO_FINDING, else 1-4 classes drawn without replacement.

    Each draw is weighted by BASE_WEIGHT times the affinities of the classes drawn so far.

    Args:
        rng: the generator.
        n: the number of images.

    Returns:
        (n, C) bool.
    """
    count = np.where(rng.random(n) < NO_FINDING, 0, 1 + rng.choice(len(FINDING_COUNTS), n, p=FINDING_COUNTS))
    log_weight = np.tile(np.log(BASE_WEIGHT), (n, 1))
    log_affinity = np.log(affinity_matrix())
    labels = np.zeros((n, len(CLASSES)), bool)
    for step in range(len(FINDING_COUNTS)):
        gumbel = -np.log(-np.log(rng.random((n, len(CLASSES)))))
        choice = np.argmax(log_weight + gumbel, 1)
        rows = np.flatnonzero(count > step)
        labels[rows, choice[rows]] = True
        log_weight[rows] += log_affinity[choice[rows]]
        log_weight[rows, choice[rows]] = -np.inf
    return labels


def sample_patients(rng: np.random.Generator, n: int, images_per_patient: float) -> tuple[np.ndarray, np.ndarray]:
    """Patients of `n` images: 1 + Binomial(2, (m - 1) / 2) images per patient (mean m).

    Args:
        rng: the generator.
        n: the number of images.
        images_per_patient: m, in [1, 3] (a DataError otherwise).

    Returns:
        (patient number (n,), visit number (n,)).
    """
    if not 1.0 <= images_per_patient <= 3.0:
        raise DataError(
            f"data.synthetic.images_per_patient={images_per_patient}: must lie in [1, 3] (patients have 1-3 images)"
        )
    sizes = 1 + rng.binomial(2, (images_per_patient - 1) / 2, n)
    patient = np.repeat(np.arange(n), sizes)[:n]
    start = np.r_[0, np.cumsum(sizes)][patient]
    return patient, np.arange(n) - start


def uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    """`n` draws from U(low, high) as float32.

    Args:
        rng: the generator.
        low: the lower bound.
        high: the upper bound.
        n: the number of draws.

    Returns:
        (n,) float32.
    """
    return rng.uniform(low, high, n).astype(np.float32)


def sample_params(
    rng: np.random.Generator, labels: np.ndarray, patient: np.ndarray, visit: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Phantom parameters per image.

    Coordinates are normalised: x, y in [-1, 1], y = -1 at the top; lung index 0 is image-left.

    Args:
        rng: the generator.
        labels: (n, C) bool findings.
        patient: (n,) patient number.
        visit: (n,) visit number (follow-ups keep the previous image's findings with prob PERSIST).

    Returns:
        (labels after follow-up persistence, dict of (n, ...) arrays).
    """
    n, num_patients = len(labels), int(patient.max()) + 1

    def per_patient(values: np.ndarray) -> np.ndarray:
        return values[patient]

    p: dict[str, np.ndarray] = {}
    # anatomy, shared by a patient's images
    p["body_a"] = per_patient(uniform(rng, 0.84, 0.96, num_patients))
    p["tissue"] = per_patient(uniform(rng, 0.50, 0.60, num_patients))
    p["air"] = per_patient(uniform(rng, 0.30, 0.40, num_patients))
    side = np.array([-1.0, 1.0], np.float32)
    p["lung_cx"] = per_patient(side * 0.38 + rng.normal(0, 0.02, (num_patients, 2)).astype(np.float32))
    p["lung_cy"] = per_patient(-0.12 + rng.normal(0, 0.03, (num_patients, 2)).astype(np.float32))
    p["lung_a"] = per_patient(rng.uniform(0.24, 0.30, (num_patients, 2)).astype(np.float32))
    p["lung_b"] = per_patient(rng.uniform(0.52, 0.62, (num_patients, 2)).astype(np.float32))
    p["heart_ratio"] = per_patient(np.clip(rng.normal(0.42, 0.03, num_patients), 0.34, 0.49).astype(np.float32))
    p["heart_b"] = per_patient(uniform(rng, 0.22, 0.28, num_patients))
    p["heart_cx"] = per_patient(0.10 + rng.normal(0, 0.02, num_patients).astype(np.float32))
    p["heart_cy"] = per_patient(0.22 + rng.normal(0, 0.03, num_patients).astype(np.float32))
    p["medi_a"] = per_patient(uniform(rng, 0.09, 0.13, num_patients))
    p["rib_freq"] = per_patient(uniform(rng, 4.5, 5.5, num_patients))
    p["rib_phase"] = per_patient(uniform(rng, 0, 2 * np.pi, num_patients))
    p["rib_amp"] = per_patient(uniform(rng, 0.02, 0.05, num_patients))
    p["rib_curve"] = per_patient(uniform(rng, 0.25, 0.40, num_patients))
    p["marking_amp"] = per_patient(uniform(rng, 0.05, 0.10, num_patients))
    p["texture"] = per_patient(rng.standard_normal((num_patients, GRID, GRID)).astype(np.float32))
    # acquisition, per image
    p["shift_x"] = rng.normal(0, 0.03, n).astype(np.float32)
    p["shift_y"] = rng.normal(0, 0.03, n).astype(np.float32)
    p["scale"] = uniform(rng, 0.94, 1.06, n)
    p["contrast"] = uniform(rng, 0.85, 1.15, n)
    p["brightness"] = rng.normal(0, 0.04, n).astype(np.float32)
    p["noise"] = uniform(rng, 0.01, 0.03, n)
    p["heart_jitter"] = rng.normal(0, 0.01, n).astype(np.float32)
    # findings, per image (drawn for every image, used where the label is set)
    finding = {
        "atel_side": rng.integers(0, 2, n),
        "atel_shrink": uniform(rng, 0.78, 0.93, n),
        "atel_line": uniform(rng, 0.15, 0.55, n),
        "atel_pos": uniform(rng, 0.35, 0.7, n),
        "cardio_ratio": uniform(rng, 0.50, 0.62, n),
        "cons_side": rng.integers(0, 2, n),
        "cons_lower": rng.random(n) < 0.6,
        "cons_level": uniform(rng, -0.2, 0.3, n),
        "cons_slope": uniform(rng, -0.4, 0.4, n),
        "cons_fill": uniform(rng, 0.35, 0.8, n),
        "edema_fill": uniform(rng, 0.2, 0.55, n),
        "edema_sx": uniform(rng, 0.12, 0.2, n),
        "edema_sy": uniform(rng, 0.22, 0.32, n),
        "eff_side": rng.choice(3, n, p=(0.4, 0.35, 0.25)),
        "eff_height": uniform(rng, 0.15, 0.6, n),
        "eff_meniscus": uniform(rng, 0.05, 0.25, n),
        "eff_fill": uniform(rng, 0.4, 0.9, n),
        "emph_inflate": uniform(rng, 1.05, 1.16, n),
        "emph_air": uniform(rng, 1.08, 1.3, n),
        "emph_markings": uniform(rng, 0.3, 0.65, n),
        "nod_side": rng.integers(0, 2, n),
        "nod_r": np.sqrt(uniform(rng, 0, 0.55, n)),
        "nod_theta": uniform(rng, 0, 2 * np.pi, n),
        "nod_sigma": uniform(rng, 0.04, 0.065, n),
        "nod_fill": uniform(rng, 0.6, 1.4, n),
        "mass_side": rng.integers(0, 2, n),
        "mass_r": np.sqrt(uniform(rng, 0, 0.4, n)),
        "mass_theta": uniform(rng, 0, 2 * np.pi, n),
        "mass_sigma": uniform(rng, 0.09, 0.15, n),
        "mass_fill": uniform(rng, 0.7, 1.3, n),
        "mass_lobe": rng.normal(0, 0.06, (n, 2)).astype(np.float32),
        "pt_side": rng.choice(3, n, p=(0.35, 0.35, 0.3)),
        "pt_width": uniform(rng, 0.25, 0.5, n),
        "pt_fill": uniform(rng, 0.4, 0.8, n),
        "ptx_side": rng.integers(0, 2, n),
        "ptx_width": uniform(rng, 0.15, 0.45, n),
    }
    labels = labels.copy()
    for level in (1, 2):  # follow-ups keep the previous image's findings (and where they are) with prob PERSIST
        rows = np.flatnonzero((visit == level) & (rng.random(n) < PERSIST))
        labels[rows] = labels[rows - 1]
        for values in finding.values():
            values[rows] = values[rows - 1]
    p.update(finding)
    return labels, p


def lung_fields(labels: np.ndarray, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Lung and heart geometry after the volume findings (atelectasis, emphysema, cardiomegaly).

    Args:
        labels: (B, C) bool findings.
        p: the phantom parameters (sample_params), (B, ...) arrays.

    Returns:
        {cx, cy, a, b: (B, 2); heart_a, heart_cx, medi_cx, air, markings: (B,)}.
    """
    column = {name: CLASSES.index(name) for name in CLASSES}
    cx, cy, a, b = (p[k].copy() for k in ("lung_cx", "lung_cy", "lung_a", "lung_b"))
    emph = labels[:, column["Emphysema"]]
    inflate = np.where(emph, p["emph_inflate"], 1.0)[:, None]
    cy += b * (inflate - 1)  # apex stays, the base goes down
    b *= inflate
    a *= np.where(emph, 1.04, 1.0)[:, None]
    atel = labels[:, column["Atelectasis"]]
    shrink = np.where(atel[:, None] & (np.arange(2) == p["atel_side"][:, None]), p["atel_shrink"][:, None], 1.0)
    cy -= b * (1 - shrink)  # raised base
    b *= shrink
    ratio = np.where(labels[:, column["Cardiomegaly"]], p["cardio_ratio"], p["heart_ratio"] + p["heart_jitter"])
    shift = np.where(atel, np.where(p["atel_side"] == 0, -0.05, 0.05), 0.0)
    return {
        "cx": cx,
        "cy": cy,
        "a": a,
        "b": b,
        "heart_a": ratio * 0.75,
        "heart_cx": p["heart_cx"] + shift,
        "medi_cx": shift,
        "air": p["air"] * np.where(emph, p["emph_air"], 1.0),
        "markings": p["marking_amp"] * np.where(emph, p["emph_markings"], 1.0),
    }


def col(values: np.ndarray) -> np.ndarray:
    """(B,) or a scalar -> (B, 1) or (1, 1), for broadcasting against (B, S) coordinates.

    Args:
        values: (B,) values or a scalar.

    Returns:
        float32 (B, 1) or (1, 1).
    """
    return np.asarray(values, np.float32).reshape(-1, 1)


def ellipse(u: np.ndarray, v: np.ndarray, cx, cy, a, b, edge: float) -> tuple[np.ndarray, np.ndarray]:
    """(r2, soft mask) of axis-aligned ellipses; the mask ramps over `edge` of r2.

    Args:
        u: (B, S) x coordinates.
        v: (B, S) y coordinates.
        cx: the centres' x, (B,) or a scalar.
        cy: the centres' y, (B,) or a scalar.
        a: the x semi-axes.
        b: the y semi-axes.
        edge: the ramp's width in r2.

    Returns:
        (r2, mask), each (B, S, S).
    """
    r2 = (((u - col(cx)) / col(a)) ** 2)[:, None, :] + (((v - col(cy)) / col(b)) ** 2)[:, :, None]
    mask = np.subtract(1.0, r2, dtype=np.float32)
    mask *= 1 / edge
    return r2, np.clip(mask, 0, 1, out=mask)


def gaussian(u: np.ndarray, v: np.ndarray, cx, cy, sx, sy) -> np.ndarray:
    """Separable Gaussian bumps, peak 1.

    Args:
        u: (B, S) x coordinates.
        v: (B, S) y coordinates.
        cx: the centres' x, (B,) or a scalar.
        cy: the centres' y.
        sx: the x standard deviations.
        sy: the y standard deviations.

    Returns:
        (B, S, S).
    """
    gx = np.exp(-0.5 * ((u - col(cx)) / col(sx)) ** 2)
    gy = np.exp(-0.5 * ((v - col(cy)) / col(sy)) ** 2)
    return gy[:, :, None] * gx[:, None, :]


def interpolation(coords: np.ndarray, size: int) -> np.ndarray:
    """Coordinates in [-1, 1] -> linear-interpolation weights onto a `size` grid.

    Args:
        coords: (B, S) coordinates.
        size: the grid's size.

    Returns:
        float32 (B, S, size).
    """
    pos = np.clip((coords + 1) * 0.5 * (size - 1), 0, size - 1 - 1e-4)
    low = pos.astype(np.int64)
    frac = (pos - low).astype(np.float32)
    weights = np.zeros((*coords.shape, size), np.float32)
    np.put_along_axis(weights, low[..., None], (1 - frac)[..., None], -1)
    np.put_along_axis(weights, low[..., None] + 1, frac[..., None], -1)
    return weights


def render_chunk(labels: np.ndarray, p: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Render B phantoms: the noise-free picture plus pixel noise from `rng`.

    Args:
        labels: (B, C) bool findings.
        p: the phantom parameters (sample_params), (B, ...) arrays.
        size: the side in pixels.
        rng: the pixel noise's generator.

    Returns:
        uint8 (B, size, size).
    """
    image = draw(labels, p, size)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= col(p["noise"])[:, :, None]
    image += noise
    np.clip(image, 0, 1, out=image)
    image *= 255
    image += 0.5
    return image.astype(np.uint8)


def finding_masks(
    labels: np.ndarray, p: dict[str, np.ndarray], size: int, min_change: float = MASK_MIN_CHANGE
) -> np.ndarray:
    """Where each finding changes the picture, False for findings an image lacks.

    For each image with finding c, the noise-free picture (clipped to [0, 1]) is drawn again from the same
    parameters with c alone removed; the mask is where the two differ by at least `min_change` of the grey
    range. So it covers everything c does to that image, volume changes included (atelectasis moves the
    lung base and the heart, emphysema darkens both lungs), and nothing the other findings do.

    Args:
        labels: (B, C) bool findings.
        p: the phantom parameters (sample_params), (B, ...) arrays.
        size: the side in pixels.
        min_change: the smallest visible change, as a share of the grey range.

    Returns:
        bool (B, C, size, size).
    """
    masks = np.zeros((len(labels), len(CLASSES), size, size), bool)
    picture = np.clip(draw(labels, p, size), 0, 1)
    for c in range(len(CLASSES)):
        rows = np.flatnonzero(labels[:, c])
        if rows.size:
            without = labels[rows].copy()
            without[:, c] = False
            other = np.clip(draw(without, {name: values[rows] for name, values in p.items()}, size), 0, 1)
            masks[rows, c] = np.abs(picture[rows] - other) >= min_change
    return masks


def draw(labels: np.ndarray, p: dict[str, np.ndarray], size: int) -> np.ndarray:
    """The noise-free pictures of B phantoms, before clipping to [0, 1].

    Args:
        labels: (B, C) bool findings.
        p: the phantom parameters (sample_params), (B, ...) arrays.
        size: the side in pixels.

    Returns:
        float32 (B, size, size).
    """
    n = len(labels)
    has = {name: np.flatnonzero(labels[:, j]) for j, name in enumerate(CLASSES)}
    g = lung_fields(labels, p)
    grid = (np.arange(size, dtype=np.float32) + 0.5) * (2 / size) - 1
    u = (grid[None, :] - col(p["shift_x"])) / col(p["scale"])
    v = (grid[None, :] - col(p["shift_y"])) / col(p["scale"])

    image = np.full((n, size, size), 0.04, np.float32)
    image += ellipse(u, v, 0.0, 0.22, p["body_a"], 1.25, 0.08)[1] * col(p["tissue"])[:, :, None]
    _, heart = ellipse(u, v, g["heart_cx"], p["heart_cy"], g["heart_a"], p["heart_b"], 0.1)
    _, medi = ellipse(u, v, g["medi_cx"], -0.45, p["medi_a"], 0.65, 0.15)
    cover = np.maximum(heart, medi)
    lung_r2, lung_mask = zip(
        *(ellipse(u, v, g["cx"][:, s], g["cy"][:, s], g["a"][:, s], g["b"][:, s], 0.12) for s in range(2))
    )
    lungs = (lung_mask[0] + lung_mask[1]) * (1 - cover)
    texture = interpolation(v, GRID) @ p["texture"] @ interpolation(u, GRID).transpose(0, 2, 1)
    markings = np.maximum(texture, 0) * col(g["markings"])[:, :, None]
    fill = np.zeros_like(image)  # share of lung air replaced by fluid/tissue (negative: extra air)

    def add(name: str, field_fn) -> None:
        rows = has[name]
        if rows.size:
            fill[rows] += field_fn(rows)

    def sided(side: np.ndarray, rows: np.ndarray, s: int) -> np.ndarray:
        """(B', 1, 1) 1.0 where the finding of `rows` is on lung s (side 2 = both)."""
        return ((side[rows] == s) | (side[rows] == 2)).astype(np.float32)[:, None, None]

    def lateral(rows: np.ndarray, s: int) -> np.ndarray:
        """(B', S) 0 at the lung centre line, 1 at its lateral edge."""
        return np.clip((u[rows] - col(g["cx"][rows, s])) * (1 if s else -1) / col(g["a"][rows, s]), 0, 1)

    def effusion(rows):
        out = 0
        for s in range(2):
            top = col(g["cy"][rows, s] + g["b"][rows, s] * (1 - p["eff_height"][rows])) - col(
                p["eff_meniscus"][rows]
            ) * lateral(rows, s)
            fluid = np.clip((v[rows][:, :, None] - top[:, None, :]) * 25, 0, 1)
            out = out + fluid * lung_mask[s][rows] * sided(p["eff_side"], rows, s)
        return out * col(p["eff_fill"][rows])[:, :, None]

    def blob(prefix: str, rows):
        s = p[f"{prefix}_side"][rows]
        r, theta, sigma = p[f"{prefix}_r"][rows], p[f"{prefix}_theta"][rows], p[f"{prefix}_sigma"][rows]
        cx = g["cx"][rows, s] + g["a"][rows, s] * r * np.cos(theta)
        cy = g["cy"][rows, s] + g["b"][rows, s] * r * np.sin(theta)
        out = gaussian(u[rows], v[rows], cx, cy, sigma, sigma)
        if prefix == "mass":  # lobulated: a second, smaller lobe
            lobe = p["mass_lobe"][rows]
            second = gaussian(u[rows], v[rows], cx + lobe[:, 0], cy + lobe[:, 1], sigma * 0.7, sigma * 0.7)
            out = np.maximum(out, second)
        return out * col(p[f"{prefix}_fill"][rows])[:, :, None]

    def consolidation(rows):
        s = p["cons_side"][rows]
        cx, cy, b = g["cx"][rows, s], g["cy"][rows, s], g["b"][rows, s]
        fissure = col(cy + p["cons_level"][rows] * b) + col(p["cons_slope"][rows]) * (u[rows] - col(cx))
        below = np.clip((v[rows][:, :, None] - fissure[:, None, :]) * 30, -0.5, 0.5) + 0.5
        zone = np.where(p["cons_lower"][rows][:, None, None], below, 1 - below)
        lung = np.stack([lung_mask[k][rows] for k in range(2)], 1)[np.arange(rows.size), s]
        patchy = 0.7 + 0.3 * np.tanh(texture[rows])
        return zone * lung * patchy * col(p["cons_fill"][rows])[:, :, None]

    def edema(rows):
        sx, sy = p["edema_sx"][rows], p["edema_sy"][rows]
        hila = [(g["cx"][rows, s] * 0.55, g["cy"][rows, s] + 0.1) for s in range(2)]
        both = sum(gaussian(u[rows], v[rows], cx, cy, sx, sy) for cx, cy in hila)
        return both * col(p["edema_fill"][rows])[:, :, None]

    def atelectasis(rows):
        s = p["atel_side"][rows]
        cx, cy, a, b = (g[k][rows, s] for k in ("cx", "cy", "a", "b"))
        return (
            gaussian(u[rows], v[rows], cx, cy + b * p["atel_pos"][rows], a * 0.45, 0.018)
            * col(p["atel_line"][rows])[:, :, None]
        )

    def pleural_thickening(rows):
        out = 0
        for s in range(2):
            width = col(p["pt_width"][rows])[:, :, None]
            rim = np.clip((lung_r2[s][rows] - (1 - width)) / 0.05, 0, 1) * lung_mask[s][rows]
            out = out + rim * np.clip(lateral(rows, s) * 2, 0, 1)[:, None, :] * sided(p["pt_side"], rows, s)
        return out * col(p["pt_fill"][rows])[:, :, None]

    add("Effusion", effusion)
    add("Nodule", functools.partial(blob, "nod"))
    add("Mass", functools.partial(blob, "mass"))
    add("Consolidation", consolidation)
    add("Edema", edema)
    add("Atelectasis", atelectasis)
    add("Pleural_Thickening", pleural_thickening)
    rows = has["Pneumothorax"]
    if rows.size:  # air without markings at the apex/lateral border, behind a thin bright pleural line
        s = p["ptx_side"][rows]
        r2 = np.stack([lung_r2[k][rows] for k in range(2)], 1)[np.arange(rows.size), s]
        edge = 1 - col(p["ptx_width"][rows])[:, :, None]
        apical = np.clip((col(g["cy"][rows, s] + 0.25 * g["b"][rows, s]) - v[rows]) * 8, 0, 1)[:, :, None]
        region = np.clip((r2 - edge) / 0.04, 0, 1) * apical
        line = np.exp(-(((r2 - edge) / 0.035) ** 2)) * apical
        markings[rows] *= 1 - region
        fill[rows] += 0.35 * line - 0.3 * region

    lung_air = lungs * col(g["air"])[:, :, None] * (1 - np.clip(fill, -1, 1.5))  # > 1: denser than soft tissue
    image += cover * 0.08 - lung_air + lungs * markings
    phase = (v[:, :, None] - col(p["rib_curve"])[:, :, None] * np.abs(u)[:, None, :]) * col(p["rib_freq"])[:, :, None]
    ribs = np.maximum(np.cos(phase * (2 * np.pi) + col(p["rib_phase"])[:, :, None]), 0)
    image += ribs * col(p["rib_amp"])[:, :, None] * lungs
    image *= col(p["contrast"])[:, :, None]
    image += col(p["brightness"])[:, :, None]
    return image


class Phantoms:
    """Labels, patients and parameters of `num_images` phantoms; `render(size)` draws them.

    Args:
        num_images: how many phantoms (at least 1).
        images_per_patient: mean images per patient, in [1, 3].
        seed: the generator seed.
    """

    def __init__(self, num_images: int, images_per_patient: float = 1.5, seed: int = 0):
        if num_images < 1:
            raise DataError(f"data.synthetic.num_images={num_images}: must be at least 1")
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.patient, self.visit = sample_patients(rng, num_images, images_per_patient)
        self.labels, self.params = sample_params(rng, sample_labels(rng, num_images), self.patient, self.visit)
        self.sex = rng.choice(np.array(["M", "F"], dtype=object), self.patient.max() + 1)[self.patient]
        self.age = rng.integers(18, 90, self.patient.max() + 1)[self.patient] + self.visit

    def __len__(self) -> int:
        return len(self.labels)

    def render(self, size: int) -> np.ndarray:
        """Draw every phantom; pixel noise is seeded per RENDER_CHUNK images, so the result is fixed.

        Args:
            size: the side in pixels (16-512; a DataError otherwise).

        Returns:
            uint8 (N, size, size).
        """
        if not 16 <= size <= 512:
            raise DataError(f"data.size={size}: the synthetic phantoms render at 16-512 px (32-256 intended)")
        out = np.empty((len(self), size, size), np.uint8)
        for start in range(0, len(self), RENDER_CHUNK):
            rows = slice(start, start + RENDER_CHUNK)
            params = {name: values[rows] for name, values in self.params.items()}
            rng = np.random.default_rng([self.seed, size, start // RENDER_CHUNK])
            out[rows] = render_chunk(self.labels[rows], params, size, rng)
        return out

    def masks(self, rows: np.ndarray, size: int) -> np.ndarray:
        """Finding masks of phantoms `rows` at `size` px (see finding_masks).

        They match render(size)[rows] pixel for pixel.

        Args:
            rows: (R,) phantom numbers.
            size: the side in pixels.

        Returns:
            bool (R, C, size, size).
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), len(CLASSES), size, size), bool)
        for start in range(0, len(rows), RENDER_CHUNK):
            chunk = rows[start : start + RENDER_CHUNK]
            out[start : start + len(chunk)] = finding_masks(
                self.labels[chunk], {name: values[chunk] for name, values in self.params.items()}, size
            )
        return out


@dataclass(frozen=True)
class SyntheticSpec:
    """The generator parameters that fix the phantoms and their labels (data.synthetic.*; not the image size).

    Attributes:
        num_images: how many phantoms.
        images_per_patient: mean follow-ups per patient.
        seed: the generator seed.
    """

    num_images: int = 3000
    images_per_patient: float = 1.5  # mean follow-ups per patient
    seed: int = 0


def source_hash(spec: SyntheticSpec) -> str:
    """sha256 of the generator parameters that fix the labels (the image size does not).

    Args:
        spec: the generator parameters.

    Returns:
        The hex digest.
    """
    fields = {
        "generator": GENERATOR_VERSION,
        "num_images": spec.num_images,
        "images_per_patient": spec.images_per_patient,
        "seed": spec.seed,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@functools.lru_cache(maxsize=2)
def phantoms(num_images: int, images_per_patient: float, seed: int) -> Phantoms:
    """The Phantoms of these generator parameters (the last two kept in memory).

    Args:
        num_images: how many phantoms.
        images_per_patient: mean images per patient.
        seed: the generator seed.

    Returns:
        The Phantoms.
    """
    return Phantoms(num_images, images_per_patient, seed)


@functools.lru_cache(maxsize=2)
def rendered(num_images: int, images_per_patient: float, seed: int, size: int) -> np.ndarray:
    """All phantoms of these generator parameters rendered at `size` (read-only; the last two kept in memory).

    Args:
        num_images: how many phantoms.
        images_per_patient: mean images per patient.
        seed: the generator seed.
        size: the side in pixels.

    Returns:
        uint8 (N, size, size).
    """
    images = phantoms(num_images, images_per_patient, seed).render(size)
    images.flags.writeable = False
    return images


@READERS.register("synthetic")
def read_synthetic(
    num_images: int = 3000, images_per_patient: float = 1.5, seed: int = 0, classes: Sequence[str] = ()
) -> LabelTable:
    """The phantoms' LabelTable (values 0/1; path "", study_id = phantom number, view PA).

    Args:
        num_images: how many phantoms.
        images_per_patient: mean images per patient (follow-ups share anatomy).
        seed: the generator seed (labels and phantom parameters do not depend on the image size).
        classes: the findings to read, in this order; empty = CLASSES.

    Returns:
        The LabelTable (num_images rows).

    >>> table = read_synthetic(num_images=20, seed=1, classes=["Edema", "Nodule"])
    >>> len(table.frame), table.classes
    (20, ('Edema', 'Nodule'))
    """
    spec = SyntheticSpec(num_images, images_per_patient, seed)
    ph = phantoms(num_images, images_per_patient, seed)
    classes = tuple(classes) or CLASSES
    unknown = [name for name in classes if name not in CLASSES]
    if unknown:
        raise DataError(f"data.classes: unknown class(es) {unknown}; the synthetic dataset has {list(CLASSES)}")
    values = ph.labels[:, [CLASSES.index(name) for name in classes]].astype(np.float64)
    meta = {
        "path": np.full(len(ph), "", dtype=object),
        "patient_id": [f"P{i:05d}" for i in ph.patient],
        "study_id": [str(i) for i in range(len(ph))],
        "view": np.full(len(ph), "PA", dtype=object),
        "sex": ph.sex,
        "age": ph.age.astype(np.float64),
    }
    return make_table(meta, values, classes, f"synthetic:{seed}:{num_images}", source_hash(spec))


def lesion_masks(spec: SyntheticSpec, frame, classes: Sequence[str], size: int) -> np.ndarray:
    """Where each finding of `classes` changes the images of `frame` (rows of read_synthetic's table, e.g. a
    split's frame).

    Args:
        spec: the generator parameters the table was read with.
        frame: rows of the table (its study_id column names the phantoms).
        classes: findings of CLASSES.
        size: the image size in pixels.

    Returns:
        bool (N, len(classes), size, size), in the frame's row order.
    """
    unknown = [name for name in classes if name not in CLASSES]
    if unknown:
        raise DataError(f"lesion masks: {unknown} are not findings of the synthetic set {list(CLASSES)}")
    masks = phantoms(spec.num_images, spec.images_per_patient, spec.seed).masks(
        frame["study_id"].astype(int).to_numpy(), size
    )
    return masks[:, [CLASSES.index(name) for name in classes]]


def synthetic_source(spec: SyntheticSpec, table: LabelTable, size: int) -> ArraySource:
    """In-memory images of the table's rows (any subset of read_synthetic's table).

    All phantoms are rendered once per (generator parameters, size) and kept. A table made with other parameters is a
    DataError.

    Args:
        spec: the generator parameters the table was read with.
        table: the rows.
        size: the side in pixels.

    Returns:
        ArraySource of uint8 (N, size, size).
    """
    if table.source_hash != source_hash(spec):
        raise DataError(f"table {table.source} was not made by the synthetic reader with this data.synthetic config")
    images = rendered(spec.num_images, spec.images_per_patient, spec.seed, size)
    return ArraySource(images[table.frame["study_id"].astype(int).to_numpy()])
