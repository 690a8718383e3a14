"""Focal loss (Lin et al. 2017) for independent sigmoid outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spml.losses.common import LOSSES, FullLabelLoss, Reduction, as_float, reduce


def focal(
    logits: Tensor,
    targets: Tensor,
    known: Tensor | None = None,
    gamma: float = 2.0,
    alpha: float | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Focal loss -alpha_t (1 - p_t)^gamma log p_t per entry; gamma = 0 with alpha None is BCE.

    Args:
        logits: (B, C) raw scores.
        targets: (B, C) in {0, 1}.
        known: (B, C) bool, the entries whose label is known (None: all).
        gamma: focusing exponent.
        alpha: weight of positives (negatives get 1 - alpha); None: no class weighting.
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B, C) per entry, 0 at unknown entries; "mean": mean over the known entries; "sum": scalar.
    """
    s = as_float(logits)
    positive = targets > 0.5
    signed = torch.where(positive, s, -s)  # p_t = sigmoid(signed)
    loss = -F.logsigmoid(signed)
    if gamma != 0:
        loss = torch.exp(gamma * F.logsigmoid(-signed)) * loss  # (1 - p_t)^gamma
    if alpha is not None:
        loss = torch.where(positive, alpha, 1.0 - alpha) * loss
    return reduce(loss, reduction, known)


@LOSSES.register("focal")
class FocalLoss(FullLabelLoss):
    """Focal loss (see `focal`); gamma = 0 with alpha None is BCE.

    Args:
        gamma: focusing exponent.
        alpha: weight of positives (negatives get 1 - alpha); None: no class weighting.
        reduction: "none" ((B, C)), "mean" (over the known entries) or "sum".
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, reduction: Reduction = "mean"):
        super().__init__(reduction)
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        """Focal loss of a batch.

        Args:
            logits: (B, C) raw scores.
            targets: (B, C) in {0, 1}.
            known: (B, C) bool, the entries whose label is known (None: all).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        return focal(logits, targets, known, self.gamma, self.alpha, self.reduction)
