"""Binary cross-entropy and its class-balanced variants (Wang et al. 2017 per batch; N_c/P_c per class)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spml.losses.common import LOSSES, as_float, known_or_all, masked_mean


def bce(logits: Tensor, targets: Tensor, known: Tensor | None = None, pos_weight: Tensor | None = None) -> Tensor:
    """Mean BCE over the known entries. logits, targets, known: (B, C); pos_weight: (C,) -> scalar."""
    s = as_float(logits)
    weight = None if pos_weight is None else pos_weight.to(s.dtype)
    loss = F.binary_cross_entropy_with_logits(s, targets.to(s.dtype), pos_weight=weight, reduction="none")
    return masked_mean(loss, known)


def batch_balanced_bce(logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
    """Wang et al. (2017): positives weighted by (|P|+|N|)/|P|, negatives by (|P|+|N|)/|N|, with |P|, |N|
    counted over the known entries of the batch; then the mean over known entries (= mean positive
    loss + mean negative loss). logits, targets, known: (B, C) -> scalar."""
    s = as_float(logits)
    known = known_or_all(known, s)
    positive = known & (targets > 0.5)
    negative = known & ~positive
    total = known.sum().clamp(min=1)
    weight = torch.where(positive, total / positive.sum().clamp(min=1), total / negative.sum().clamp(min=1))
    loss = F.binary_cross_entropy_with_logits(s, targets.to(s.dtype), reduction="none")
    return masked_mean(weight.to(s.dtype) * loss, known)


@LOSSES.register("bce")
class BCE(nn.Module):
    """Mean binary cross-entropy over known entries."""

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        return bce(logits, targets, known)


@LOSSES.register("weighted_bce")
class WeightedBCE(nn.Module):
    """Class-balanced BCE. weighting="batch": Wang et al. per-batch beta_P/beta_N; weighting="class":
    pos_weight_c = N_c / P_c from the training counts (N_c = num_samples - P_c, P_c at least 1)."""

    def __init__(self, weighting: str = "batch", pos_counts: Tensor | None = None, num_samples: int | None = None):
        super().__init__()
        if weighting not in ("batch", "class"):
            raise ValueError(f"weighted_bce: weighting must be 'batch' or 'class', got {weighting!r}")
        self.weighting = weighting
        pos_weight = None
        if weighting == "class":
            if pos_counts is None or num_samples is None:
                raise ValueError("weighted_bce: weighting='class' needs pos_counts and num_samples")
            positives = torch.as_tensor(pos_counts, dtype=torch.float32).clamp(min=1)
            pos_weight = (float(num_samples) - positives).clamp(min=0) / positives
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        if self.weighting == "batch":
            return batch_balanced_bce(logits, targets, known)
        return bce(logits, targets, known, self.pos_weight)
