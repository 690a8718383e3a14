"""tools/train.py whose Nth state.pt write stalls half-way (the kill -9 during a checkpoint write test).

    python stalling_train.py <marker file> <N> <tools/train.py arguments...>

The Nth checkpoint state is serialised, only its first half is written into the temporary file, then
<marker> is created (holding that file's name) and the process sleeps until it is killed.
"""
import importlib.util
import io
import sys
import time
from pathlib import Path

import torch

marker, stall_at, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
real_save = torch.save
state_writes = 0


def stalling_save(obj, handle, *args, **kwargs):
    global state_writes
    name = str(getattr(handle, "name", ""))
    if ".state.pt.tmp-" in name:
        state_writes += 1
        if state_writes == stall_at:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            handle.flush()
            marker.write_text(name)
            time.sleep(600)
    return real_save(obj, handle, *args, **kwargs)


torch.save = stalling_save  # spml.engine.checkpoint looks torch.save up at call time
spec = importlib.util.spec_from_file_location("train_tool", Path(__file__).resolve().parents[2] / "tools" / "train.py")
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
sys.exit(train.main(argv))
