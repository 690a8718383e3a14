"""Label values: parsing 1/0/-1/blank columns, choosing classes, and the uncertainty policies."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from spml.data.table import DataError, row_error

POLICIES = ("ignore", "zeros", "ones", "mixed")
BLANKS = ("zero", "unknown")
ALLOWED_VALUES = "1, 0, -1 (also written 1.0, 0.0, -1.0) or blank"


def parse_label_values(frame: pd.DataFrame, columns: Sequence[str], file: str) -> np.ndarray:
    """String columns of 1/0/-1/blank -> (N, C) float64 with 1, 0, -1, NaN; anything else is a DataError."""
    values = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        codes, texts = pd.factorize(frame[column])  # few distinct strings: parse each once
        parsed = pd.to_numeric(pd.Series(texts, dtype=object).str.strip(), errors="coerce").to_numpy(np.float64)
        allowed = np.isin(parsed, (1.0, 0.0, -1.0)) | (pd.Series(texts, dtype=object).str.strip() == "").to_numpy()
        if not allowed.all():
            bad = np.flatnonzero(~allowed[codes])
            raise row_error(file, int(bad[0]) + 1, column, f"unknown label value {frame[column].iloc[bad[0]]!r} "
                            f"({bad.size} such rows); allowed: {ALLOWED_VALUES}")
        values[:, j] = parsed[codes]
    return values


def select_classes(requested: Sequence[str], available: Sequence[str], default: Sequence[str]) -> tuple[str, ...]:
    """data.classes (empty = `default`) checked against the names the dataset provides."""
    classes = tuple(requested) or tuple(default)
    unknown = [name for name in classes if name not in available]
    if unknown:
        raise DataError(f"data.classes: unknown class(es) {unknown}; this dataset has {list(available)}")
    if len(set(classes)) != len(classes):
        raise DataError(f"data.classes lists a class twice: {list(classes)}")
    return classes


def apply_uncertainty(values: np.ndarray, classes: Sequence[str], policy: str,
                      uncertain_ones: Sequence[str] = (), blank: str = "zero") -> tuple[np.ndarray, np.ndarray]:
    """(N, C) values in {1, 0, -1, NaN} -> targets float32 {0, 1} (N, C) and known bool (N, C).

    -1: ignore -> unknown, zeros -> 0, ones -> 1, mixed -> 1 for `uncertain_ones` else 0.
    NaN (not mentioned): blank=zero -> known 0, blank=unknown -> unknown. Unknown targets are 0.
    """
    if policy not in POLICIES:
        raise DataError(f"data.uncertainty={policy!r}; choose from {list(POLICIES)}")
    if blank not in BLANKS:
        raise DataError(f"data.blank={blank!r}; choose from {list(BLANKS)}")
    values = np.asarray(values, dtype=np.float64)
    uncertain, blank_entry = values == -1, np.isnan(values)
    if policy == "mixed":
        unknown = [name for name in uncertain_ones if name not in classes]
        if unknown:
            raise DataError(f"data.uncertain_ones: {unknown} are not among the classes {list(classes)}")
        uncertain_value = np.isin(np.asarray(classes), list(uncertain_ones))[None, :]
    else:
        uncertain_value = policy == "ones"
    targets = np.where(uncertain, uncertain_value, values == 1)
    known = ~((uncertain & (policy == "ignore")) | (blank_entry & (blank == "unknown")))
    return (targets & known).astype(np.float32), known


def parse_findings(findings: pd.Series, names: Sequence[str] | None, no_finding: str, file: str, column: str,
                   delimiter: str = "|", vocabulary: Sequence[str] = ()) -> tuple[np.ndarray, tuple[str, ...]]:
    """Delimited finding names per row -> ((N, C) float64 0/1, class names), exact name matching.

    `names` None = every name found (sorted, without `no_finding`); `vocabulary` = the valid names
    (default: `names`), a superset when only some classes are kept. `no_finding` alone means all zero
    (it may also be a class of its own). Empty cells, unknown names and `no_finding` combined with a
    finding are DataErrors naming the row.
    """
    empty = np.flatnonzero((findings == "").to_numpy())
    if empty.size:
        raise row_error(file, int(empty[0]) + 1, column, f"no finding names ({empty.size} such rows); "
                        f"write {no_finding!r} for an image without findings")
    dummies = findings.str.get_dummies(sep=delimiter)
    found = [name for name in dummies.columns if name != no_finding]
    names = tuple(sorted(found)) if names is None else tuple(names)
    allowed = set(vocabulary or names) | {no_finding}
    for name in dummies.columns:
        if name not in allowed:
            row = int(np.flatnonzero(dummies[name].to_numpy())[0])
            raise row_error(file, row + 1, column, f"unknown finding name {name!r} in {findings.iloc[row]!r}; "
                            f"known names: {sorted(allowed)}")
    if no_finding in dummies.columns and found:
        clash = dummies[no_finding].to_numpy().astype(bool) & (dummies[found].to_numpy().sum(1) > 0)
        if clash.any():
            row = int(np.flatnonzero(clash)[0])
            raise row_error(file, row + 1, column, f"{no_finding!r} together with findings: {findings.iloc[row]!r}")
    values = dummies.reindex(columns=list(names), fill_value=0).to_numpy(dtype=np.float64)
    return values, names
