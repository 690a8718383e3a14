"""The LabelTable every reader returns, strict CSV reading, and the image-existence check.

Errors about input files are `DataError`s naming the file, the row (1-based data row; its line number
is one more, for the header, unless a quoted field spans lines) and the column.
"""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import io
import logging
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

META_COLUMNS = ("path", "patient_id", "study_id", "view", "sex", "age")
# Optional column between the meta columns and the classes: the dataset's own split
# ("train" | "val" | "test"), present only when the reader knows one (NIH lists, MIMIC split csv,
# CheXpert train.csv + valid.csv); spml.data.splits uses it for data.split=official.
OFFICIAL_SPLIT = "official_split"


class DataError(ValueError):
    """Bad input data; the message names the file, row and column (or the config key)."""


@dataclass
class LabelTable:
    """One row per image: META_COLUMNS, optionally OFFICIAL_SPLIT, then one float column per class.

    Values are 1 positive, 0 negative, -1 uncertain, NaN not mentioned. Paths are absolute ("" = in memory).

    Attributes:
        frame: the rows.
        classes: the class columns, in order.
        source: label file the table came from.
        source_hash: sha256 of that file's bytes.
    """

    frame: pd.DataFrame
    classes: tuple[str, ...]
    source: str  # label file the table came from
    source_hash: str  # sha256 of that file's bytes

    def values(self) -> np.ndarray:
        """(N, C) float64 label values in class order."""
        return self.frame.loc[:, list(self.classes)].to_numpy(dtype=np.float64)

    def subset(self, rows: np.ndarray) -> LabelTable:
        """Rows selected by a boolean mask or positions, index reset.

        Args:
            rows: (N,) bool mask or row positions.

        Returns:
            The LabelTable of those rows.
        """
        rows = np.asarray(rows)
        frame = self.frame[rows] if rows.dtype == bool else self.frame.iloc[rows]
        return LabelTable(frame.reset_index(drop=True), self.classes, self.source, self.source_hash)


def make_table(
    meta: dict[str, Iterable],
    values: np.ndarray,
    classes: Sequence[str],
    source: str,
    source_hash: str,
    official_split: Iterable[str] | None = None,
) -> LabelTable:
    """Assemble a LabelTable; `meta` holds META_COLUMNS (missing ones get "" / NaN).

    Args:
        meta: {META_COLUMNS name: (N,) values}.
        values: (N, C) label values.
        classes: the class names, in column order.
        source: the label file.
        source_hash: sha256 of its bytes.
        official_split: (N,) the dataset's own split names (None: no OFFICIAL_SPLIT column).

    Returns:
        The LabelTable.
    """
    n = len(values)
    columns: dict[str, object] = {}
    for name in META_COLUMNS:
        default = np.full(n, np.nan) if name == "age" else np.full(n, "", dtype=object)
        column = meta.get(name, default)
        columns[name] = np.asarray(column, dtype=np.float64) if name == "age" else np.asarray(column, dtype=object)
    if official_split is not None:
        columns[OFFICIAL_SPLIT] = np.asarray(official_split, dtype=object)
    values = np.asarray(values, dtype=np.float64).reshape(n, len(classes))
    for j, name in enumerate(classes):
        columns[name] = values[:, j]
    frame = pd.DataFrame(columns)
    for name in META_COLUMNS[:-1]:
        frame[name] = frame[name].astype(str)
    return LabelTable(frame, tuple(classes), source, source_hash)


# ----------------------------------------------------------------------------------------- files
def row_error(file: str, row: int, column: str, message: str) -> DataError:
    """DataError for 1-based data row `row` of `file` (line row + 1 counting the header).

    Args:
        file: the file.
        row: the 1-based data row.
        column: the column.
        message: what is wrong.

    Returns:
        The DataError (to raise).
    """
    return DataError(f"{file}: data row {row} (line {row + 1}), column {column!r}: {message}")


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def read_text(path: str) -> tuple[str, str]:
    """A label file's text, whatever line ends it used; .gz is decompressed.

    A missing or unreadable file and non-UTF-8 bytes are DataErrors.

    Args:
        path: the file.

    Returns:
        (UTF-8 text with "\\n" line ends, sha256 of the file's bytes).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise DataError(f"label file {path} does not exist") from None
    except OSError as err:
        raise DataError(f"cannot read label file {path}: {err.strerror}") from None
    data = gzip.decompress(raw) if path.endswith(".gz") else raw
    try:
        text = data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")  # CR-only files: lines too
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text: byte 0x{data[err.start]:02x} at byte offset {err.start} "
            f"(line {line}); save the file as UTF-8"
        ) from None
    return text, hashlib.sha256(raw).hexdigest()


def read_csv(path: str, required: Sequence[str] = ()) -> tuple[pd.DataFrame, str]:
    """Read a comma-separated file as strings (no NA guessing).

    Raises DataError for an empty file, a header without data rows, a ';' or tab separated file, malformed rows, a
    column name given twice and missing `required` columns.

    Args:
        path: the file (.gz decompressed).
        required: columns the file must have.

    Returns:
        (frame, sha256 of the file bytes).
    """
    text, digest = read_text(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: malformed CSV: {str(err).strip()}") from None
    if len(frame.columns) == 1:
        header = str(frame.columns[0])
        for sep, name in ((";", "semicolon"), ("\t", "tab")):
            if sep in header:
                raise DataError(
                    f"{path}: the header is one column containing {name}s ({header[:60]!r}...): "
                    f"the file looks {name}-separated; spml reads comma-separated files"
                )
    check_header(text, path)
    if frame.empty:
        raise DataError(f"{path}: the header has no data rows below it")
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the header has {list(frame.columns)}")
    return frame, digest


def check_header(text: str, path: str) -> None:
    """Refuse a header naming a column twice and rows cut short.

    A column name given twice in the header (spaces around names ignored) is a DataError naming it and both
    positions: pandas would read the second as "<name>.1", which spml would never look at. A row with fewer
    fields than the header (a row cut short, a partial copy that ends inside its last row) is a DataError naming
    its line: pandas would read the missing fields as blank, which a label file means as "not mentioned".

    Args:
        text: the file's text.
        path: the file (named in errors).
    """
    rows = csv.reader(io.StringIO(text))
    header = next((row for row in rows if row), [])
    for row in rows:
        if row and len(row) < len(header):
            raise DataError(
                f"{path}: line {rows.line_num} has {len(row)} of the header's {len(header)} fields "
                f"(it ends after {row[-1]!r}; the missing {header[len(row)]!r}... would read as blank): "
                "the row was cut short; restore the file from its source"
            )
    seen: dict[str, int] = {}
    for position, name in enumerate(header, 1):
        name = name.strip()
        if name in seen:
            raise DataError(
                f"{path}: column {name!r} appears twice in the header (columns {seen[name]} and "
                f"{position}); rename or remove one"
            )
        if name:  # several unnamed columns (trailing commas) are harmless: no reader looks them up
            seen[name] = position


def first_existing(candidates: Sequence[str], what: str, key: str) -> str:
    """The first existing file among `candidates`, else a DataError listing them and the config key.

    Args:
        candidates: the paths to try, in order.
        what: what the file is (named in the error).
        key: the config key that sets it (named in the error).

    Returns:
        The path.
    """
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise DataError(f"no {what} found; looked for {list(candidates)} (set {key})")


def dataset_root(root: str, labels: str = "") -> str:
    """Absolute dataset root: data.root, else the folder of data.labels ("" when neither is set).

    Args:
        root: data.root.
        labels: data.labels.

    Returns:
        The folder.
    """
    if root:
        return os.path.abspath(root)
    return os.path.dirname(os.path.abspath(labels)) if labels else ""


MISSING_VALUES = ("", "nan", "NaN", "NA", "N/A", "None", "null", "NULL")  # how tools write a missing path


def check_empty_paths(paths: pd.Series, file: str, column: str) -> None:
    """Empty or missing-value paths are errors (rows are 1-based data rows of `file`).

    Args:
        paths: the paths as written.
        file: the label file (named in errors).
        column: its column (named in errors).
    """
    empty = np.flatnonzero(paths.str.strip().isin(MISSING_VALUES).to_numpy())
    if empty.size:
        raise row_error(
            file, int(empty[0]) + 1, column, f"empty image path {paths.iloc[empty[0]]!r} ({empty.size} such rows)"
        )


def check_duplicates(keys: Sequence[str], written: pd.Series, file: str, column: str) -> None:
    """Rows with one key (the image file they name) are an error naming the rows and their paths as written.

    Args:
        keys: (N,) the image file each row names.
        written: (N,) the paths as written.
        file: the label file (named in errors).
        column: its column (named in errors).
    """
    keys = pd.Series(np.asarray(keys, dtype=object))
    repeated = keys.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return
    key = keys[repeated].iloc[0]
    same = np.flatnonzero((keys == key).to_numpy())
    spellings = written.iloc[same].tolist()
    rows = (same + 1).tolist()
    if len(set(spellings)) == 1:
        where = f"{spellings[0]!r} at data rows {rows}"
    else:
        where = f"data rows {rows} ({', '.join(map(repr, spellings))}) are one image file {key}"
    raise DataError(
        f"{file}: column {column!r}: duplicate image rows: {where} ({int(repeated.sum())} rows are duplicates)"
    )


def check_paths(paths: pd.Series, file: str, column: str) -> None:
    """Empty or missing-value paths and rows repeating a value (as written) are errors.

    Args:
        paths: the paths as written.
        file: the label file (named in errors).
        column: its column (named in errors).
    """
    check_empty_paths(paths, file, column)
    check_duplicates(paths.to_numpy(), paths, file, column)


def resolve_link(path: str) -> str:
    """os.path.realpath of `path`.

    A symlink loop raises OSError(ELOOP), a dangling link resolves as far as it goes (the image check then reports
    the file missing).

    Args:
        path: a path.

    Returns:
        The resolved path.
    """
    try:
        return os.path.realpath(path, strict=True)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise
        return os.path.realpath(path)


def real_paths(paths: np.ndarray, loop_error: Callable[[int, str], DataError]) -> np.ndarray:
    """The file each absolute, normalised path names, symlinks resolved.

    One lstat per distinct folder and one scandir per folder (for symlinked files) instead of a realpath per row.

    Args:
        paths: (N,) absolute, normalised paths.
        loop_error: loop_error(row, path) builds the error for a symlink loop met at 0-based row `row`.

    Returns:
        (N,) resolved paths.
    """
    parts = [path.rpartition(os.sep) for path in paths]  # (folder, sep, name); paths are absolute, normalised
    folder_of, folders = pd.factorize(pd.Series([folder or os.sep for folder, _, _ in parts], dtype=object))
    names = [name for _, _, name in parts]
    resolved_folders: dict[str, tuple[str, bool]] = {os.sep: (os.sep, True)}  # folder -> (resolved, exists)

    def child(folder: str, name: str) -> str:  # os.path.join for an absolute folder, without its checks
        return f"{folder.rstrip(os.sep)}{os.sep}{name}"

    def resolve_folder(folder: str) -> tuple[str, bool]:
        if folder not in resolved_folders:
            parent, _, name = folder.rpartition(os.sep)
            real_parent, exists = resolve_folder(parent or os.sep)
            path = child(real_parent, name)
            if exists:  # below a missing folder nothing exists: no system call
                try:
                    mode = os.lstat(path).st_mode
                except OSError:
                    exists = False
                else:
                    path = resolve_link(path) if stat.S_ISLNK(mode) else path
            resolved_folders[folder] = path, exists
        return resolved_folders[folder]

    real = np.empty(len(folders), dtype=object)
    linked: dict[int, set[str]] = {}  # folder code -> names of its symlinked entries
    for code, folder in enumerate(folders):
        try:
            real[code], exists = resolve_folder(folder)
        except OSError:
            raise loop_error(int(np.argmax(folder_of == code)), folder) from None
        if exists:
            try:
                with os.scandir(real[code]) as entries:
                    links = {entry.name for entry in entries if entry.is_symlink()}
            except OSError:  # not a folder, or not readable: check_images reports its files
                links = set()
            if links:
                linked[code] = links
    out = np.array([child(folder, name) for folder, name in zip(real[folder_of], names)], dtype=object)
    for code, links in linked.items():
        for row in np.flatnonzero(folder_of == code).tolist():
            if names[row] in links:
                try:
                    out[row] = resolve_link(out[row])
                except OSError:
                    raise loop_error(row, paths[row]) from None
    return out


def resolve_image_paths(
    written: pd.Series,
    root: str,
    file: str,
    column: str,
    allow_outside_root: bool = False,
    joined: Sequence[str] | None = None,
) -> np.ndarray:
    """The image paths of a label file's rows as the table stores them.

    Joined with the dataset root and normalised (os.path.normpath: "./x.png" and "a/../x.png" are "x.png"; symlinks
    are kept, so the cache key stays the path the user wrote). The file each names (symlinks resolved) must be
    unique: two rows naming one image (written differently, or through a link) are a DataError naming both as
    written, since they could land in different splits. A path that lies outside `root` both as written and
    resolved is a DataError unless `allow_outside_root` (data.allow_outside_root); a symlink loop is one too.

    Args:
        written: (N,) the column as in the file (for messages).
        root: the dataset root.
        file: the label file (named in errors).
        column: its column (named in errors).
        allow_outside_root: accept paths outside `root`.
        joined: the paths to join with `root` when the reader located them itself (NIH image folders, CheXpert's
            prefix removed); default `written`.

    Returns:
        (N,) absolute paths, object array.
    """
    check_empty_paths(written, file, column)
    root = os.path.abspath(root)
    source = written if joined is None else joined
    paths = np.array([os.path.normpath(os.path.join(root, path)) for path in source], dtype=object)

    def loop_error(row: int, path: str) -> DataError:
        return row_error(
            file,
            row + 1,
            column,
            f"{written.iloc[row]!r}: symlink loop at {path} (too many levels "
            "of symbolic links); fix or remove the link",
        )

    resolved = real_paths(paths, loop_error)
    if not allow_outside_root:
        inside = pd.Series(paths).str.startswith(os.path.join(root, "")).to_numpy()
        if not inside.all():
            try:
                real_root = os.path.join(resolve_link(root), "")
            except OSError:
                raise DataError(f"data.root {root}: symlink loop (too many levels of symbolic links)") from None
            inside = inside | pd.Series(resolved).str.startswith(real_root).to_numpy()
        if not inside.all():
            row = int(np.argmin(inside))
            raise row_error(
                file,
                row + 1,
                column,
                f"image path {written.iloc[row]!r} is outside data.root {root} "
                f"(it names {resolved[row]}; {int((~inside).sum())} such rows); fix the path or "
                "data.root, or set data.allow_outside_root=true to allow it",
            )
    check_duplicates(resolved, written, file, column)
    return paths


# ----------------------------------------------------------------------------------------- images
def existing_files(paths: Sequence[str]) -> np.ndarray:
    """Whether each file exists; one os.scandir per distinct folder instead of one stat per path.

    Args:
        paths: the files.

    Returns:
        (N,) bool.
    """
    folders = pd.Series(paths, dtype=object).map(os.path.dirname)
    listing: dict[str, set[str]] = {}
    for folder in folders.unique():
        try:
            with os.scandir(folder or ".") as entries:
                listing[folder] = {entry.name for entry in entries}
        except OSError:
            listing[folder] = set()
    return np.fromiter((os.path.basename(p) in listing[d] for p, d in zip(paths, folders)), bool, len(paths))


def check_images(
    table: LabelTable, missing: str, held: Callable[[np.ndarray], np.ndarray] | None = None, source: str = ""
) -> LabelTable:
    """Apply data.missing to image files that do not exist, or with `held` to images a cache has no entry for.

    In-memory rows (path "") are skipped. error: DataError naming the count and the first 5 missing paths. drop:
    those rows are removed, the count is logged, warned and stored in `frame.attrs["missing_dropped"]`. A table left
    empty is a DataError.

    Args:
        table: the reader's LabelTable.
        missing: "error" | "drop" (data.missing).
        held: paths -> (N,) bool, the image cache's entries (None: check the files).
        source: the image cache (named in messages).

    Returns:
        The table of the rows kept.
    """
    if missing not in ("error", "drop"):
        raise DataError(f"data.missing={missing!r}; choose from ['drop', 'error']")
    paths = table.frame["path"].to_numpy(dtype=object)
    on_disk = paths != ""
    absent = np.zeros(len(paths), bool)
    absent[on_disk] = ~(held or existing_files)(paths[on_disk])
    count = int(absent.sum())
    what = f"have no entry in the image cache {source}" if held else "do not exist"
    if count and missing == "error":
        fix = "rebuild the cache for this dataset" if held else "fix data.root"
        raise DataError(
            f"{count} of {len(paths)} image files listed in {table.source} {what}, e.g. "
            f"{paths[absent][:5].tolist()}; {fix} or set data.missing=drop to drop them"
        )
    out = table.subset(~absent) if count else table
    out.frame.attrs["missing_dropped"] = count
    if count:
        message = (
            f"data.missing=drop: dropped {count} of {len(paths)} rows of {table.source} whose image "
            f"{'has no entry in the image cache ' + source if held else 'is missing'}"
        )
        log.warning(message)
        warnings.warn(message, stacklevel=2)
    if out.frame.empty:
        raise DataError(f"no image of {table.source} exists under data.root")
    return out


def view_mask(views: pd.Series, wanted: Sequence[str], file: str, column: str) -> np.ndarray:
    """Rows whose `column` value is in data.views (all rows when data.views is empty).

    Letter case and surrounding spaces do not matter (a file that writes `pa` keeps those rows under
    data.views=[PA]); a filter that keeps no row is a DataError.

    Args:
        views: (N,) the view column.
        wanted: data.views.
        file: the label file (named in errors).
        column: its column (named in errors).

    Returns:
        (N,) bool.
    """
    if not wanted:
        return np.ones(len(views), bool)
    keep = views.str.strip().str.upper().isin([view.upper() for view in wanted]).to_numpy()
    if not keep.any():
        raise DataError(
            f"data.views={list(wanted)} keeps no row of {file}; column {column!r} has {sorted(views.unique().tolist())}"
        )
    return keep
