"""The run folder's lock: one training at a time writes into a run folder.

`<run>/.lock` carries a POSIX record lock (`fcntl.lockf`). The kernel drops it when the holding process ends in any
way (kill -9 included), so a dead holder never leaves a stale lock behind; processes forked by the holder
(DataLoader workers) do not inherit it, so they cannot keep it alive after the holder died. The file's text names
the holder (pid, host, start time, command) for the refusal message and is emptied on release.

tools/train.py holds it exclusively (`RunLock(run)`, the main process only) from before `config.yaml` is written
until the run ends; tools/evaluate.py holds it shared while it writes `eval*/` into the run folder, so evaluations
may run side by side but never while a training writes there. A grid (spml.experiments.grid.run_grid) holds
`<run>/.grid.lock` (GRID_LOCK_FILE) from before it looks at a run until the run's training has ended, so a grid
started twice trains each run once: the training's own lock is taken only seconds after the grid has decided to
start it. A POSIX lock belongs to the process: open the file
only through RunLock (closing any other descriptor of it would drop the lock), and a process does not conflict
with itself.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

LOCK_FILE = ".lock"
GRID_LOCK_FILE = ".grid.lock"
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)  # file systems without POSIX locks


class RunFolderLocked(RuntimeError):
    """Another process holds the run folder's lock; the message names the holder when it is a training."""


class RunLock:
    """Context manager: lock `run_dir` (created if missing) exclusively, or `shared`, through its `lock_file`;
    RunFolderLocked when another process holds it in a conflicting way. On a file system without POSIX locks it
    warns and goes on."""

    def __init__(self, run_dir: str | Path, shared: bool = False, lock_file: str = LOCK_FILE):
        self.run_dir, self.shared = Path(run_dir), shared
        self.path = self.run_dir / lock_file
        self.descriptor: int | None = None

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(descriptor, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as err:
            os.close(descriptor)
            if err.errno in (errno.EACCES, errno.EAGAIN):
                raise RunFolderLocked(self.refusal()) from None
            if err.errno in UNSUPPORTED:
                warnings.warn(f"cannot lock {self.path} ({err.strerror}): the file system has no POSIX locks, so "
                              f"nothing keeps a second training out of {self.run_dir}", stacklevel=2)
                return self
            raise
        # Now no training holds it: a text left by one that was killed before it could empty it is stale.
        os.ftruncate(descriptor, 0)
        if not self.shared:
            os.write(descriptor, json.dumps(holder()).encode("utf-8"))
        self.descriptor = descriptor
        return self

    def __exit__(self, *exc_info) -> None:
        if self.descriptor is None:
            return
        if not self.shared:
            os.ftruncate(self.descriptor, 0)
        fcntl.lockf(self.descriptor, fcntl.LOCK_UN)
        os.close(self.descriptor)
        self.descriptor = None

    def refusal(self) -> str:
        """Who holds the lock, from the holder's text (a training) or its absence (evaluations)."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict):
            return (f"{self.run_dir} is in use: another process holds its lock ({self.path}; an evaluation writing "
                    "eval/ into it?); try again when it has finished")
        pid = info.get("pid")
        advice = ("evaluate into another folder (--out) or wait until it has finished" if self.shared else
                  f"stop it first (kill -TERM {pid} saves a checkpoint) or choose another train.out")
        return (f"{self.run_dir} is in use by a training: pid {pid} on {info.get('host')}, since "
                f"{info.get('started')} ({info.get('command')}); {advice}")


def in_use(run_dir: str | Path) -> str | None:
    """RunLock's refusal when another process holds `run_dir` now, else None (the lock is taken and let go at once;
    `run_dir` is created if missing)."""
    try:
        with RunLock(run_dir):
            return None
    except RunFolderLocked as locked:
        return str(locked)


def holder() -> dict[str, object]:
    """What the lock file says about this process."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}
