"""`build_data(table, split, mode, images, masking, labels) -> DataBundle`: a split label table becomes the
train/val/test datasets. spml.factories.data.build_data(config) reads the table (READERS), checks that the image
files exist (data.missing; skipped with a data.cache, whose own check covers the files), splits it
(spml.data.splits.assign_splits) and calls it with the data.* settings.

Uncertainty policy -> training labels -> image check:
every image of every split is opened and its header read before the first step, and the val and test images
(small next to train) are decoded fully, so damage only decoding finds cannot stop a run after its epochs (with
a data.cache, the failures the cache recorded when it decoded the files); images far below data.size
(placeholders) are warned about with a count. data.bad_images=error stops
naming the files and reasons; skip leaves them out of their split (the split assignment does not
change), counts them against data.bad_image_budget and lists them in `DataBundle.left_out` (the Trainer
writes them to <run>/skipped_images.csv).


* spml mode: `observed` of the train split comes from data.masked_labels (checked against its manifest)
  or, without a file, from masking the train split in memory (data.mask_scheme, data.mask_seed,
  data.mask_params; rows without an observed positive are dropped). Train rows absent from the masked
  labels leave the train split. Val keeps its full labels unless data.mask_val; test always does.
* supervised mode: full targets, or with data.masked_labels its 1/0/blank as targets/known (a file that
  observes no negative in the train split, e.g. single positive, is refused: every target would be 1).
* data.mask_val: the val split's labels are masked too (from the file, or in memory in spml mode); its
  observed positives are the targets and every other entry is a known negative (as AN assumes), so
  model selection and the class prior (data_stats) see only masked labels; val rows absent from the
  masked labels leave the val split. A masked file whose manifest lists `splits` (masking_experiment)
  may hold rows of those splits only.

A label column with no value in any row is unknown whatever data.blank says; such columns, the classes
without a known (SPML train: observed) positive in a split, a val split whose class prevalence differs from
train's by more than PREVALENCE_FACTOR or that holds fewer than FEW_POSITIVES positives of a class, and patients
in two splits (only under data.allow_patient_overlap) are warned and listed in `DataBundle.warnings`.

Named steps, in order: `full_labels` (the uncertainty policy) -> `masked_labels` (the label
source: `masked_file`, `masked_in_memory` or None for full labels) -> `split_rows` -> `training_labels`
(`observed_positives` or `partial_targets` for train, `masked_targets` for val under data.mask_val) ->
`make_dataset` per split.

`expected_positives` (EPR/ROLE's k) is the mean number of known positives per image of the train split
in supervised mode, and of the fully labelled validation split in spml mode (also under data.mask_val:
one scalar taken from clean labels, as the methods' papers assume k known), so hidden train labels
never leak into training.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from spml.data import synthetic
from spml.data.cache import ImageCache
from spml.data.dataset import CacheSource, CXRDataset, FileSource
from spml.data.images import ImageError, Intensity, check_image, load_gray
from spml.data.labels import apply_uncertainty
from spml.data.masking import align_masked, load_masked_rows, mask_splits, read_manifest
from spml.data.splits import SPLITS, patient_overlap_message, shared_patients
from spml.data.table import DataError, LabelTable

log = logging.getLogger(__name__)
MODES = ("spml", "supervised")
HEADER_THREADS = 8  # header reads wait on file-system latency (network storage) more than on the CPU
LEFT_OUT_COLUMNS = ["split", "path", "reason"]


@dataclass
class DataBundle:
    """The data of a run: the three split datasets and what was learned building them.

    Attributes:
        train: the train split's dataset.
        val: the val split's dataset.
        test: the test split's dataset.
        classes: the class names.
        table: every row after data.missing, before splitting.
        manifest: masking manifest of the train labels (None: full labels).
        pos_counts: (C,) observed (spml) or known (supervised) positives per class in train.
        expected_positives: mean positives per image (see the module docstring).
        frames: each split's rows, in dataset order.
        warnings: label_warnings (also in <run>/data_stats.json).
        left_out: the images the header check left out (split, path, reason).
    """

    train: CXRDataset
    val: CXRDataset
    test: CXRDataset
    classes: tuple[str, ...]
    table: LabelTable  # every row after data.missing, before splitting
    manifest: dict[str, Any] | None  # masking manifest of the train labels (None: full labels)
    pos_counts: np.ndarray  # (C,) observed (spml) or known (supervised) positives per class in train
    expected_positives: float  # mean positives per image (see the module docstring)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # each split's rows, in dataset order
    warnings: list[dict[str, Any]] = field(default_factory=list)  # label_warnings (also in <run>/data_stats.json)
    left_out: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LEFT_OUT_COLUMNS))  # header check

    def fingerprint(self) -> dict[str, dict[str, str]]:
        """{split: {"images": sha256 of its image paths and study ids in order, "labels": sha256 of its targets,
        known and observed}}: what a resumed run must find again (a changed label file, masked file or image set)."""
        result = {}
        for name in SPLITS:
            dataset, frame = getattr(self, name), self.frames[name]
            paths = "\n".join(frame["path"] + "|" + frame["study_id"])
            labels = hashlib.sha256()
            for array in (dataset.targets, dataset.known, dataset.observed):
                labels.update(array.numpy().tobytes())
            result[name] = {"images": hashlib.sha256(paths.encode("utf-8")).hexdigest(), "labels": labels.hexdigest()}
        return result


@dataclass(frozen=True)
class LabelPolicy:
    """How 1/0/-1/blank become targets and known (spml.data.labels.apply_uncertainty).

    Attributes:
        uncertainty: ignore | zeros | ones | mixed (data.uncertainty).
        uncertain_ones: U-Ones classes under "mixed" (data.uncertain_ones).
        blank: zero | unknown (data.blank).
    """

    uncertainty: str = "ignore"  # ignore | zeros | ones | mixed
    uncertain_ones: tuple[str, ...] = ("Atelectasis", "Edema")  # U-Ones classes under "mixed"
    blank: str = "zero"  # zero | unknown


@dataclass(frozen=True)
class Masking:
    """Where the masked training labels come from (data.masked_labels, data.mask_*).

    Attributes:
        file: a masked CSV (tools/mask_labels.py), checked against its manifest; "" masks the train split in
            memory in spml mode (supervised mode without a file trains on the full labels).
        scheme: the masking scheme (data.mask_scheme).
        seed: the masking seed (data.mask_seed).
        no_positive: drop | keep rows without an observed positive (data.mask_no_positive).
        params: the scheme's parameters (data.mask_params).
        mask_val: also the val split.
        root: the dataset root that masked files key their rows by (spml.data.table.dataset_root).
    """

    file: str = ""
    scheme: str = "single_positive"
    seed: int = 1200
    no_positive: str = "drop"
    params: dict[str, Any] = field(default_factory=dict)
    mask_val: bool = False
    root: str = ""


@dataclass(frozen=True)
class ImageSettings:
    """Where a split's images come from and what a bad one does.

    Attributes:
        size: the image side (data.size).
        cache: uint8 cache folder of tools/prepare_data.py; "" decodes the files (data.cache).
        intensity: the intensity policy (data.intensity*).
        synthetic: the phantoms' generator, for read_synthetic's tables (None: image files).
        bad_images: error | skip (data.bad_images).
        bad_image_budget: bad images tolerated under skip (data.bad_image_budget).
    """

    size: int = 64
    cache: str = ""  # uint8 cache folder of tools/prepare_data.py; "" decodes the files
    intensity: Intensity = field(default_factory=Intensity)
    synthetic: synthetic.SyntheticSpec | None = None
    bad_images: str = "error"  # error | skip
    bad_image_budget: int = 10


def full_labels(table: LabelTable, policy: LabelPolicy = LabelPolicy()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The uncertainty policy applied to every row.

    Args:
        table: a reader's LabelTable.
        policy: the LabelPolicy.

    Returns:
        (targets (N, C) float32, known (N, C) bool, empty (C,) bool): a label column with no value in any row
        (`empty`) is unknown, whatever data.blank says about single blanks.

    >>> from spml.data.synthetic import read_synthetic
    >>> targets, known, empty = full_labels(read_synthetic(num_images=30, classes=["Edema"]))
    >>> targets.shape, bool(known.all()), empty.tolist()
    ((30, 1), True, [False])
    """
    targets, known = apply_uncertainty(
        table.values(), table.classes, policy.uncertainty, policy.uncertain_ones, policy.blank
    )
    empty = empty_columns(table)
    known[:, empty] = False
    return targets, known, empty


@dataclass
class MaskedLabels:
    """Masked labels of the splits `splits`, aligned with the table.

    Attributes:
        values: (N, C) 1 / 0 / NaN.
        present: (N,) True where the row has masked labels.
        manifest: the masking manifest.
        splits: the masked splits.
        path: the masked file ("" when masked in memory).
    """

    values: np.ndarray
    present: np.ndarray
    manifest: dict[str, Any]
    splits: tuple[str, ...]
    path: str = ""


@dataclass
class SplitLabels:
    """One split: its table rows and its training tensors.

    Attributes:
        rows: (n,) table rows.
        targets: (n, C) float {0, 1}.
        known: (n, C) bool.
        observed: (n, C) bool (SPML train split only, else None).
    """

    rows: np.ndarray
    targets: np.ndarray
    known: np.ndarray
    observed: np.ndarray | None = None


# ------------------------------------------------------------------------------------ label sources
def masked_file(masking: Masking, table: LabelTable, split: np.ndarray, names: tuple[str, ...]) -> MaskedLabels:
    """masking.file (data.masked_labels), checked against its manifest and against this run's split.

    A file that lists its splits may hold rows of those splits only, and must hold the splits `names`.

    Args:
        masking: the Masking.
        table: the LabelTable.
        split: (N,) split names.
        names: the splits that must be masked.

    Returns:
        The MaskedLabels.
    """
    path = masking.file
    values, present = load_masked_rows(path, table, masking.root)
    manifest = read_manifest(path)
    allowed = list(manifest.get("splits", SPLITS))
    foreign = present & ~np.isin(split, allowed)
    if foreign.any():
        raise DataError(
            f"{path} was masked for the splits {allowed} but holds {int(foreign.sum())} rows of this "
            f"run's {split[foreign][0]} split: it was made with other split settings (data.split, "
            "data.split_seed, data.val_fraction, data.test_fraction, data.views, data.missing)"
        )
    missing = [name for name in names if name not in allowed]
    if missing:
        raise DataError(
            f"{path} holds no {missing[0]} rows (masked for {allowed}); data.mask_val needs a file "
            "masked with the val split (tools/masking_experiment.py --mask-val)"
        )
    return MaskedLabels(values, present, manifest, names, path)


def masked_in_memory(masking: Masking, table: LabelTable, split: np.ndarray, names: tuple[str, ...]) -> MaskedLabels:
    """Each split of `names` masked on its own with masking's scheme, seed, no_positive policy and params.

    (spml.data.masking.mask_splits.)

    Args:
        masking: the Masking.
        table: the LabelTable.
        split: (N,) split names.
        names: the splits to mask.

    Returns:
        The MaskedLabels.
    """
    frame, manifest = mask_splits(
        table, split, names, masking.scheme, masking.seed, masking.no_positive, masking.root, **masking.params
    )
    values, present = align_masked(frame, table, masking.root)
    return MaskedLabels(values, present, manifest, names)


def masked_labels(mode: str, masking: Masking, table: LabelTable, split: np.ndarray) -> MaskedLabels | None:
    """The masked labels of the train split (and the val split under data.mask_val).

    The masked file, else in SPML mode the splits masked in memory.

    Args:
        mode: "spml" | "supervised".
        masking: the Masking.
        table: the LabelTable.
        split: (N,) split names.

    Returns:
        The MaskedLabels, or None in supervised mode without a file (full labels).
    """
    names = ("train", "val") if masking.mask_val else ("train",)
    if masking.file:
        return masked_file(masking, table, split, names)
    if mode == "spml":
        return masked_in_memory(masking, table, split, names)
    return None


# ------------------------------------------------------------------------------------ split labels
def split_rows(split: np.ndarray, masked: MaskedLabels | None) -> dict[str, np.ndarray]:
    """Each split's table rows; rows of a masked split without masked labels leave it.

    Args:
        split: (N,) split names.
        masked: the masked labels (None: full labels).

    Returns:
        {split: row positions}.
    """
    rows = {}
    for name in SPLITS:
        member = split == name
        if masked is not None and name in masked.splits:
            dropped = int((member & ~masked.present).sum())
            if dropped:
                log.info(
                    "%d of %d %s rows have no masked labels and leave the %s split",
                    dropped,
                    int(member.sum()),
                    name,
                    name,
                )
            member = member & masked.present
        rows[name] = np.flatnonzero(member)
    return rows


def observed_positives(labels: SplitLabels, masked: np.ndarray) -> SplitLabels:
    """SPML train split: the masked 1s are the observed positives.

    targets/known keep the full labels, which only the evaluator side reads (pseudo-label quality).

    Args:
        labels: the split's full labels.
        masked: (n, C) the split's masked values, 1 / 0 / NaN.

    Returns:
        The SplitLabels with `observed`.
    """
    return replace(labels, observed=masked == 1)


def check_partial_labels(masked: MaskedLabels, train: np.ndarray) -> None:
    """Supervised training needs observed negatives.

    A file of observed positives only (single_positive, keep_k) would make every known target 1, so it is refused
    with what to do instead.

    Args:
        masked: the masked labels (their file and manifest are named).
        train: (n, C) the train split's masked values.
    """
    if not (train == 0).any():
        scheme = masked.manifest.get("scheme")
        raise DataError(
            f"{masked.path} observes only positive labels (masking scheme {scheme!r}: no 0 in its "
            "train rows); supervised training on it would take every known target as 1 and "
            "learn nothing. Train on it with --mode spml, or train supervised on the clean labels "
            "(without data.masked_labels); supervised mode takes masked files that also observe "
            "negatives (tools/mask_labels.py --scheme keep_fraction)"
        )


def partial_targets(labels: SplitLabels, masked: np.ndarray) -> SplitLabels:
    """Supervised training on a masked file: its 1 / 0 are known targets, its blanks unknown.

    Args:
        labels: the split's full labels.
        masked: (n, C) the split's masked values, 1 / 0 / NaN.

    Returns:
        The SplitLabels with those targets and known.
    """
    return replace(labels, targets=(masked == 1).astype(np.float32), known=~np.isnan(masked))


def masked_targets(labels: SplitLabels, masked: np.ndarray) -> SplitLabels:
    """data.mask_val: the observed positives are the targets and every other entry a known negative.

    As AN assumes, so model selection sees only what a single-positive user has.

    Args:
        labels: the split's full labels.
        masked: (n, C) the split's masked values, 1 / 0 / NaN.

    Returns:
        The SplitLabels with those targets and known.
    """
    positives = masked == 1
    return replace(labels, targets=positives, known=np.ones_like(positives))


def training_labels(mode: str, full: dict[str, SplitLabels], masked: MaskedLabels | None) -> dict[str, SplitLabels]:
    """Each split's labels as the run uses them.

    Train from the masked labels (observed positives in SPML mode, partial targets in supervised mode), val masked
    under data.mask_val, test always full.

    Args:
        mode: "spml" | "supervised".
        full: {split: full SplitLabels}.
        masked: the masked labels (None: full labels).

    Returns:
        {split: SplitLabels}.
    """
    labels = dict(full)
    if masked is None:
        return labels
    train = masked.values[full["train"].rows]
    if mode == "spml":
        labels["train"] = observed_positives(full["train"], train)
    else:
        check_partial_labels(masked, train)
        labels["train"] = partial_targets(full["train"], train)
    if "val" in masked.splits:
        labels["val"] = masked_targets(full["val"], masked.values[full["val"].rows])
    return labels


def positive_counts(train: SplitLabels) -> np.ndarray:
    """Observed positives (SPML) or known positives (supervised) per class of the train split.

    Args:
        train: the train split's labels.

    Returns:
        (C,) int64.
    """
    positives = train.observed if train.observed is not None else (train.targets > 0.5) & train.known
    return positives.sum(0).astype(np.int64)


def mean_positives(labels: SplitLabels) -> float:
    """Mean number of known positives per image of a split.

    Args:
        labels: the split's labels.

    Returns:
        The mean.
    """
    return float(((labels.targets > 0.5) & labels.known).sum(1).mean())


def warn_rows_without_observed(train: SplitLabels, masked: MaskedLabels) -> None:
    """Log how many train rows have no observed positive (and where the masked labels came from).

    Args:
        train: the train split's labels (with `observed`).
        masked: the masked labels.
    """
    unobserved_rows = int((~train.observed.any(1)).sum())
    if unobserved_rows:
        log.warning(
            "%d train rows have no observed positive (%s, no_positive=%s)",
            unobserved_rows,
            f"masked file {masked.path}" if masked.path else "masked in memory",
            masked.manifest.get("no_positive"),
        )


# ------------------------------------------------------------------------------------ warnings
def empty_columns(table: LabelTable) -> np.ndarray:
    """Whether each class has no label value in any row (every entry blank).

    Args:
        table: the LabelTable.

    Returns:
        (C,) bool.
    """
    return np.isnan(table.values()).all(0)


NO_POSITIVE_EFFECT = {
    "train": "they are trained without a positive example",
    "val": "they are left out of the val metrics that choose the best checkpoint",
    "test": "they get no test AUROC/AP",
}


def label_warnings(table: LabelTable, labels: dict[str, SplitLabels], empty: np.ndarray) -> list[dict[str, Any]]:
    """Label facts a run should not go without.

    Label columns that are empty in every row (read as unknown), rows with No Finding and a pathology, and per split
    the classes without a known positive (SPML train split: without an observed positive).

    Args:
        table: the LabelTable.
        labels: {split: SplitLabels} as the run uses them.
        empty: (C,) bool, the empty label columns.

    Returns:
        [{"warning", "split", "classes", "message", ...}].
    """
    classes = np.asarray(table.classes, dtype=object)
    found = []
    conflicts = table.frame.attrs.get("no_finding_conflicts", 0)
    if conflicts:
        found.append(
            {
                "warning": "no_finding_with_pathology",
                "split": "all",
                "classes": ["No Finding"],
                "count": conflicts,
                "message": f"{conflicts} rows of {table.source} have No Finding = 1 and "
                "a pathology = 1; their labels are used as written",
            }
        )
    if empty.any():
        found.append(
            {
                "warning": "empty_label_column",
                "split": "all",
                "classes": classes[empty].tolist(),
                "message": f"label column(s) {classes[empty].tolist()} of {table.source} are empty in every "
                "row: read as unknown (not as negative), so they are neither trained nor scored",
            }
        )
    for name in SPLITS:
        split = labels[name]
        observed = split.observed is not None
        positives = split.observed if observed else (split.targets > 0.5) & split.known
        absent = (positives.sum(0) == 0) & ~empty
        if absent.any():
            kind = "observed" if observed else "known"
            found.append(
                {
                    "warning": f"no_{kind}_positive",
                    "split": name,
                    "classes": classes[absent].tolist(),
                    "message": f"class(es) {classes[absent].tolist()} have no {kind} positive in the {name} "
                    f"split ({len(split.rows)} images): {NO_POSITIVE_EFFECT[name]}",
                }
            )
    return found


# ------------------------------------------------------------------------------------ images
def check_cache_sources(cache: ImageCache, paths: list[str]) -> None:
    """Refuse a cache whose source files were re-exported since it decoded them.

    Args:
        cache: the uint8 image cache.
        paths: the table's image paths.

    Raises:
        DataError naming the source files whose size or modification time changed; a warning when the cache
        predates the recorded stamps.
    """
    changed = cache.changed(paths)
    if changed is None:
        warnings.warn(
            f"image cache {cache.dir} was built before spml recorded its source files' sizes and times: "
            "images changed since are not noticed; rebuild it with tools/prepare_data.py",
            stacklevel=3,
        )
    elif len(changed):
        first = changed.iloc[0]
        raise DataError(
            f"image cache {cache.dir}: {len(changed)} of {len(paths)} source images changed since the "
            f"cache decoded them, e.g. {first['path']} ({first['then']} then, {first['now']} now); "
            f"{changed['path'].tolist()[:5]}; rebuild the cache with tools/prepare_data.py"
        )


def image_problems(images: ImageSettings, paths: list[str], decode: np.ndarray) -> np.ndarray:
    """Why each image cannot be used.

    Opens each file and reads its header, and where `decode` says so decodes it fully (the val and test splits:
    damage only decoding finds would otherwise stop the run after its epochs); with data.cache, the reasons the
    cache recorded when it decoded the files. Images far smaller than data.size (placeholders) are warned, counted.

    Args:
        images: the ImageSettings.
        paths: the N image paths.
        decode: (N,) bool, decode the image fully.

    Returns:
        (N,) object array of reasons ("" when the image can be used).
    """
    if images.synthetic is not None:
        return np.full(len(paths), "", dtype=object)
    if images.cache:
        cache = ImageCache(images.cache, images.size, images.intensity)
        return cache.index["error"].to_numpy(dtype=object)[cache.rows(paths)]
    jobs = [(path, images.size if full else 0, images.intensity) for path, full in zip(paths, decode)]
    bar = tqdm(
        total=len(paths),
        desc=f"checking images (decoding {int(decode.sum())})",
        unit="img",
        dynamic_ncols=True,
        mininterval=1.0,
        disable=len(paths) < 1000,
    )
    results = []
    with ThreadPoolExecutor(HEADER_THREADS) as pool, bar:
        try:
            for result in pool.map(image_problem, *zip(*jobs), chunksize=16):
                results.append(result)
                bar.update()
        finally:  # Ctrl-C: the queued reads are dropped, not waited for
            pool.shutdown(cancel_futures=True)
    reasons = np.array([reason for reason, _ in results], dtype=object)
    sides = np.array([side for _, side in results])
    warn_placeholders(
        np.asarray(paths, dtype=object)[(sides >= 0) & (sides < images.size / PLACEHOLDER_FACTOR)],
        len(paths),
        images.size,
    )
    return reasons


PLACEHOLDER_FACTOR = 8  # an image whose shorter side is under data.size / 8 is warned about (a placeholder?)


def image_problem(path: str, size: int, intensity: Intensity) -> tuple[str, int]:
    """Whether the image at `path` can be used.

    Args:
        path: the image file.
        size: > 0 also decodes it at this size; 0 reads the header only.
        intensity: the intensity policy of the decode.

    Returns:
        (why the image cannot be used, "" when it can; its shorter side, -1 when unknown).
    """
    try:
        side = min(check_image(path))
        if size:
            load_gray(path, size, intensity)
    except ImageError as err:
        return err.reason, -1
    return "", side


def warn_placeholders(paths: np.ndarray, total: int, size: int) -> None:
    """Warn (log and warnings) about images far below data.size.

    Args:
        paths: the images far below data.size.
        total: the images checked.
        size: data.size.
    """
    if len(paths):
        message = (
            f"{len(paths)} of {total} images are smaller than data.size={size} / {PLACEHOLDER_FACTOR} on "
            f"a side (placeholders or thumbnails?), e.g. {paths[:3].tolist()}; they train as flat images"
        )
        log.warning(message)
        warnings.warn(message, stacklevel=4)


def leave_out_bad_images(
    images: ImageSettings, table: LabelTable, rows: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The image check of every split (headers; val and test images decoded) under data.bad_images.

    See the module docstring: error stops naming the files and reasons; skip leaves them out within
    data.bad_image_budget.

    Args:
        images: the ImageSettings.
        table: the LabelTable.
        rows: {split: row positions}.

    Returns:
        (rows of each split without the bad images, left-out images: split, path, reason).
    """
    names = list(rows)
    positions = np.concatenate([rows[name] for name in names])
    paths = table.frame["path"].to_numpy(dtype=object)[positions]
    splits = np.repeat(names, [len(rows[name]) for name in names])
    reasons = image_problems(images, paths.tolist(), splits != "train")
    bad = reasons != ""
    left_out = pd.DataFrame(
        {"split": splits[bad], "path": paths[bad], "reason": reasons[bad]}, columns=LEFT_OUT_COLUMNS
    )
    if left_out.empty:
        return rows, left_out
    examples = "; ".join(f"{path}: {reason}" for path, reason in zip(left_out["path"][:3], left_out["reason"][:3]))
    counts = ", ".join(f"{name} {int((left_out['split'] == name).sum())}" for name in names)
    found = f"{len(left_out)} of {len(paths)} images cannot be used ({counts}), e.g. {examples}"
    if images.bad_images == "error":
        raise DataError(
            f"{found}. Found before training by reading every image header (and decoding the val and "
            "test images); fix or remove the files, or set data.bad_images=skip to leave them out"
        )
    if len(left_out) > images.bad_image_budget:
        raise DataError(
            f"{found}: over data.bad_image_budget={images.bad_image_budget} (found before training by "
            "reading every image header and decoding the val and test images); fix or remove the files, "
            "or raise data.bad_image_budget"
        )
    message = f"data.bad_images=skip: {found}; they leave their splits before training"
    log.warning(message)
    warnings.warn(message, stacklevel=3)
    kept = {name: rows[name][~bad[splits == name]] for name in names}
    return kept, left_out


PREVALENCE_FACTOR = 3.0  # val prevalence above 3x or below 1/3 of train's is warned (model selection is off)
FEW_POSITIVES = 5  # a class with 1-4 known positives in the val split is warned (its val AP/AUROC is noise)


def prevalence(labels: SplitLabels) -> np.ndarray:
    """Share of the known entries that are positive (NaN without a known entry).

    Args:
        labels: a split's labels.

    Returns:
        (C,) float.
    """
    known = labels.known.sum(0)
    positives = ((labels.targets > 0.5) & labels.known).sum(0)
    return np.where(known > 0, positives / np.maximum(known, 1), np.nan)


def val_warnings(classes: tuple[str, ...], full: dict[str, SplitLabels], val: SplitLabels) -> list[dict[str, Any]]:
    """Validation splits that choose checkpoints badly.

    A class whose val prevalence (full labels) is more than PREVALENCE_FACTOR times its train prevalence or less
    than its inverse ("val_prevalence_shift", classes with positives in both), and classes with 1 to
    FEW_POSITIVES - 1 known positives in the val labels as the run uses them ("few_val_positives"; none at all is
    no_known_positive).

    Args:
        classes: the class names.
        full: {split: full SplitLabels}.
        val: the val labels as the run uses them.

    Returns:
        [{"warning", "split", "classes", "message", ...}].
    """
    found = []
    train_share, val_share = prevalence(full["train"]), prevalence(full["val"])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = val_share / train_share
    shifted = [
        j
        for j in range(len(classes))
        if train_share[j] > 0 and val_share[j] > 0 and not 1 / PREVALENCE_FACTOR <= ratio[j] <= PREVALENCE_FACTOR
    ]
    if shifted:
        values = {
            classes[j]: {"train": round(float(train_share[j]), 4), "val": round(float(val_share[j]), 4)}
            for j in shifted
        }
        listed = ", ".join(f"{name} {v['val']:.1%} vs {v['train']:.1%}" for name, v in values.items())
        found.append(
            {
                "warning": "val_prevalence_shift",
                "split": "val",
                "classes": list(values),
                "prevalence": values,
                "message": f"class prevalence in the val split ({len(val.rows)} images) differs from train by "
                f"more than {PREVALENCE_FACTOR:g}x: {listed} (val vs train); checkpoints chosen on "
                "this split follow noise. Use a larger data.val_fraction or data.split=stratified",
            }
        )
    positives = ((val.targets > 0.5) & val.known).sum(0)
    few = np.flatnonzero((positives > 0) & (positives < FEW_POSITIVES))
    if few.size:
        counts = {classes[j]: int(positives[j]) for j in few}
        found.append(
            {
                "warning": "few_val_positives",
                "split": "val",
                "classes": list(counts),
                "positives": counts,
                "message": f"class(es) with fewer than {FEW_POSITIVES} known positives in the val split "
                f"({len(val.rows)} images): {counts}; their val AP/AUROC, and the checkpoint "
                "chosen on them, are noise",
            }
        )
    return found


def overlap_warnings(table: LabelTable, split: np.ndarray) -> list[dict[str, Any]]:
    """Under data.allow_patient_overlap: the patients the split puts in more than one split ("patient_overlap").

    Args:
        table: the LabelTable.
        split: (N,) split names.

    Returns:
        [] or one warning dict.
    """
    shared = shared_patients(table, split)
    if not len(shared):
        return []
    return [
        {
            "warning": "patient_overlap",
            "split": "all",
            "classes": [],
            "patients": len(shared),
            "message": f"data.allow_patient_overlap=true: {patient_overlap_message(table, split, shared)}",
        }
    ]


# ------------------------------------------------------------------------------------ datasets
def make_dataset(images: ImageSettings, table: LabelTable, labels: SplitLabels) -> CXRDataset:
    """CXRDataset of one split; images from the synthetic generator, the uint8 cache or the files.

    Args:
        images: the ImageSettings.
        table: the split's rows.
        labels: its SplitLabels (rows, targets, known, observed).

    Returns:
        The dataset; items as docs/architecture.md "Samples and batches".
    """
    paths = table.frame["path"].tolist()
    if images.synthetic is not None:
        source = synthetic.synthetic_source(images.synthetic, table, images.size)
    elif images.cache:
        source = CacheSource(images.cache, paths, images.size)
    else:
        source = FileSource(paths, images.size, images.intensity)
    return CXRDataset(
        source,
        labels.targets.astype(np.float32),
        labels.known.astype(bool),
        labels.observed,
        bad_images=images.bad_images,
        bad_image_budget=images.bad_image_budget,
    )


def build_data(
    table: LabelTable,
    split: np.ndarray,
    mode: str,
    images: ImageSettings,
    masking: Masking = Masking(),
    labels: LabelPolicy = LabelPolicy(),
) -> DataBundle:
    """Label, check and wrap the splits of a table (see the module docstring).

    Args:
        table: a reader's LabelTable whose image files exist (spml.data.table.check_images).
        split: (N,) "train" | "val" | "test" per row (spml.data.splits.assign_splits).
        mode: "spml" (train labels masked to observed positives) or "supervised".
        images: where the images come from (ImageSettings).
        masking: where the masked labels come from (Masking).
        labels: the uncertainty policy (LabelPolicy).

    Returns:
        The DataBundle (train, val, test datasets, classes, pos_counts, warnings, ...).
    """
    if mode not in MODES:
        raise DataError(f"mode={mode!r}; choose from {list(MODES)}")
    if masking.mask_val and mode == "supervised" and not masking.file:
        raise DataError(
            "data.mask_val=true in supervised mode needs data.masked_labels (a file masked with the val split)"
        )
    targets, known, empty = full_labels(table, labels)
    masked = masked_labels(mode, masking, table, split)
    rows, left_out = leave_out_bad_images(images, table, split_rows(split, masked))
    for name in SPLITS:
        if not len(rows[name]):
            raise DataError(
                f"the {name} split is empty ({len(table.frame)} images; see data.split, "
                "data.val_fraction, data.test_fraction)"
            )
    full = {name: SplitLabels(rows[name], targets[rows[name]], known[rows[name]]) for name in SPLITS}
    split_labels = training_labels(mode, full, masked)
    if mode == "spml":
        warn_rows_without_observed(split_labels["train"], masked)
    # EPR/ROLE's k: from clean val labels in SPML mode (hidden train labels never leak into training)
    expected_positives = mean_positives(full["val"] if mode == "spml" else split_labels["train"])
    subsets = {name: table.subset(rows[name]) for name in SPLITS}
    datasets = {name: make_dataset(images, subsets[name], split_labels[name]) for name in SPLITS}
    log.info(
        "data %s: %s images (train %d, val %d, test %d), %d classes",
        table.source,
        len(table.frame),
        *(len(rows[name]) for name in SPLITS),
        len(table.classes),
    )
    found = [
        *overlap_warnings(table, split),
        *label_warnings(table, split_labels, empty),
        *val_warnings(table.classes, full, split_labels["val"]),
    ]
    for item in found:  # a UserWarning each, printed once (not also logged, which would print it twice)
        warnings.warn(item["message"], stacklevel=2)
    return DataBundle(
        datasets["train"],
        datasets["val"],
        datasets["test"],
        table.classes,
        table,
        masked.manifest if masked is not None else None,
        positive_counts(split_labels["train"]),
        expected_positives,
        {name: subsets[name].frame for name in SPLITS},
        found,
        left_out,
    )
