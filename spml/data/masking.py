"""Label masking (full labels -> single positive or partial labels), masked CSV files and their manifest.

Protocol (REFERENCE.md section 2): rows sorted by their key (the image path relative to the dataset root;
"#<row>" for in-memory images), one `numpy.random.RandomState(seed)` drives the scheme over that order,
so the same table + scheme + seed give byte-identical files. Only certain positives (value 1) can be
observed positives; uncertain (-1) entries are never observed. Rows with no observed entry are dropped
(`no_positive="drop"`, the default) or kept with every entry unobserved (`"keep"`).

Schemes (MASKING registry): `single_positive` (uniform among a row's certain positives, REFERENCE.md),
the biased single positives `frequent_first`, `rare_first` (by class frequency among the masked rows) and
`priority` (a fixed mention order, `order=[...]`), and the partial-label schemes `keep_k`, `keep_fraction`.

A masked CSV has `path` (the row key) + one column per class: 1 observed positive, 0 observed negative,
blank unobserved; `<file>.manifest.json` beside it records source, hashes, scheme and counts.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from typing import Any

import numpy as np
import pandas as pd

from spml.data.labels import parse_label_values
from spml.data.table import DataError, LabelTable, file_sha256, read_csv, row_error
from spml.registry import Registry
from spml.utils.io import write_bytes_atomic

MASKING = Registry("masking scheme")
NO_POSITIVE = ("drop", "keep")


@MASKING.register("single_positive")
def single_positive(values: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """One observed positive per row, uniform among the row's certain positives, NaN elsewhere.

    One uniform draw per row, in row order, whether or not the row has a positive.

    Args:
        values: (N, C) label values (1 certain positive; -1, 0, NaN never observed).
        rng: the masking's generator.

    Returns:
        (N, C) 1 at the chosen entry, NaN elsewhere (rows without a certain positive: all NaN).
    """
    certain = values == 1
    pick = np.floor(rng.random_sample(len(values)) * certain.sum(1)).astype(np.int64)
    chosen = certain & (np.cumsum(certain, 1) - 1 == pick[:, None])
    return np.where(chosen, 1.0, np.nan)


def first_by_rank(values: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """One observed positive per row: the row's certain positive whose class has the smallest `rank`.

    Args:
        values: (N, C) label values (1 certain positive; -1, 0, NaN never observed).
        rank: (C,) distinct numbers, smaller = mentioned first.

    Returns:
        (N, C) 1 at the chosen entry, NaN elsewhere (rows without a certain positive: all NaN).
    """
    keys = np.where(values == 1, rank[None, :], np.inf)
    chosen = np.zeros(values.shape, bool)
    rows = np.flatnonzero(np.isfinite(keys).any(1))
    chosen[rows, np.argmin(keys[rows], 1)] = True
    return np.where(chosen, 1.0, np.nan)


def frequency_rank(values: np.ndarray, descending: bool) -> np.ndarray:
    """Rank of each class by its number of certain positives in `values` (ties: class order).

    Args:
        values: (N, C) label values.
        descending: the most frequent class first.

    Returns:
        (C,) ranks, 0 first.
    """
    counts = (values == 1).sum(0)
    order = np.lexsort((np.arange(len(counts)), -counts if descending else counts))
    rank = np.empty(len(counts))
    rank[order] = np.arange(len(counts))
    return rank


@MASKING.register("frequent_first")
def frequent_first(values: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Biased single positive: the row's finding that is most common among the masked rows is observed.

    A report mentions the usual finding first. Deterministic; `rng` is not used.

    Args:
        values: (N, C) label values (1 certain positive; -1, 0, NaN never observed).
        rng: unused.

    Returns:
        (N, C) 1 at the chosen entry, NaN elsewhere (rows without a certain positive: all NaN).
    """
    return first_by_rank(values, frequency_rank(values, descending=True))


@MASKING.register("rare_first")
def rare_first(values: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Biased single positive: the row's rarest finding (counted among the masked rows) is observed.

    Deterministic; `rng` is not used.

    Args:
        values: (N, C) label values (1 certain positive; -1, 0, NaN never observed).
        rng: unused.

    Returns:
        (N, C) 1 at the chosen entry, NaN elsewhere (rows without a certain positive: all NaN).
    """
    return first_by_rank(values, frequency_rank(values, descending=False))


@MASKING.register("priority")
def priority(
    values: np.ndarray,
    rng: np.random.RandomState,
    classes: tuple[str, ...] = (),
    order: tuple[str, ...] | list[str] = (),
) -> np.ndarray:
    """Biased single positive by a fixed mention order (e.g. the order a radiologist reports findings).

    The row's certain positive listed first in `order` is observed. Classes left out of `order` come after every
    listed one, uniformly at random among themselves (one draw per class from `rng`).

    Args:
        values: (N, C) label values (1 certain positive; -1, 0, NaN never observed).
        rng: the masking's generator.
        classes: the table's classes.
        order: distinct class names, first mentioned first (data.mask_params.order; a DataError otherwise).

    Returns:
        (N, C) 1 at the chosen entry, NaN elsewhere (rows without a certain positive: all NaN).
    """
    order = list(order)
    unknown = [name for name in order if name not in classes]
    if not order or unknown or len(set(order)) != len(order):
        raise DataError(
            f"masking scheme priority: order={order!r} must list distinct class names from "
            f"{list(classes)} (data.mask_params.order)"
        )
    rank = len(classes) + rng.random_sample(len(classes))  # unlisted classes: after the listed ones, random
    rank[[classes.index(name) for name in order]] = np.arange(len(order))
    return first_by_rank(values, rank)


@MASKING.register("keep_k")
def keep_k(values: np.ndarray, rng: np.random.RandomState, k: int = 2) -> np.ndarray:
    """Keep k certain positives per row (all of them when fewer), chosen uniformly; the rest unobserved.

    Args:
        values: (N, C) label values (1 certain positive; -1, 0, NaN never observed).
        rng: the masking's generator.
        k: positives kept per row (a positive integer).

    Returns:
        (N, C) 1 at the kept entries, NaN elsewhere.
    """
    if int(k) != k or k < 1:
        raise DataError(f"masking scheme keep_k: k={k!r} must be a positive integer")
    certain = values == 1
    keys = np.where(certain, rng.random_sample(values.shape), np.inf)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    return np.where(certain & (rank < k), 1.0, np.nan)


@MASKING.register("keep_fraction")
def keep_fraction(values: np.ndarray, rng: np.random.RandomState, fraction: float = 0.1) -> np.ndarray:
    """Keep round(fraction * #known) of all known entries (1 and 0; -1/blank never), uniformly over the whole table.

    Kept entries keep their value, the rest are unobserved.

    Args:
        values: (N, C) label values.
        rng: the masking's generator.
        fraction: the share kept, in (0, 1].

    Returns:
        (N, C) 1/0 at the kept entries, NaN elsewhere.
    """
    if not 0 < fraction <= 1:
        raise DataError(f"masking scheme keep_fraction: fraction={fraction!r} must be in (0, 1]")
    known = np.flatnonzero((values == 1) | (values == 0))
    kept = rng.permutation(known)[: round(fraction * len(known))]
    observed = np.full(values.shape, np.nan)
    observed.flat[kept] = values.flat[kept]
    return observed


def row_keys(paths: np.ndarray, root: str) -> np.ndarray:
    """Row identity in masked files: the path relative to `root` (unchanged when not under it).

    "#<position>" (zero-padded) for in-memory rows with path "".

    Args:
        paths: (N,) the table's paths.
        root: the dataset root.

    Returns:
        (N,) keys, object array.
    """
    paths = np.asarray(paths, dtype=object)
    prefix = root.rstrip(os.sep) + os.sep if root else None
    width = len(str(len(paths)))
    return np.array(
        [
            f"#{i:0{width}d}" if not p else p[len(prefix) :] if prefix and p.startswith(prefix) else p
            for i, p in enumerate(paths)
        ],
        dtype=object,
    )


def mask_table(
    table: LabelTable,
    scheme: str = "single_positive",
    seed: int = 1200,
    no_positive: str = "drop",
    root: str = "",
    keys: np.ndarray | None = None,
    **params: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Mask a label table.

    `masked_sha256` is filled in by write_masked.

    Args:
        table: the LabelTable.
        scheme: a MASKING name.
        seed: the RandomState seed.
        no_positive: "drop" | "keep" rows without an observed entry.
        root: the dataset root the keys are relative to.
        keys: the rows' keys when `table` is part of a larger table (default: row_keys of its own rows).
        **params: the scheme's own parameters (data.mask_params).

    Returns:
        (masked frame: `path` key + class columns with 1/0/NaN, in key order; manifest dict).
    """
    if no_positive not in NO_POSITIVE:
        raise DataError(f"no_positive={no_positive!r}; choose from {list(NO_POSITIVE)}")
    keys = row_keys(table.frame["path"].to_numpy(), root) if keys is None else np.asarray(keys, dtype=object)
    order = np.argsort(keys, kind="stable")
    values = table.values()[order]
    accepts_classes = "classes" in inspect.signature(MASKING.get(scheme)).parameters
    context = {"classes": tuple(table.classes)} if accepts_classes else {}
    observed = MASKING.build(scheme, values=values, rng=np.random.RandomState(seed), **context, **params)
    kept = np.ones(len(values), bool) if no_positive == "keep" else ~np.isnan(observed).all(1)
    observed_pos = (observed[kept] == 1).sum(0)
    hidden_pos = ((values[kept] == 1) & (observed[kept] != 1)).sum(0)
    frame = pd.DataFrame(observed[kept], columns=list(table.classes))
    frame.insert(0, "path", keys[order][kept])
    manifest = {
        "source": table.source,
        "source_hash": table.source_hash,
        "masked_sha256": None,
        "classes": list(table.classes),
        "scheme": scheme,
        "scheme_params": dict(params),
        "seed": int(seed),
        "no_positive": no_positive,
        "root": root,
        "row_order": "sorted by path relative to root",
        "rows_in": len(values),
        "rows_kept": int(kept.sum()),
        "rows_dropped": int((~kept).sum()),
        "hidden_positives": dict(zip(table.classes, hidden_pos.tolist())),
        "observed_positives": dict(zip(table.classes, observed_pos.tolist())),
    }
    return frame, manifest


COUNTS = ("rows_in", "rows_kept", "rows_dropped")
PER_CLASS = ("hidden_positives", "observed_positives")


def mask_splits(
    table: LabelTable,
    split: np.ndarray,
    names: tuple[str, ...],
    scheme: str = "single_positive",
    seed: int = 1200,
    no_positive: str = "drop",
    root: str = "",
    **params: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Mask only the rows of the splits `names`, each split on its own with RandomState(seed).

    So a split's masked labels do not depend on which other splits are masked (the train split alone gives what
    mask_table gives for the train rows). Rows of other splits are not in the result.

    Args:
        table: the LabelTable.
        split: (N,) split name per row of `table`.
        names: the splits to mask.
        scheme: a MASKING name.
        seed: the RandomState seed.
        no_positive: "drop" | "keep".
        root: the dataset root the keys are relative to.
        **params: the scheme's own parameters.

    Returns:
        (masked frame with the keys of the whole table, in key order; manifest with the summed counts and
        `splits`: {name: that split's counts}).
    """
    keys = row_keys(table.frame["path"].to_numpy(), root)
    frames, per_split, manifest = [], {}, {}
    for name in names:
        rows = np.flatnonzero(np.asarray(split) == name)
        frame, manifest = mask_table(table.subset(rows), scheme, seed, no_positive, root, keys[rows], **params)
        frames.append(frame)
        per_split[name] = {key: manifest[key] for key in (*COUNTS, *PER_CLASS)}
    frame = pd.concat(frames, ignore_index=True).sort_values("path", kind="stable", ignore_index=True)
    manifest.update({key: sum(part[key] for part in per_split.values()) for key in COUNTS})
    manifest.update(
        {key: {c: sum(part[key][c] for part in per_split.values()) for c in table.classes} for key in PER_CLASS}
    )
    manifest["splits"] = per_split
    return frame, manifest


def manifest_path(path: str | os.PathLike) -> str:
    """The manifest file beside masked CSV `path`: `<path>.manifest.json`.

    Args:
        path: the masked CSV.

    Returns:
        The manifest's path.
    """
    return f"{os.fspath(path)}.manifest.json"


def masked_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The bytes of a masked CSV: `path` + classes as 1 / 0 / blank, "\\n" line ends.

    Args:
        frame: the masked frame (path + 1/0/NaN class columns).

    Returns:
        UTF-8 CSV bytes.
    """
    values = frame.drop(columns="path").to_numpy(dtype=np.float64)
    text = pd.DataFrame(np.where(np.isnan(values), "", np.where(values == 1, "1", "0")), columns=frame.columns[1:])
    text.insert(0, "path", frame["path"].to_numpy())
    return text.to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_masked(frame: pd.DataFrame, manifest: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Write the masked CSV (1/0/blank) and its manifest atomically.

    Args:
        frame: the masked frame.
        manifest: its manifest.
        path: the masked CSV.

    Returns:
        The manifest with masked_sha256.
    """
    path = os.fspath(path)
    data = masked_csv_bytes(frame)
    manifest = {**manifest, "masked_sha256": hashlib.sha256(data).hexdigest()}
    write_bytes_atomic(path, data)
    write_bytes_atomic(manifest_path(path), (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest beside masked CSV `path` (a DataError when missing or not JSON).

    Args:
        path: the masked CSV.

    Returns:
        The manifest.
    """
    try:
        with open(manifest_path(path), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(
            f"masked label file {os.fspath(path)} has no manifest {manifest_path(path)}; "
            "make masked files with tools/mask_labels.py"
        ) from None
    except json.JSONDecodeError as err:
        raise DataError(f"{manifest_path(path)}: not valid JSON: {err}") from None


def read_masked(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Masked CSV -> (frame of `path` + 1/0/NaN class columns, manifest); refuses edited files.

    Args:
        path: the masked CSV.

    Returns:
        (frame, manifest).
    """
    path = os.fspath(path)
    manifest = read_manifest(path)
    if not os.path.isfile(path):
        raise DataError(f"masked label file {path} does not exist (data.masked_labels)")
    if file_sha256(path) != manifest.get("masked_sha256"):
        raise DataError(
            f"{path}: its bytes do not match masked_sha256 in {manifest_path(path)}: the file was "
            "edited after masking; re-create it with tools/mask_labels.py"
        )
    frame, _ = read_csv(path, ["path", *manifest["classes"]])
    values = parse_label_values(frame, manifest["classes"], path)
    uncertain = np.argwhere(values == -1)
    if len(uncertain):
        row, col = uncertain[0]
        raise row_error(path, int(row) + 1, manifest["classes"][col], "-1 is not a masked label value (1, 0, blank)")
    out = pd.DataFrame(values, columns=manifest["classes"])
    out.insert(0, "path", frame["path"].to_numpy())
    return out, manifest


def align_masked(frame: pd.DataFrame, table: LabelTable, root: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Masked frame (path key + classes) -> values in `table` row order and which rows are present.

    Args:
        frame: the masked frame.
        table: the LabelTable.
        root: the dataset root the keys are relative to.

    Returns:
        ((N, C) 1/0/NaN in `table` row order, (N,) bool row present).
    """
    keys = pd.Index(frame["path"])
    if keys.has_duplicates:
        raise DataError(f"masked labels: duplicate path {keys[keys.duplicated()][0]!r}")
    position = keys.get_indexer(row_keys(table.frame["path"].to_numpy(), root))
    present = position >= 0
    values = np.full((len(table.frame), len(table.classes)), np.nan)
    values[present] = frame.loc[:, list(table.classes)].to_numpy(dtype=np.float64)[position[present]]
    return values, present


def load_masked(path: str | os.PathLike, table: LabelTable, root: str = "") -> np.ndarray:
    """Masked labels aligned with `table` rows (keys relative to `root`, as when masking).

    Rows absent from the file are all NaN. The manifest must match the table's source_hash and classes, and the CSV
    its masked_sha256.

    Args:
        path: the masked CSV.
        table: the LabelTable.
        root: the dataset root.

    Returns:
        (N, C) float 1/0/NaN.
    """
    return load_masked_rows(path, table, root)[0]


def load_masked_rows(path: str | os.PathLike, table: LabelTable, root: str = "") -> tuple[np.ndarray, np.ndarray]:
    """load_masked plus (N,) bool: the row is in the masked file.

    Args:
        path: the masked CSV.
        table: the LabelTable.
        root: the dataset root.

    Returns:
        ((N, C) float 1/0/NaN, (N,) bool).
    """
    path = os.fspath(path)
    manifest = read_manifest(path)
    if manifest.get("source_hash") != table.source_hash:
        raise DataError(
            f"{path} was masked from {manifest.get('source')} (sha256 {manifest.get('source_hash')}) "
            f"but the data's label file {table.source} has sha256 {table.source_hash}; "
            "re-run tools/mask_labels.py on this label file"
        )
    if tuple(manifest.get("classes", ())) != tuple(table.classes):
        raise DataError(
            f"{path} has classes {manifest.get('classes')} but the data has {list(table.classes)} (data.classes)"
        )
    frame, _ = read_masked(path)
    values, present = align_masked(frame, table, root)
    if not present.any():
        raise DataError(
            f"no row of {path} matches an image of {table.source}; paths in the file are relative "
            f"to the root {manifest.get('root')!r}, this run's root is {root!r} (data.root)"
        )
    return values, present


def masking_summary(manifest: dict[str, Any]) -> str:
    """Human-readable counts of a masking manifest (rows, hidden positives per class).

    Args:
        manifest: the manifest.

    Returns:
        The text.
    """
    hidden, observed = manifest["hidden_positives"], manifest["observed_positives"]
    total_hidden, total_observed = sum(hidden.values()), sum(observed.values())
    share = 100 * total_hidden / max(total_hidden + total_observed, 1)
    lines = [
        f"scheme {manifest['scheme']} {manifest['scheme_params']} seed {manifest['seed']}, rows without an "
        f"observed label: {manifest['no_positive']}",
        f"rows in {manifest['rows_in']}, kept {manifest['rows_kept']}, dropped {manifest['rows_dropped']}",
        f"positives observed {total_observed}, hidden {total_hidden} "
        f"({share:.1f}% of the kept rows' certain positives)",
        f"{'class':<28}{'observed':>10}{'hidden':>10}",
        *(f"{name:<28}{observed[name]:>10}{hidden[name]:>10}" for name in manifest["classes"]),
    ]
    return "\n".join(lines)
