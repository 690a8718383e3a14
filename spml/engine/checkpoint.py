"""Atomic, pickle-free checkpoints: a folder per save plus a pointer file replaced atomically.

Layout under `<run>/checkpoints/`: `step-000120/state.pt` (objective, optimizer, scheduler,
progress, callbacks), `step-000120/rng-<rank>.pt` (each process's RNG states), and `latest.json` /
`best.json` naming the folder. A crash at any point leaves the previous pointer and its folder
intact; a failed write (a full disk) removes its temporary file and its unreferenced step folder, and
temporary files a killed run left behind are removed by the next save into that folder. Files are loaded
with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import errno
import json
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from spml.utils.io import TEMP_GLOB, write_atomic

FORMAT = "spml-checkpoint-2"  # objective, optimizer, scheduler, progress and the callbacks' states
READABLE = (FORMAT, "spml-checkpoint-1")  # 1: before the trainer callbacks (EMA inside the objective); weights only


def rng_state() -> dict[str, Any]:
    """This process's torch/CUDA/numpy/python RNG states as tensors (weights_only-loadable).

    Returns:
        {"torch", "cuda", "numpy", "python"} -> that generator's state.
    """
    _kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, _ = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64)},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore this process's RNG states from `rng_state()`'s dict.

    Args:
        state: the dict `rng_state()` returned (CUDA states are restored only where CUDA is available).
    """
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), None))


class CheckpointWriteError(OSError):
    """A checkpoint file could not be written (a full disk, a quota, an I/O error); the previous checkpoint, which
    the pointers still name, is intact."""


def save_torch_atomic(obj: Any, path: Path) -> None:
    """torch.save `obj` into `path` atomically (see `write_checkpoint_file`).

    Args:
        obj: plain tensors and containers.
        path: the file written.
    """
    write_checkpoint_file(path, lambda handle: torch.save(obj, handle))


def write_checkpoint_file(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """`write(handle)` into `path` atomically (spml.io.write_atomic); a failed write (torch's writer says
    RuntimeError where the disk was full) is a CheckpointWriteError naming the file, the reason and the space left
    in its folder.

    Args:
        path: the file written.
        write: writes the content into the open binary handle.
    """
    try:
        write_atomic(path, write)
    except (OSError, RuntimeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        code = err.errno if isinstance(err, OSError) else errno.EIO
        raise CheckpointWriteError(
            code,
            f"cannot write the checkpoint ({reason}); "
            f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free in "
            f"{path.parent}. The previous checkpoint is intact: free space, then "
            f"continue with --resume",
            str(path),
        ) from None


def checkpoint_dir(root: Path, step: int) -> Path:
    """The step folder of `step` under `root`.

    Args:
        root: the checkpoints folder.
        step: the training step.

    Returns:
        `root / step-NNNNNNN` (seven digits).
    """
    return root / f"step-{step:07d}"


def save_rng(root: Path, step: int, rank: int) -> None:
    """Every process writes its own RNG state into the step folder (before rank 0 commits it).

    Args:
        root: the checkpoints folder.
        step: the training step of the save.
        rank: this process's rank (file rng-<rank>.pt).
    """
    folder = checkpoint_dir(root, step)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        save_torch_atomic(rng_state(), folder / f"rng-{rank}.pt")
    except BaseException:
        discard_unreferenced(root, folder)
        raise


def commit(root: Path, step: int, state: dict[str, Any], pointers: tuple[str, ...], keep: set[str]) -> None:
    """Rank 0: write state.pt into the step folder, then move the named pointers to it atomically.

    Folders no pointer names any more (and not in `keep`) are removed afterwards; when the write fails,
    the step folder too unless a pointer already names it.

    Args:
        root: the checkpoints folder.
        step: the training step of the save.
        state: what state.pt holds besides its format.
        pointers: the pointer names moved to this folder (e.g. "latest", "best").
        keep: step-folder names kept even when no pointer names them.
    """
    folder = checkpoint_dir(root, step)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(TEMP_GLOB):  # left by a run killed while writing this step (every rank is done)
        stale.unlink(missing_ok=True)
    try:
        save_torch_atomic({"format": FORMAT, **state}, folder / "state.pt")
        for name in pointers:
            pointer = json.dumps({"dir": folder.name, "step": step}, indent=2).encode("utf-8")
            write_checkpoint_file(root / f"{name}.json", lambda handle, data=pointer: handle.write(data))
    except BaseException:
        discard_unreferenced(root, folder)
        raise
    for old in root.glob("step-*"):
        if old.name not in referenced_dirs(root) | keep:
            shutil.rmtree(old, ignore_errors=True)


def referenced_dirs(root: Path) -> set[str]:
    """Names of the step folders that latest.json / best.json point at.

    Args:
        root: the checkpoints folder.

    Returns:
        The folder names.
    """
    return {read_pointer(root, name).name for name in ("latest", "best") if (root / f"{name}.json").exists()}


def discard_unreferenced(root: Path, folder: Path) -> None:
    """After a failed write: remove the step folder unless a pointer names it (it then holds a complete save).

    Args:
        root: the checkpoints folder.
        folder: the step folder of the failed write.
    """
    if folder.name not in referenced_dirs(root):
        shutil.rmtree(folder, ignore_errors=True)


def read_pointer(root: Path, name: str = "latest") -> Path:
    """The step folder `<root>/<name>.json` names. A pointer names a step folder inside `root` (`step-NNNNNNN`),
    never a path: one edited to lead elsewhere (an absolute path, `../..` into another run) or that is not the
    JSON spml writes is a ValueError naming the file.

    Args:
        root: the checkpoints folder.
        name: the pointer's name ("latest" or "best").

    Returns:
        The step folder.
    """
    path = root / f"{name}.json"
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    folder = data.get("dir") if isinstance(data, dict) else None
    if not isinstance(folder, str) or not re.fullmatch(r"step-\d+", folder):
        shown = repr(text[:80]) if text.strip() else "empty"
        raise ValueError(
            f'{path}: not a checkpoint pointer ({shown}); it must hold {{"dir": "step-NNNNNNN", '
            f'"step": N}} naming a step folder inside {root}'
        )
    return root / folder


def find_checkpoint(path: str | Path) -> Path:
    """A run folder, its checkpoints folder, or a step folder -> the step folder to load.

    Args:
        path: a run folder, its checkpoints folder, or a step folder.

    Returns:
        The step folder.

    Raises:
        FileNotFoundError: no latest.json or state.pt found.
    """
    path = Path(path)
    for root in (path / "checkpoints", path):
        if (root / "latest.json").exists():
            return read_pointer(root, "latest")
    if (path / "state.pt").exists():
        return path
    raise FileNotFoundError(f"no checkpoint found under {path} (expected checkpoints/latest.json or state.pt)")


def load_state(folder: Path, rank: int | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(state, rng state of `rank` or None) from a step folder; refuses anything but plain tensors/containers.
    state["format"] is one of READABLE; only FORMAT can be resumed (see `check_resumable`).

    Args:
        folder: the step folder.
        rank: the process whose RNG state is read, or None for none.

    Returns:
        (state, rng state or None when not asked for or not saved).
    """
    state = load_plain(folder / "state.pt")
    if not isinstance(state, dict) or state.get("format") not in READABLE:
        raise ValueError(f"{folder / 'state.pt'} is not an spml checkpoint (format {FORMAT!r} expected)")
    rng = None
    if rank is not None and (folder / f"rng-{rank}.pt").exists():
        rng = load_plain(folder / f"rng-{rank}.pt")
    return state, rng


def check_resumable(state: dict[str, Any], folder: Path) -> None:
    """A checkpoint of an older format holds the trained weights (tools/evaluate.py, tools/export.py read them)
    but not the training state today's trainer resumes from.

    Args:
        state: the loaded state (its "format" is read).
        folder: the step folder, named in the error.

    Raises:
        ValueError: the format is not FORMAT.
    """
    if state["format"] != FORMAT:
        raise ValueError(
            f"{folder / 'state.pt'} has format {state['format']!r}, written before the trainer's "
            f"callbacks ({FORMAT!r}); it can be evaluated and exported but not resumed: start a new run"
        )


def load_plain(path: Path) -> Any:
    """torch.load(weights_only=True); a file that is missing, truncated or holds more than tensors and plain
    containers (a pickle that would run code) is a ValueError naming it.

    Args:
        path: the file.

    Returns:
        The loaded tensors/containers (on the CPU).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only raises UnpicklingError for code objects in the pickle
        raise ValueError(f"refusing checkpoint file {path}: not a complete plain-tensor checkpoint ({err})") from None
