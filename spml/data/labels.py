"""Label values: parsing 1/0/-1/blank columns, choosing classes, and the uncertainty policies."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from spml.data.table import DataError, row_error

POLICIES = ("ignore", "zeros", "ones", "mixed")
BLANKS = ("zero", "unknown")
ALLOWED_VALUES = "1, 0, -1 (also written 1.0, 0.0, -1.0) or blank"


def parse_label_values(frame: pd.DataFrame, columns: Sequence[str], file: str) -> np.ndarray:
    """String columns of 1/0/-1/blank -> float values 1, 0, -1, NaN; anything else is a DataError naming the row.

    Args:
        frame: the file's rows, as strings.
        columns: the label columns, in output order.
        file: the file (named in errors).

    Returns:
        (N, C) float64.
    """
    values = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        codes, texts = pd.factorize(frame[column])  # few distinct strings: parse each once
        parsed = pd.to_numeric(pd.Series(texts, dtype=object).str.strip(), errors="coerce").to_numpy(np.float64)
        allowed = np.isin(parsed, (1.0, 0.0, -1.0)) | (pd.Series(texts, dtype=object).str.strip() == "").to_numpy()
        if not allowed.all():
            bad = np.flatnonzero(~allowed[codes])
            raise row_error(
                file,
                int(bad[0]) + 1,
                column,
                f"unknown label value {frame[column].iloc[bad[0]]!r} ({bad.size} such rows); allowed: {ALLOWED_VALUES}",
            )
        values[:, j] = parsed[codes]
    return values


def select_classes(requested: Sequence[str], available: Sequence[str], default: Sequence[str]) -> tuple[str, ...]:
    """data.classes (empty = `default`) checked against the names the dataset provides.

    An unknown or repeated class is a DataError.

    Args:
        requested: data.classes.
        available: the names the dataset provides.
        default: the classes read when none are requested.

    Returns:
        The classes, in order.
    """
    classes = tuple(requested) or tuple(default)
    unknown = [name for name in classes if name not in available]
    if unknown:
        raise DataError(f"data.classes: unknown class(es) {unknown}; this dataset has {list(available)}")
    if len(set(classes)) != len(classes):
        raise DataError(f"data.classes lists a class twice: {list(classes)}")
    return classes


def apply_uncertainty(
    values: np.ndarray, classes: Sequence[str], policy: str, uncertain_ones: Sequence[str] = (), blank: str = "zero"
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) values in {1, 0, -1, NaN} -> targets float32 {0, 1} (N, C) and known bool (N, C).

    -1: ignore -> unknown, zeros -> 0, ones -> 1, mixed -> 1 for `uncertain_ones` else 0.
    NaN (not mentioned): blank=zero -> known 0, blank=unknown -> unknown. Unknown targets are 0.

    Args:
        values: the label values.
        classes: the class names.
        policy: ignore | zeros | ones | mixed (data.uncertainty).
        uncertain_ones: the classes whose -1 is 1 under mixed.
        blank: zero | unknown (data.blank).

    Returns:
        (targets, known).

    Shape:
        - values: (N, C).
        - targets, known: (N, C).
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


OTHER_DELIMITERS = ("|", ",", ";", "/", "+")  # tried for the hint when a cell seems to use another delimiter


def spelling_key(name: str) -> str:
    """A finding name with case, spaces, underscores and hyphens ignored: the key of the spelling hints.

    Args:
        name: a finding name.

    Returns:
        The key.
    """
    return re.sub(r"[\s_\-]+", "", name).casefold()


def other_delimiter(token: str, known: Sequence[str], delimiter: str) -> str | None:
    """The delimiter other than `delimiter` that splits `token` into known names (up to spelling_key), if any.

    Args:
        token: an unknown name.
        known: the known names.
        delimiter: the delimiter in use.

    Returns:
        The other delimiter, or None.
    """
    keys = {spelling_key(name) for name in known}
    for other in OTHER_DELIMITERS:
        parts = [part for part in token.split(other) if part.strip()]
        if other != delimiter and len(parts) > 1 and all(spelling_key(part) in keys for part in parts):
            return other
    return None


def spelling_hint(token: str, known: Sequence[str], delimiter: str) -> str:
    """A hint for an unknown finding name.

    ' (did you mean ...)' when unknown `token` matches a known name up to spelling_key, or a note when it joins
    known names with another delimiter; "" otherwise.

    Args:
        token: the unknown name.
        known: the known names.
        delimiter: the delimiter in use.

    Returns:
        The hint.
    """
    keys = {spelling_key(name): name for name in known}
    if spelling_key(token) in keys:
        return f" (did you mean {keys[spelling_key(token)]!r}? names must match exactly)"
    other = other_delimiter(token, known, delimiter)
    return f" (the cell seems to separate names with {other!r}; the delimiter here is {delimiter!r})" if other else ""


def check_spellings(tokens: pd.Series, no_finding: str, file: str, column: str, delimiter: str) -> None:
    """Refuse names found in a file without a class list that would become classes of their own by mistake.

    Two spellings of one name (up to spelling_key; the no-finding value included) or names joined by another
    delimiter are a DataError naming the rows.

    Args:
        tokens: one per name, index = 0-based row.
        no_finding: the no-finding value.
        file: the file (named in errors).
        column: the column (named in errors).
        delimiter: the delimiter in use.
    """
    first_row = tokens.index.to_series().groupby(tokens.to_numpy(), sort=False).min().sort_values()
    spelled: dict[str, str] = {spelling_key(no_finding): no_finding}
    for name, row in first_row.items():  # in order of first appearance
        other = spelled.setdefault(spelling_key(name), name)
        if other != name:
            where = f"data row {first_row[other] + 1}" if other in first_row else "the no-finding value"
            raise row_error(
                file,
                int(row) + 1,
                column,
                f"finding name {name!r} and {other!r} ({where}) differ only "
                "in case, spaces, underscores or hyphens; write one spelling per finding, or list the "
                "classes in data.classes",
            )
    for name, row in first_row.items():
        other = other_delimiter(name, [n for n in (no_finding, *first_row.index) if n != name], delimiter)
        if other:
            raise row_error(
                file,
                int(row) + 1,
                column,
                f"finding name {name!r} joins other names found with "
                f"{other!r}; the delimiter here is {delimiter!r} (data.csv.label_delimiter)",
            )


def parse_findings(
    findings: pd.Series,
    names: Sequence[str] | None,
    no_finding: str,
    file: str,
    column: str,
    delimiter: str = "|",
    vocabulary: Sequence[str] = (),
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Delimited finding names per row -> 0/1 values and class names, exact name matching.

    Spaces around the delimiter are ignored ("Effusion| Mass" is "Effusion|Mass"). `no_finding` alone means all
    zero (it may also be a class of its own). Empty cells or names, unknown names (with a hint when a name differs
    from a known one only in case, spaces or underscores, or joins known names with another delimiter) and
    `no_finding` combined with a finding are DataErrors naming the row.

    Args:
        findings: the cells, one per row.
        names: the classes to read; None = every name found (sorted, without `no_finding`; two spellings of one
            name are an error).
        no_finding: the value meaning "no finding".
        file: the file (named in errors).
        column: the column (named in errors).
        delimiter: the names' delimiter.
        vocabulary: the valid names (default: `names`), a superset when only some classes are kept.

    Returns:
        ((N, C) float64 0/1, class names).
    """
    empty = np.flatnonzero((findings == "").to_numpy())
    if empty.size:
        raise row_error(
            file,
            int(empty[0]) + 1,
            column,
            f"no finding names ({empty.size} such rows); write {no_finding!r} for an image without findings",
        )
    findings = findings.reset_index(drop=True)
    tokens = findings.str.split(delimiter, regex=False).explode().str.strip()  # index: 0-based row
    blank = np.flatnonzero((tokens == "").to_numpy())
    if blank.size:
        row = int(tokens.index[blank[0]])
        raise row_error(
            file,
            row + 1,
            column,
            f"empty finding name in {findings.iloc[row]!r} (a delimiter "
            f"{delimiter!r} at the start or end, or two in a row)",
        )
    if names is None:
        check_spellings(tokens, no_finding, file, column, delimiter)
    found = [name for name in pd.unique(tokens.to_numpy()) if name != no_finding]
    names = tuple(sorted(found)) if names is None else tuple(names)
    allowed = set(vocabulary or names) | {no_finding}
    unknown = ~tokens.isin(allowed).to_numpy()
    if unknown.any():
        token, row = tokens.iloc[int(np.argmax(unknown))], int(tokens.index[int(np.argmax(unknown))])
        raise row_error(
            file,
            row + 1,
            column,
            f"unknown finding name {token!r} in {findings.iloc[row]!r}"
            f"{spelling_hint(token, sorted(allowed), delimiter)}; known names: {sorted(allowed)}",
        )
    rows = tokens.index.to_numpy()
    is_finding = (tokens != no_finding).to_numpy()
    has_finding = np.bincount(rows[is_finding], minlength=len(findings)) > 0
    clash = has_finding & (np.bincount(rows[~is_finding], minlength=len(findings)) > 0)
    if clash.any():
        row = int(np.argmax(clash))
        raise row_error(file, row + 1, column, f"{no_finding!r} together with findings: {findings.iloc[row]!r}")
    values = np.zeros((len(findings), len(names)), dtype=np.float64)
    column_of = pd.Index(names).get_indexer(tokens.to_numpy())
    kept = column_of >= 0  # names of the vocabulary outside the kept classes are dropped
    values[rows[kept], column_of[kept]] = 1.0
    return values, names
