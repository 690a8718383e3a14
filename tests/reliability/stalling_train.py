"""tools/train.py with test hooks, for the kill and signal tests (also under torchrun):

    python stalling_train.py [--stall N MARKER] [--step-delay S --progress FILE] <tools/train.py arguments...>

--stall N MARKER: the Nth checkpoint state is serialised, only its first half is written into the temporary file,
then MARKER is created (holding that file's name) and the process sleeps until it is killed.
--step-delay S --progress FILE: each training step is followed by S seconds of sleep (a step long enough to signal
inside it) and writes {"pid", "step"} to FILE-<RANK> (RANK of torchrun, 0 alone), and the tool's exit code is added
as "exit" when it returns. Neither changes what is computed.
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

args = sys.argv[1:]
stall_at, marker, delay, progress = 0, None, 0.0, None
while args and args[0] in ("--stall", "--step-delay", "--progress"):
    option = args.pop(0)
    if option == "--stall":
        stall_at, marker = int(args.pop(0)), Path(args.pop(0))
    elif option == "--step-delay":
        delay = float(args.pop(0))
    else:
        progress = Path(f"{args.pop(0)}-{os.environ.get('RANK', '0')}")
real_save, real_step = torch.save, Trainer.train_step
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


torch.save = stalling_save  # spml.engine.checkpoint looks torch.save up at call time
if progress is not None:
    Trainer.train_step = paced_step
spec = importlib.util.spec_from_file_location("train_tool", Path(__file__).resolve().parents[2] / "tools" / "train.py")
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
code = train.main(args)
if progress is not None:
    report(exit=code)
sys.exit(code)
