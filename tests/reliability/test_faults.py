"""Faults during training: a non-finite loss, a full disk while checkpointing, kill -9 while training and while
writing a checkpoint. Each leaves a loadable latest checkpoint, and resuming reaches exactly the final metrics
of the uninterrupted run (CPU, fixed seed): no data lost."""

import errno
import json
import math
import os
import random
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from spml.engine import checkpoint as ckpt
from spml.engine.trainer import NonFiniteLossError, Trainer
from spml.factories import build_trainer
from tests.reliability.conftest import (
    KILL_RUN,
    STALLING_TRAIN,
    assert_same_log,
    error_line,
    final_results,
    kill,
    latest_step,
    launch,
    load_tool,
    tiny_run_args,
    wait_for,
)


def poison_step(trainer: Trainer, step: int) -> None:
    """Make the loss of global step `step` NaN (as an overflow would), leaving the components as computed."""
    forward = trainer.objective.forward

    def poisoned(batch):
        out = forward(batch)
        if trainer.progress.global_step == step:
            out["loss"] = out["loss"] * float("nan")
        return out

    trainer.objective.forward = poisoned


def checkpoint_files_are_clean(root: Path) -> None:
    """No temporary file anywhere, and every step folder is one a pointer names."""
    assert not list(root.rglob("*.tmp*")), list(root.rglob("*.tmp*"))
    assert {folder.name for folder in root.glob("step-*")} == ckpt.referenced_dirs(root)


def test_nonfinite_loss_stops_naming_step_and_components_last_checkpoint_intact(tiny_config, tmp_path):
    trainer = build_trainer(tiny_config("spml", "train.checkpoint_every=2", "train.log_every=100"))
    poison_step(trainer, 5)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    trainer.accelerator.end_training()
    message = str(info.value)
    assert "at step 5" in message and "train.nonfinite=skip" in message
    assert re.search(r"components: \w+=[-+.\w]+(, \w+=[-+.\w]+)+\)", message), message  # each by name
    root = tmp_path / "run" / "checkpoints"
    latest = ckpt.read_pointer(root)
    state, _ = ckpt.load_state(latest, 0)
    assert state["progress"]["global_step"] == 4  # the save at step 6 was refused, step 4 is the last good one
    weights = [name for name, _ in trainer.model.named_parameters()]  # (buffers may hold NaN = empty slot)
    assert all(torch.isfinite(state["objective"][name]).all() for name in weights)
    assert not all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the live weights were ruined
    checkpoint_files_are_clean(root)


def test_nonfinite_loss_is_skipped_under_the_explicit_option(tiny_config):
    trainer = build_trainer(tiny_config("spml", "train.nonfinite=skip"))
    poison_step(trainer, 5)
    changed, train_step = {}, trainer.train_step

    def watched_step(batch):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        step, out = trainer.progress.global_step, train_step(batch)
        changed[step] = any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
        return out

    trainer.train_step = watched_step
    summary = trainer.fit()
    trainer.accelerator.end_training()
    assert math.isfinite(summary["mAP"])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert [step for step, moved in changed.items() if not moved] == [5]  # exactly the poisoned step was skipped


def enospc_on(monkeypatch, pattern: str, nth: int, how: str) -> None:
    """The `nth` checkpoint file whose temporary name contains `pattern` fails with ENOSPC: half written
    (how="write", inside torch.save) or at its fsync (how="fsync")."""
    count = {"n": 0}

    def hit(name: str) -> bool:
        if pattern in name and ".tmp-" in name:
            count["n"] += 1
            return count["n"] == nth
        return False

    if how == "write":
        real_save = torch.save

        def save(obj, handle, *args, **kwargs):
            if hit(str(getattr(handle, "name", ""))):
                handle.write(b"\x80\x02partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_save(obj, handle, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    else:
        real_fsync = os.fsync

        def fsync(fd):
            if hit(os.readlink(f"/proc/self/fd/{fd}")):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("pattern, how", [("state.pt", "write"), ("rng-0.pt", "fsync"), ("latest.json", "fsync")])
def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(
    cli, reference_run, monkeypatch, tmp_path, pattern, how
):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        enospc_on(patch, pattern, 6, how)  # the 6th save fails: steps 1-5 were saved
        code, _, err = cli("train", *tiny_run_args(out, *KILL_RUN))
    root = out / "checkpoints"
    line = error_line(err)  # a message, not a traceback: the file, the reason, the folder's free space
    assert code == 2 and f"{root}/" in line and pattern.split(".")[0] in line and "No space left on device" in line
    assert re.search(r"\d+\.\d MiB free in " + re.escape(str(root)), line), line
    state, rng = ckpt.load_state(ckpt.read_pointer(root), 0)
    assert state["progress"]["global_step"] == 5 and rng is not None
    checkpoint_files_are_clean(root)
    code, _, err = cli("train", "--resume", str(out))
    assert code == 0, err
    assert final_results(out) == final_results(reference_run)
    checkpoint_files_are_clean(root)


def test_kill_9_at_a_random_step_then_resume_reaches_the_same_metrics(cli, reference_run, tmp_path):
    total = latest_step(reference_run / "checkpoints")
    target = random.Random(20).randint(2, total - 3)
    out = tmp_path / "run"
    process = launch(tiny_run_args(out, *KILL_RUN))
    wait_for(lambda: latest_step(out / "checkpoints") >= target, process)
    kill(process)
    killed_at = latest_step(out / "checkpoints")
    assert killed_at < total and not (out / "eval").exists()  # there was training left to do
    ckpt.load_state(ckpt.read_pointer(out / "checkpoints"), 0)
    assert json.loads((out / ".lock").read_text())["pid"] == process.pid  # the dead holder's note is left behind
    code, _, err = cli("train", "--resume", str(out))
    assert code == 0, err  # ... and its lock is not: the kernel dropped it with the process
    assert final_results(out) == final_results(reference_run)
    assert_same_log(out, reference_run)  # the killed attempt's rows after the checkpoint were dropped


def test_kill_9_while_a_checkpoint_is_written_then_resume_reaches_the_same_metrics(cli, reference_run, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "writing"
    process = launch(["--stall", "7", str(marker), *tiny_run_args(out, *KILL_RUN)], STALLING_TRAIN)
    wait_for(marker.exists, process)
    time.sleep(0.05)
    kill(process)
    half_written = Path(marker.read_text())
    assert half_written.exists() and half_written.stat().st_size > 0  # killed inside the write
    root = out / "checkpoints"
    assert latest_step(root) == 6  # the 7th save never became "latest"
    ckpt.load_state(ckpt.read_pointer(root), 0)
    code, _, err = cli("train", "--resume", str(out))
    assert code == 0, err
    assert final_results(out) == final_results(reference_run)
    checkpoint_files_are_clean(root)  # the resumed run cleared the killed write's temporary file


@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): writes under `folder` fail as on a read-only mount (EROFS), whoever runs the tests (root
    ignores permission bits): open for writing, os.open with a write flag, mkdir, rename and unlink."""
    import builtins

    def guard(folder: Path):
        inside = lambda path: Path(os.path.abspath(path)).is_relative_to(folder)  # noqa: E731

        def refuse(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
        real_rename, real_replace, real_unlink = os.rename, os.replace, os.unlink

        def open_(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        def refusing(real):
            def call(path, *args, **kwargs):
                if inside(path):
                    refuse(path)
                return real(path, *args, **kwargs)

            return call

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        for name, real in (
            ("mkdir", real_mkdir),
            ("rename", real_rename),
            ("replace", real_replace),
            ("unlink", real_unlink),
        ):
            monkeypatch.setattr(os, name, refusing(real))

    return guard


@pytest.mark.parametrize("tool, args", [("evaluate", []), ("report", []), ("export", []), ("train", ["--resume"])])
def test_a_read_only_run_folder_is_a_message_naming_the_flag_that_writes_elsewhere(
    cli, tools, reference_run, tmp_path, read_only, tool, args
):
    """Found before: OSError tracebacks (the lock file, training.png, export/)."""
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    if not hasattr(tools, tool):
        setattr(tools, tool, load_tool(tool))
    read_only(run)
    code, _, err = cli(tool, *args, str(run))
    line = error_line(err)
    assert code == 2 and f"{run}/" in line and "Read-only file system: the folder is read-only" in line, line
    assert ("write the outputs elsewhere with --out DIR" in line) == (tool != "train")
