"""ZLPR (Su et al. 2022) and focal ZLPR (Hanif et al. 2025): multi-label ranking around threshold 0."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from spml.losses.common import LOSSES, as_float, known_or_all


def zlpr(logits: Tensor, targets: Tensor, known: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """log(1 + sum_neg e^{s/T}) + log(1 + sum_pos e^{-s/T}) per row, over known entries only (a row
    with no known positive has positive term 0). logits, targets, known: (B, C) -> (B,)."""
    s = as_float(logits) / temperature
    known = known_or_all(known, s)
    positive = targets > 0.5
    pos = torch.where(known & positive, -s, float("-inf"))
    neg = torch.where(known & ~positive, s, float("-inf"))
    zero = s.new_zeros(s.shape[0], 1)
    return torch.logsumexp(torch.cat([pos, zero], 1), 1) + torch.logsumexp(torch.cat([neg, zero], 1), 1)


@LOSSES.register("zlpr")
class ZLPR(nn.Module):
    """Mean over rows of the per-row ZLPR on logits / temperature; `scale_by_temperature` returns
    T * L, which undoes the 1/T gradient scale of a small temperature."""

    def __init__(self, temperature: float = 1.0, scale_by_temperature: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"{type(self).__name__}: temperature must be > 0, got {temperature}")
        self.temperature, self.scale_by_temperature = temperature, scale_by_temperature

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        loss = zlpr(logits, targets, known, self.temperature).mean()
        return self.temperature * loss if self.scale_by_temperature else loss


@LOSSES.register("fzlpr")
class FocalZLPR(ZLPR):
    """Focal ZLPR: ZLPR with a temperature below 1 (Hanif et al.'s T is not public; 0.5 by default)."""

    def __init__(self, temperature: float = 0.5, scale_by_temperature: bool = False):
        super().__init__(temperature, scale_by_temperature)
