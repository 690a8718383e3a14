"""Optimizer and scheduler from timm's factories, with per-parameter learning-rate multipliers."""
from __future__ import annotations

from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.optim import Optimizer

from spml.config import OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases/norms (1-d tensors); parameters carrying `lr_multiplier`
    (e.g. ROLE's label table) get their own group with lr scaled by it (`lr_scale`, read by timm)."""
    decay, no_decay, scaled = [], [], {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        multiplier = getattr(param, "lr_multiplier", None)
        if multiplier is not None:
            scaled.setdefault(float(multiplier), []).append(param)
        elif param.ndim <= 1:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups += [{"params": params, "weight_decay": 0.0, "lr_scale": m} for m, params in scaled.items()]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: OptimConfig) -> Optimizer:
    """timm optimizer by name (adamw, sgd, lamb, ...) over `parameter_groups`."""
    groups = parameter_groups(model, config.weight_decay)
    try:
        return create_optimizer_v2(groups, opt=config.name, lr=config.lr, weight_decay=config.weight_decay)
    except (ValueError, KeyError, AssertionError) as err:  # timm/torch: unknown name, invalid lr or decay
        raise ValueError(f"optim.name={config.name!r}, optim.lr={config.lr}, optim.weight_decay="
                         f"{config.weight_decay}: {str(err).strip(chr(39))}") from None


def build_scheduler(optimizer: Optimizer, config: OptimConfig, epochs: int, updates_per_epoch: int):
    """timm scheduler stepped per optimizer update (warm-up then e.g. cosine)."""
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=config.scheduler,
            num_epochs=epochs,
            warmup_epochs=config.warmup_epochs,
            warmup_lr=config.lr * 0.01,
            min_lr=config.min_lr,
            step_on_epochs=False,
            updates_per_epoch=updates_per_epoch,
        )
    except (ValueError, AssertionError) as err:  # timm: unknown scheduler name
        raise ValueError(f"optim.scheduler={config.scheduler!r}: {err}") from None
    return scheduler
