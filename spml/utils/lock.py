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

Several nodes sharing one grid folder (cluster jobs, spml.experiments.launch) rely on the file system to hold these
locks for all of them. POSIX record locks are kept by the file server on NFSv4 (and NFSv3 with lockd), Lustre
mounted with `flock`, GPFS/Spectrum Scale, BeeGFS (with global file locks), CephFS and on any local file system; a
holder that dies loses its lock there too (its lease or client eviction), so no stale lock files exist.
They are node-local, i.e. useless across nodes, on Lustre mounted with `localflock` and NFS mounted with `nolock`
or `local_lock=posix|all`; Lustre without either flock option refuses them. shared_lock_problem reads the mount
options of a folder and names those cases, and a cluster launch refuses such a folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import struct
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
    """Context manager: lock `run_dir` exclusively, or `shared`, through its `lock_file`.

    RunFolderLocked when another process holds it in a conflicting way. On a file system without POSIX locks it
    warns and goes on.

    Args:
        run_dir: the run folder (created if missing).
        shared: take a shared lock (evaluations) instead of an exclusive one (a training, which also writes its
            holder text into the file).
        lock_file: the lock file's name inside `run_dir` (LOCK_FILE; GRID_LOCK_FILE for a grid).
    """

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
                warnings.warn(
                    f"cannot lock {self.path} ({err.strerror}): the file system has no POSIX locks, so "
                    f"nothing keeps a second training out of {self.run_dir}",
                    stacklevel=2,
                )
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
        """Who holds the lock, from the holder's text (a training) or its absence (evaluations).

        Returns:
            The refusal message, with advice on what to do.
        """
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict):
            return (
                f"{self.run_dir} is in use: another process holds its lock ({self.path}; an evaluation writing "
                "eval/ into it?); try again when it has finished"
            )
        pid = info.get("pid")
        advice = (
            "evaluate into another folder (--out) or wait until it has finished"
            if self.shared
            else f"stop it first (kill -TERM {pid} saves a checkpoint) or choose another train.out"
        )
        return (
            f"{self.run_dir} is in use by a training: pid {pid} on {info.get('host')}, since "
            f"{info.get('started')} ({info.get('command')}); {advice}"
        )


def in_use(run_dir: str | Path) -> str | None:
    """Whether another process holds `run_dir` now (the lock is taken and let go at once).

    Args:
        run_dir: the run folder (created if missing).

    Returns:
        RunLock's refusal message when it is held, else None.
    """
    try:
        with RunLock(run_dir):
            return None
    except RunFolderLocked as locked:
        return str(locked)


def held(path: str | Path) -> bool | None:
    """Whether another process holds a lock on the lock file `path` now.

    F_GETLK is a test that takes no lock, so it never makes a process that tries to lock at that moment back off.

    Args:
        path: the lock file.

    Returns:
        True or False (False when the file does not exist); None where the test is not available (not Linux,
        or a file system without POSIX locks).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        # struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
        query = struct.pack("@hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(descriptor, fcntl.F_GETLK, query)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return struct.unpack("@hhqqi", answer)[0] != fcntl.F_UNLCK


def mount_of(path: str | Path, mounts: str) -> tuple[str, str, set[str]] | None:
    """The mount holding `path` among `mounts`: the longest mount point that is a prefix of the resolved path.

    Args:
        path: a file or folder (resolved through symlinks).
        mounts: /proc/mounts lines (device, mount point, type, options, ...).

    Returns:
        (mount point, file system type, options), or None when no mount matches.
    """
    resolved = Path(os.path.realpath(path))
    best = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (resolved == point or point in resolved.parents) and (best is None or len(str(point)) > len(str(best[0]))):
            best = (str(point), fields[2], set(fields[3].split(",")))
    return best


def shared_lock_problem(path: str | Path, mounts: str | None = None) -> str | None:
    """Why the POSIX locks of RunLock would not keep several nodes apart in `path`.

    Args:
        path: a folder, existing or to be created.
        mounts: /proc/mounts' text (read when None; None is returned where it does not exist).

    Returns:
        The reason, naming the mount and what to ask for; None when the file system shares the locks or is not
        known to be a problem.

    Example:
        >>> mounts = "server:/grids /mnt/grids nfs4 rw,nolock 0 0\\n/dev/sda1 / ext4 rw 0 0"
        >>> print(shared_lock_problem("/mnt/grids/nih", mounts))
        /mnt/grids (nfs4, mounted with nolock,rw): this NFS mount keeps file locks on each client (nolock / ...
        >>> print(shared_lock_problem("/home/me/grid", mounts))
        None
    """
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text(encoding="utf-8")
        except OSError:
            return None
    found = mount_of(Path(path).absolute(), mounts)
    if found is None:
        return None
    point, kind, options = found
    where = f"{point} ({kind}, mounted with {','.join(sorted(options))})"
    if kind == "lustre" and "localflock" in options:
        return (
            f"{where}: Lustre's localflock keeps file locks on each node, so two nodes could train one run; "
            "ask for a `flock` mount or put the grid on a file system that shares locks"
        )
    if kind == "lustre" and "flock" not in options:
        return f"{where}: Lustre without the `flock` mount option refuses file locks; ask for a `flock` mount"
    if kind.startswith("nfs") and ("nolock" in options or options & {"local_lock=posix", "local_lock=all"}):
        return (
            f"{where}: this NFS mount keeps file locks on each client (nolock / local_lock), so two nodes could "
            "train one run; use a mount with server-side locks (the NFS default)"
        )
    return None


def holder() -> dict[str, object]:
    """What the lock file says about this process.

    Returns:
        {"pid", "host", "started" (local time, ISO 8601), "command"}.
    """
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
    }
