"""ZLPR (Su et al. 2022) and focal ZLPR (Hanif et al. 2025): multi-label ranking around threshold 0."""
from __future__ import annotations

import torch
from torch import Tensor

from spml.losses.common import LOSSES, FullLabelLoss, Reduction, as_float, known_or_all, reduce


def zlpr(logits: Tensor, targets: Tensor, known: Tensor | None = None, temperature: float = 1.0,
         reduction: Reduction = "mean") -> Tensor:
    """ZLPR per row: log(1 + sum_neg e^{s/T}) + log(1 + sum_pos e^{-s/T}) over the row's known entries
    (a row with no known positive has positive term 0; a row with nothing known has loss 0).

    Args:
        logits: (B, C) raw scores.
        targets: (B, C) in {0, 1}.
        known: (B, C) bool, the entries whose label is known (None: all).
        temperature: T; below 1 gives focal ZLPR.
        reduction: "none", "mean" or "sum".

    Shape:
        "none": (B,) per row; "mean": mean over all B rows; "sum": scalar.
    """
    s = as_float(logits) / temperature
    known = known_or_all(known, s)
    positive = targets > 0.5
    pos = torch.where(known & positive, -s, float("-inf"))
    neg = torch.where(known & ~positive, s, float("-inf"))
    zero = s.new_zeros(s.shape[0], 1)
    rows = torch.logsumexp(torch.cat([pos, zero], 1), 1) + torch.logsumexp(torch.cat([neg, zero], 1), 1)
    return reduce(rows, reduction)


@LOSSES.register("zlpr")
class ZLPR(FullLabelLoss):
    """ZLPR on logits / temperature (see `zlpr`), mean over rows; `scale_by_temperature` returns T * L,
    which undoes the 1/T gradient scale of a small temperature.

    Args:
        temperature: T > 0.
        scale_by_temperature: multiply the loss by T.
        reduction: "none" (per row, (B,)), "mean" or "sum".
    """

    def __init__(self, temperature: float = 1.0, scale_by_temperature: bool = False, reduction: Reduction = "mean"):
        super().__init__(reduction)
        if temperature <= 0:
            raise ValueError(f"{type(self).__name__}: temperature must be > 0, got {temperature}")
        self.temperature, self.scale_by_temperature = temperature, scale_by_temperature

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        loss = zlpr(logits, targets, known, self.temperature, self.reduction)
        return self.temperature * loss if self.scale_by_temperature else loss


@LOSSES.register("fzlpr")
class FocalZLPR(ZLPR):
    """Focal ZLPR: ZLPR with a temperature below 1 (Hanif et al.'s T is not public; 0.5 by default)."""

    def __init__(self, temperature: float = 0.5, scale_by_temperature: bool = False, reduction: Reduction = "mean"):
        super().__init__(temperature, scale_by_temperature, reduction)
