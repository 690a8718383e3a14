"""Test-time augmentation: deterministic views by name, averaged predictions returned as logits."""
from __future__ import annotations

from typing import Callable

import torch
from kornia.geometry.transform import hflip, scale, translate
from torch import Tensor

ZOOM = 1.1  # scale_up: centre zoom factor
SHIFT = 0.04  # shift: translation as a fraction of the image side (right and down)


def zoom_in(images: Tensor) -> Tensor:
    return scale(images, images.new_full((images.shape[0],), ZOOM))


def shift(images: Tensor) -> Tensor:
    height, width = images.shape[-2:]
    return translate(images, images.new_tensor([[SHIFT * width, SHIFT * height]]).expand(images.shape[0], 2))


TTA_VIEWS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda images: images,
    "hflip": hflip,
    "scale_up": zoom_in,
    "shift": shift,
}


def tta_predict(logits_fn: Callable[[Tensor], Tensor], images: Tensor, names: tuple[str, ...] | list[str],
                average: str = "prob") -> Tensor:
    """Average `logits_fn` over the named views of float images (B, 1, H, W) in [0, 1] -> logits (B, C).

    average="logit": mean of the views' logits. average="prob": mean of their sigmoid probabilities,
    returned as logit(mean prob) with the probability clamped to [1e-6, 1 - 1e-6], so callers always
    receive logits (sigmoid of the result is the averaged probability).
    """
    if average not in ("prob", "logit"):
        raise ValueError(f"augment.tta_average must be 'prob' or 'logit', got {average!r}")
    unknown = [name for name in names if name not in TTA_VIEWS]
    if unknown or not names:
        raise ValueError(f"augment.tta: unknown or no views {unknown or list(names)}; choose from {sorted(TTA_VIEWS)}")
    outputs = torch.stack([logits_fn(TTA_VIEWS[name](images)).float() for name in names])
    if average == "logit":
        return outputs.mean(0)
    return torch.logit(torch.sigmoid(outputs).mean(0), eps=1e-6)
