"""The project's one atomic file writer: a temporary file beside the target, fsync, then rename.

A reader (or a crash at any point) sees the old file or the complete new one, never half of it. A failed
write (a full disk, an interrupt) removes its temporary file and re-raises. Temporary names are
`.<name>.tmp-<pid>` (TEMP_GLOB finds the ones a killed process left behind). Writers that need a path
(numpy memmaps, safetensors, matplotlib) use `atomic_path`; the others pass a function of a binary handle.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

TEMP_GLOB = ".*.tmp-*"


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error the file written there is
    fsynced and renamed onto `path`, otherwise it is removed and the error re-raised."""
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
    """`write(handle)` into a temporary file beside `path`, then fsync and rename (see the module docstring)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        write(handle)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2))
