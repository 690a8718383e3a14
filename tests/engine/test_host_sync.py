"""No host synchronisation inside a training step (DESIGN.md section 5).

`torch.cuda.set_sync_debug_mode` needs a GPU, so on the CPU the steps run under a dispatch mode that
records every op which reads a tensor's value on the host (`.item()`, `bool()`, `float()`, `int()` all
reach `aten._local_scalar_dense`; `nonzero`, `masked_select` and boolean-mask indexing have
data-dependent shapes), plus `.cpu()`, `.tolist()` and `.numpy()`, which a CPU tensor answers without
dispatching. The window is what `Trainer.fit` runs per batch (`train_step`, with the callbacks' optimizer-step
hooks, and every callback's `on_step_end`) on steps that are not log or checkpoint steps.

Two call sites read host tensors only, and are allowed: torch's optimizers keep `state["step"]` on the
CPU unless capturable/fused (its `.item()` reads host memory), and kornia draws random augmentation
parameters on the CPU and checks the blur sigma there before copying it to the device non-blocking.
"""

from __future__ import annotations

import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from spml.engine.signals import StopOnSignal
from spml.engine.trainer import Trainer
from spml.factories import build_trainer

SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_consecutive"}
HOST_ONLY_SITES = (("torch/optim/", ""), ("kornia/filters/gaussian.py", "_gaussian_blur2d"))
HOST_METHODS = ("cpu", "tolist", "numpy")


def call_site() -> str:
    """The innermost frame outside this file and torch's dispatch machinery, with its callers' files."""
    frames = [
        f for f in traceback.extract_stack() if not f.filename.endswith(("test_host_sync.py", "_python_dispatch.py"))
    ]
    return " <- ".join(f"{f.filename}:{f.lineno} {f.name}" for f in reversed(frames[-4:]))


def host_only(site: str) -> bool:
    frames = site.split(" <- ")
    return any(
        path in frame and frame.endswith(f" {name}" if name else "")
        for frame in frames
        for path, name in HOST_ONLY_SITES
    )


class SyncRecorder(TorchDispatchMode):
    """Records the call site of every host-reading op while active (see the module docstring)."""

    def __init__(self, sites: list[str]):
        super().__init__()
        self.sites = sites

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        bool_index = name == "index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or [])
        )
        if name in SYNC_OPS or bool_index:
            self.sites.append(f"{name}: {call_site()}")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def record_syncs(monkeypatch):
    """record(trainer) -> list of host reads during its per-batch work (allowed host-only sites removed)."""
    sites: list[str] = []
    active = [False]
    for method in HOST_METHODS:
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, _method=method, **kwargs):
            if active[0]:
                sites.append(f"{_method}: {call_site()}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)

    def watch(function):
        def watched(*args, **kwargs):
            active[0] = True
            try:
                with SyncRecorder(sites):
                    return function(*args, **kwargs)
            finally:
                active[0] = False

        return watched

    def record(trainer: Trainer) -> list[str]:
        trainer.train_step = watch(trainer.train_step)
        for callback in trainer.callbacks:
            callback.on_step_end = watch(callback.on_step_end)
        trainer.fit()
        return [site for site in sites if not host_only(site)]

    return record


STEPS = ["train.max_steps=4", "train.log_every=1000", "train.epochs=1", "data.synthetic.num_images=200"]


@pytest.mark.parametrize(
    "mode, overrides",
    [
        ("supervised", []),
        ("spml", []),  # MPC with every component, per-class thresholds
        ("spml", ["spml.mpc.teacher=ema", "model.ema_decay=0.9", "spml.mpc.threshold=global"]),
    ],
    ids=["supervised", "mpc", "mpc-ema-global"],
)
def test_training_steps_do_not_read_device_values(tiny_config, record_syncs, mode, overrides):
    # with the stop-signal callback tools/train.py adds (its step check reads a Python flag in one process)
    trainer = build_trainer(tiny_config(mode, *STEPS, *overrides), callbacks=[StopOnSignal(every=1000)])
    assert record_syncs(trainer) == []


def test_the_recorder_sees_an_item_call_in_the_step(tiny_config, record_syncs):
    trainer = build_trainer(tiny_config("supervised", *STEPS))
    forward = trainer.objective.forward

    def forward_with_item(batch):
        out = forward(batch)
        out["loss"].item()
        return out

    trainer.objective.forward = forward_with_item
    found = record_syncs(trainer)
    assert len(found) == 4 and all(site.startswith("_local_scalar_dense") for site in found)
