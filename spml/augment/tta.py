"""Test-time augmentation: deterministic views by name, averaged predictions returned as logits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from kornia.geometry.transform import hflip, scale, translate
from torch import Tensor

ZOOM = 1.1  # scale_up: centre zoom factor
SHIFT = 0.04  # shift: translation as a fraction of the image side (right and down)


def zoom_in(images: Tensor) -> Tensor:
    """Centre zoom by ZOOM.

    Args:
        images: float images.

    Returns:
        The zoomed images.

    Shape:
        (B, C, H, W) -> (B, C, H, W).
    """
    return scale(images, images.new_full((images.shape[0],), ZOOM))


def shift(images: Tensor) -> Tensor:
    """Translate right and down by SHIFT of each side.

    Args:
        images: float images.

    Returns:
        The shifted images.

    Shape:
        (B, C, H, W) -> (B, C, H, W).
    """
    height, width = images.shape[-2:]
    return translate(images, images.new_tensor([[SHIFT * width, SHIFT * height]]).expand(images.shape[0], 2))


TTA_VIEWS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda images: images,
    "hflip": hflip,
    "scale_up": zoom_in,
    "shift": shift,
}


AVERAGES: dict[str, Callable[[Tensor], Tensor]] = {
    "logit": lambda outputs: outputs.mean(0),
    # mean probability, returned as its logit (probability clamped to [1e-6, 1 - 1e-6]) so callers get logits
    "prob": lambda outputs: torch.logit(torch.sigmoid(outputs).mean(0), eps=1e-6),
}


def tta_predict(
    logits_fn: Callable[[Tensor], Tensor], images: Tensor, names: tuple[str, ...] | list[str], average: str = "prob"
) -> Tensor:
    """Average `logits_fn` over deterministic views of the images.

    Args:
        logits_fn: float images (B, 1, H, W) in [0, 1] -> logits (B, C).
        images: float (B, 1, H, W) in [0, 1].
        names: at least one TTA_VIEWS name (identity, hflip, scale_up, shift); none raises a ValueError.
        average: "logit" (mean of the views' logits) or "prob" (mean of their sigmoid probabilities, returned
            as logit(mean prob), clamped to [1e-6, 1 - 1e-6], so sigmoid of the result is the averaged probability).

    Returns:
        The averaged logits, float32.

    Shape:
        -> logits (B, C).

    Example:
        With "prob", sigmoid of the result is the mean of the views' probabilities:

        >>> import torch
        >>> images = torch.rand(2, 1, 8, 8)
        >>> def left_half_mean(x):  # a "model" that sees the flip
        ...     return 4 * x[..., :4].mean((1, 2, 3))[:, None] - 2
        >>> out = tta_predict(left_half_mean, images, ["identity", "hflip"])
        >>> views = torch.stack([left_half_mean(images), left_half_mean(images.flip(-1))]).sigmoid().mean(0)
        >>> torch.allclose(out.sigmoid(), views)
        True
    """
    if not names:
        raise ValueError("test-time augmentation needs at least one view")
    outputs = torch.stack([logits_fn(TTA_VIEWS[name](images)).float() for name in names])
    return AVERAGES[average](outputs)
