"""Optimizer and scheduler from timm's factories, with per-parameter learning-rate multipliers."""
from __future__ import annotations

from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.optim import Optimizer


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


def build_optimizer(model: nn.Module, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 1e-4) -> Optimizer:
    """timm optimizer by name (adamw, sgd, lamb, ...) over `parameter_groups`."""
    groups = parameter_groups(model, weight_decay)
    try:
        return create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=weight_decay)
    except (ValueError, KeyError, AssertionError) as err:  # timm/torch: unknown name, invalid lr or decay
        raise ValueError(f"optimizer {name!r} (lr={lr}, weight_decay={weight_decay}): "
                         f"{str(err).strip(chr(39))}") from None


def build_scheduler(optimizer: Optimizer, name: str, epochs: int, updates_per_epoch: int, lr: float,
                    warmup_epochs: float = 0.0, min_lr: float = 0.0):
    """timm scheduler by name, stepped per optimizer update: linear warm-up from lr / 100, then e.g. cosine."""
    try:
        scheduler, _ = create_scheduler_v2(optimizer, sched=name, num_epochs=epochs, warmup_epochs=warmup_epochs,
                                           warmup_lr=lr * 0.01, min_lr=min_lr, step_on_epochs=False,
                                           updates_per_epoch=updates_per_epoch)
    except (ValueError, AssertionError) as err:  # timm: unknown scheduler name
        raise ValueError(f"scheduler {name!r}: {err}") from None
    return scheduler
