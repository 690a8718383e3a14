"""Focal loss (Lin et al. 2017) for independent sigmoid outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spml.losses.common import LOSSES, as_float, masked_mean


def focal(logits: Tensor, targets: Tensor, known: Tensor | None = None, gamma: float = 2.0,
          alpha: float | None = None) -> Tensor:
    """-alpha_t (1 - p_t)^gamma log p_t, mean over known entries; alpha None = no class weighting,
    else alpha on positives and 1 - alpha on negatives. logits, targets, known: (B, C) -> scalar."""
    s = as_float(logits)
    positive = targets > 0.5
    signed = torch.where(positive, s, -s)  # p_t = sigmoid(signed)
    loss = -F.logsigmoid(signed)
    if gamma != 0:
        loss = torch.exp(gamma * F.logsigmoid(-signed)) * loss  # (1 - p_t)^gamma
    if alpha is not None:
        loss = torch.where(positive, alpha, 1.0 - alpha) * loss
    return masked_mean(loss, known)


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Focal loss; gamma = 0 with alpha None is BCE."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        return focal(logits, targets, known, self.gamma, self.alpha)
