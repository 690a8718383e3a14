"""Optimizer and scheduler from timm's factories, with per-parameter learning-rate multipliers."""

from __future__ import annotations

from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.optim import Optimizer


def parameter_groups(
    model: nn.Module, weight_decay: float, backbone: nn.Module | None = None, backbone_lr_scale: float = 1.0
) -> list[dict]:
    """No weight decay on biases/norms (1-d tensors); parameters carrying `lr_multiplier`
    (e.g. ROLE's label table) get their own group with lr scaled by it (`lr_scale`, read by timm's schedulers).

    Args:
        model: the module whose trainable parameters are grouped.
        weight_decay: decay of the >1-d tensors.
        backbone: a submodule of `model` whose parameters learn at `backbone_lr_scale` x lr (their own groups,
            marked "backbone": True; with a scale of 1 they stay in the common groups).
        backbone_lr_scale: the learning-rate multiplier of `backbone`'s parameters.

    Returns:
        The optimizer parameter groups (dicts with "params", "weight_decay" and, where scaled, "lr_scale"); empty
        groups are left out.
    """
    in_backbone = {id(p) for p in backbone.parameters()} if backbone is not None and backbone_lr_scale != 1 else set()
    decay, no_decay, scaled, backbone_decay, backbone_no_decay = [], [], {}, [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        multiplier = getattr(param, "lr_multiplier", None)
        if multiplier is not None:
            scaled.setdefault(float(multiplier), []).append(param)
        elif id(param) in in_backbone:
            (backbone_no_decay if param.ndim <= 1 else backbone_decay).append(param)
        elif param.ndim <= 1:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups += [{"params": params, "weight_decay": 0.0, "lr_scale": m} for m, params in scaled.items()]
    groups += [
        {"params": params, "weight_decay": decay_value, "lr_scale": backbone_lr_scale, "backbone": True}
        for params, decay_value in ((backbone_decay, weight_decay), (backbone_no_decay, 0.0))
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    backbone: nn.Module | None = None,
    backbone_lr_scale: float = 1.0,
) -> Optimizer:
    """timm optimizer by name (adamw, sgd, lamb, ...) over `parameter_groups` (`backbone` at `backbone_lr_scale`).

    Args:
        model: the module whose trainable parameters are optimized.
        name: timm optimizer name.
        lr: learning rate.
        weight_decay: decay of the >1-d tensors (none on biases/norms).
        backbone: a submodule of `model` learning at `backbone_lr_scale` x lr, or None.
        backbone_lr_scale: the backbone's learning-rate multiplier, >= 0.

    Returns:
        The optimizer.

    Raises:
        ValueError: a negative `backbone_lr_scale`, or an optimizer name, lr or decay timm rejects.
    """
    if backbone_lr_scale < 0:
        raise ValueError(f"backbone_lr_scale={backbone_lr_scale}: must be >= 0")
    groups = parameter_groups(model, weight_decay, backbone, backbone_lr_scale)
    try:
        optimizer = create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=weight_decay)
    except (ValueError, KeyError, AssertionError) as err:  # timm/torch: unknown name, invalid lr or decay
        raise ValueError(
            f"optimizer {name!r} (lr={lr}, weight_decay={weight_decay}): {str(err).strip(chr(39))}"
        ) from None
    for group in optimizer.param_groups:  # timm's schedulers scale their base value (initial_lr) by lr_scale from
        if group.get("backbone"):  # their first update on; the steps before it use lr x lr_scale too
            group["initial_lr"], group["lr"] = lr, lr * backbone_lr_scale
    return optimizer


def build_scheduler(
    optimizer: Optimizer,
    name: str,
    epochs: int,
    updates_per_epoch: int,
    lr: float,
    warmup_epochs: float = 0.0,
    min_lr: float = 0.0,
):
    """timm scheduler by name, stepped per optimizer update: linear warm-up from lr / 100, then e.g. cosine.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        name: timm scheduler name (e.g. cosine).
        epochs: training epochs.
        updates_per_epoch: optimizer updates per epoch.
        lr: the base learning rate (the warm-up starts at lr / 100).
        warmup_epochs: epochs of linear warm-up.
        min_lr: the lowest learning rate.

    Returns:
        The timm scheduler.

    Raises:
        ValueError: an unknown scheduler name.
    """
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=name,
            num_epochs=epochs,
            warmup_epochs=warmup_epochs,
            warmup_lr=lr * 0.01,
            min_lr=min_lr,
            step_on_epochs=False,
            updates_per_epoch=updates_per_epoch,
        )
    except (ValueError, AssertionError) as err:  # timm: unknown scheduler name
        raise ValueError(f"scheduler {name!r}: {err}") from None
    return scheduler
