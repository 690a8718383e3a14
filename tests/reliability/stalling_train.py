"""tools/train.py with test hooks, for the kill and signal tests (also under torchrun):

    python stalling_train.py [--stall N MARKER] [--step-delay S --progress FILE] [--fail-at N KIND]
                             <tools/train.py arguments...>

--stall N MARKER: the Nth checkpoint state is serialised, only its first half is written into the temporary file,
then MARKER is created (holding that file's name) and the process sleeps until it is killed.
--step-delay S --progress FILE: each training step is followed by S seconds of sleep (a step long enough to signal
inside it) and writes {"pid", "step"} to FILE-<RANK> (RANK of torchrun, 0 alone), and the tool's exit code is added
as "exit" when it returns. Neither changes what is computed.
--fail-at N KIND: at global step N, KIND = nan: the step's loss counts as non-finite (the run's check then stops it);
KIND = callback: the step's on_step_end callbacks raise RuntimeError.
"""

import importlib.util
import io
import json
import os
import sys
import time
from pathlib import Path

import torch

from spml.engine.trainer import Trainer

stall_at, marker, delay, progress, fail_at, failure = 0, None, 0.0, None, -1, ""
real_save, real_step, real_emit = torch.save, Trainer.train_step, Trainer.emit
state_writes = 0


def stalling_save(obj, handle, *rest, **kwargs):
    global state_writes
    name = str(getattr(handle, "name", ""))
    if ".state.pt.tmp-" in name:
        state_writes += 1
        if state_writes == stall_at:
            buffer = io.BytesIO()
            real_save(obj, buffer, *rest, **kwargs)
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            handle.flush()
            marker.write_text(name)
            time.sleep(600)
    return real_save(obj, handle, *rest, **kwargs)


reported = {"pid": os.getpid(), "step": -1}


def report(**values) -> None:
    reported.update(values)
    progress.write_text(json.dumps(reported))


def paced_step(self, batch):
    out = real_step(self, batch)
    time.sleep(delay)
    report(step=self.progress.global_step)
    return out


def failing_step(self, batch):
    out = real_step(self, batch)
    if self.progress.global_step == fail_at and failure == "nan":
        nan = torch.tensor(float("nan"))
        self.guard.observe(fail_at, nan, None, {"loss": nan})
    return out


def failing_emit(self, hook, *hook_args):
    if hook == "on_step_end" and self.progress.global_step == fail_at and failure == "callback":
        raise RuntimeError(f"a callback failed at step {fail_at}")
    return real_emit(self, hook, *hook_args)


if __name__ == "__main__":  # (not in the workers a spawn start runs this file in)
    args = sys.argv[1:]
    while args and args[0] in ("--stall", "--step-delay", "--progress", "--fail-at"):
        option = args.pop(0)
        if option == "--stall":
            stall_at, marker = int(args.pop(0)), Path(args.pop(0))
        elif option == "--fail-at":
            fail_at, failure = int(args.pop(0)), args.pop(0)
        elif option == "--step-delay":
            delay = float(args.pop(0))
        else:
            progress = Path(f"{args.pop(0)}-{os.environ.get('RANK', '0')}")
    torch.save = stalling_save  # spml.engine.checkpoint looks torch.save up at call time
    if progress is not None:
        Trainer.train_step = paced_step
    elif failure:
        Trainer.train_step, Trainer.emit = failing_step, failing_emit
    tool = Path(__file__).resolve().parents[2] / "tools" / "train.py"
    spec = importlib.util.spec_from_file_location("train_tool", tool)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    code = train.main(args)
    if progress is not None:
        report(exit=code)
    sys.exit(code)
