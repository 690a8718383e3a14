"""Asymmetric loss (Ridnik et al. 2021): focusing with separate gammas and a probability margin on negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spml.losses.common import LOSSES, FullLabelLoss, Reduction, as_float, reduce


def _power(base: Tensor, exponent: float) -> Tensor:
    """base ** exponent for base >= 0 with a finite gradient at base = 0 (also for exponents < 1)."""
    if exponent == 0:
        return torch.ones_like(base)
    positive = base > 0
    return torch.where(positive, torch.exp(exponent * torch.log(torch.where(positive, base, 1.0))), 0.0)


def asl(
    logits: Tensor,
    targets: Tensor,
    known: Tensor | None = None,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    reduction: Reduction = "mean",
) -> Tensor:
    """Asymmetric loss. Positives: -(1-p)^gamma_pos log p; negatives: -p_m^gamma_neg log(1-p_m), p_m = max(p - clip, 0).

    Args:
        logits: (B, C) raw scores.
        targets: (B, C) in {0, 1}.
        known: (B, C) bool, the entries whose label is known (None: all).
        gamma_pos: focusing exponent of positives.
        gamma_neg: focusing exponent of negatives.
        clip: probability margin subtracted on negatives (0: none).
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B, C) per entry, 0 at unknown entries; "mean": mean over the known entries (the paper
        sums: reduction="sum"); "sum": scalar.
    """
    s = as_float(logits)
    positive_loss = -F.logsigmoid(s)
    if gamma_pos != 0:
        positive_loss = torch.exp(gamma_pos * F.logsigmoid(-s)) * positive_loss
    if clip > 0:
        shifted = (torch.sigmoid(s) - clip).clamp(min=0)  # p_m
        negative_loss = -torch.log((torch.sigmoid(-s) + clip).clamp(max=1.0))  # 1 - p_m >= clip
        negative_loss = _power(shifted, gamma_neg) * negative_loss
    else:
        negative_loss = -F.logsigmoid(-s)
        if gamma_neg != 0:
            negative_loss = torch.exp(gamma_neg * F.logsigmoid(s)) * negative_loss
    return reduce(torch.where(targets > 0.5, positive_loss, negative_loss), reduction, known)


@LOSSES.register("asl")
class AsymmetricLoss(FullLabelLoss):
    """ASL (see `asl`) with the paper's recipe as defaults (gamma_neg 4, gamma_pos 0, clip 0.05).

    Args:
        gamma_pos: focusing exponent of positives.
        gamma_neg: focusing exponent of negatives.
        clip: probability margin subtracted on negatives (0: none).
        reduction: "none" ((B, C)), "mean" (over the known entries) or "sum".
    """

    def __init__(
        self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, reduction: Reduction = "mean"
    ):
        super().__init__(reduction)
        self.gamma_pos, self.gamma_neg, self.clip = gamma_pos, gamma_neg, clip

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        """ASL of a batch.

        Args:
            logits: (B, C) raw scores.
            targets: (B, C) in {0, 1}.
            known: (B, C) bool, the entries whose label is known (None: all).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        return asl(logits, targets, known, self.gamma_pos, self.gamma_neg, self.clip, self.reduction)
