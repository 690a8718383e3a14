"""The project's one atomic file writer: a temporary file beside the target, fsync, then rename.

A reader (or a crash at any point) sees the old file or the complete new one, never half of it. A failed
write (a full disk, an interrupt) removes its temporary file and re-raises. Temporary names are
`.<name>.tmp-<pid>` (TEMP_GLOB finds the ones a killed process left behind). Writers that need a path
(numpy memmaps, safetensors, matplotlib) use `atomic_path`; the others pass a function of a binary handle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

TEMP_GLOB = ".*.tmp-*"


def temporary_path(path: Path) -> Path:
    """The temporary name beside `path` that this process writes before the rename.

    Args:
        path: the target file.

    Returns:
        `<folder>/.<name>.tmp-<pid>` (matched by TEMP_GLOB).
    """
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success the file written there replaces `path`.

    When the block ends without error the file is fsynced and renamed onto `path`; otherwise it is removed and
    the error re-raised. For writers that need a path (numpy memmaps, safetensors, matplotlib).

    Args:
        path: the target file.

    Yields:
        The temporary path to write.
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """`write(handle)` into a temporary file beside `path`, then fsync and rename (see the module docstring).

    Args:
        path: the target file.
        write: writes the content into a binary handle; an error in it leaves `path` as it was.

    Example:
        >>> import json, pathlib, shutil, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> write_json_atomic(folder / "metrics.json", {"mAP": 0.31})
        >>> def interrupted(handle):
        ...     handle.write(b'{"mAP": 0.')
        ...     raise OSError("disk full")
        >>> write_atomic(folder / "metrics.json", interrupted)
        Traceback (most recent call last):
        ...
        OSError: disk full
        >>> json.loads((folder / "metrics.json").read_text())  # the old file, whole
        {'mAP': 0.31}
        >>> [path.name for path in folder.iterdir()]  # no temporary file left behind
        ['metrics.json']
        >>> shutil.rmtree(folder)
    """
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        write(handle)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically.

    Args:
        path: the target file.
        data: the file's new content.
    """
    write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically, UTF-8 encoded.

    Args:
        path: the target file.
        text: the file's new content.
    """
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write `data` to `path` atomically as JSON indented by 2.

    Args:
        path: the target file.
        data: a JSON-serialisable value.
    """
    write_text_atomic(path, json.dumps(data, indent=2))
