"""Fine-tuning pretrained weights: the backbone's learning-rate factor (optim.backbone_lr_scale) through timm's
schedulers, and the frozen-backbone warm-up (optim.freeze_backbone_epochs), also across a resume."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from spml.config import load_config
from spml.engine.callbacks import Callback
from spml.engine.optim import build_optimizer, build_scheduler, parameter_groups
from spml.factories import build_trainer
from tests.weights_cache import random_pretrained


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)


def test_backbone_learns_at_its_factor_of_the_scheduled_rate():
    model = Net()
    optimizer = build_optimizer(model, "adamw", 1e-3, 1e-4, model.backbone, 0.1)
    scheduler = build_scheduler(optimizer, "cosine", epochs=4, updates_per_epoch=5, lr=1e-3, warmup_epochs=1)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    for update in (0, 3, 11, 19):
        scheduler.step_update(update)
        head = {g["lr"] for g in optimizer.param_groups if not g.get("backbone")}
        backbone = {g["lr"] for g in optimizer.param_groups if g.get("backbone")}
        assert len(head) == len(backbone) == 1 and backbone.pop() == pytest.approx(0.1 * head.pop())
    for group in optimizer.param_groups:
        assert all((id(p) in backbone_ids) == bool(group.get("backbone")) for p in group["params"])
        assert group["weight_decay"] == (0.0 if group["params"][0].ndim <= 1 else 1e-4)
    plain = parameter_groups(model, 1e-4)
    same = parameter_groups(model, 1e-4, model.backbone, 1.0)  # a factor of 1 changes nothing
    assert [[id(p) for p in g["params"]] for g in plain] == [[id(p) for p in g["params"]] for g in same]


class Snapshots(Callback):
    """The backbone's parameters at the end of each completed epoch."""

    def __init__(self):
        self.epochs = {}

    def on_epoch_end(self, trainer, completed):
        if completed:
            backbone = trainer.model.classifier.backbone.model
            self.epochs[trainer.progress.epoch] = {k: v.detach().clone() for k, v in backbone.named_parameters()}


def test_frozen_warmup_keeps_the_pretrained_backbone_across_a_resume(tiny_config, tmp_path):
    saved = random_pretrained("test_efficientnet")
    save_file(saved, str(tmp_path / "w.safetensors"))
    expected = dict(saved)
    expected["conv_stem.weight"] = saved["conv_stem.weight"].sum(1, keepdim=True)  # one input channel
    extra = [
        f"model.pretrained={tmp_path / 'w.safetensors'}",
        "optim.freeze_backbone_epochs=1",
        "train.epochs=2",
        "optim.backbone_lr_scale=0.5",
    ]
    first = build_trainer(tiny_config("supervised", *extra, "train.max_steps=2"))
    assert first.steps_per_epoch >= 4  # the stop below lies inside the frozen epoch
    lrs = {bool(g.get("backbone")): g["lr"] for g in first.optimizer.param_groups}
    assert lrs[True] == pytest.approx(0.5 * lrs[False])
    first.fit()
    first.accelerator.end_training()
    run = tmp_path / "run"
    snapshots = Snapshots()
    resumed = build_trainer(
        load_config(run_dir=run, overrides=["train.max_steps=0"]), callbacks=[snapshots], resume=True
    )
    resumed.resume(run)
    resumed.fit()
    resumed.accelerator.end_training()
    frozen, trained = snapshots.epochs[1], snapshots.epochs[2]
    assert all(torch.equal(value, expected[key]) for key, value in frozen.items())  # the file's weights, untouched
    assert not all(torch.equal(value, expected[key]) for key, value in trained.items())  # then fine-tuned
