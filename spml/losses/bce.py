"""Binary cross-entropy and its class-balanced variants (Wang et al. 2017 per batch; N_c/P_c per class)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spml.losses.common import LOSSES, FullLabelLoss, Reduction, as_float, known_or_all, reduce


def bce(
    logits: Tensor,
    targets: Tensor,
    known: Tensor | None = None,
    pos_weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Binary cross-entropy on the known entries.

    Args:
        logits: (B, C) raw scores.
        targets: (B, C) in [0, 1].
        known: (B, C) bool, the entries whose label is known (None: all).
        pos_weight: (C,) weight of the positive term per class (None: 1).
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B, C) per entry, 0 at unknown entries; "mean": mean over the known entries; "sum": scalar.
    """
    s = as_float(logits)
    weight = None if pos_weight is None else pos_weight.to(s.dtype)
    loss = F.binary_cross_entropy_with_logits(s, targets.to(s.dtype), pos_weight=weight, reduction="none")
    return reduce(loss, reduction, known)


def batch_balanced_bce(
    logits: Tensor, targets: Tensor, known: Tensor | None = None, reduction: Reduction = "mean"
) -> Tensor:
    """Wang et al. (2017): positives weighted by (|P|+|N|)/|P|, negatives by (|P|+|N|)/|N|.

    |P|, |N| are counted over the known entries of the batch; the mean over known entries is then the mean
    positive loss + the mean negative loss.

    Args:
        logits: (B, C) raw scores.
        targets: (B, C) in {0, 1}.
        known: (B, C) bool, the entries whose label is known (None: all).
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B, C) weighted entry losses, 0 at unknown entries; "mean": mean over the known entries;
        "sum": scalar.
    """
    s = as_float(logits)
    known = known_or_all(known, s)
    positive = known & (targets > 0.5)
    negative = known & ~positive
    total = known.sum().clamp(min=1)
    weight = torch.where(positive, total / positive.sum().clamp(min=1), total / negative.sum().clamp(min=1))
    loss = F.binary_cross_entropy_with_logits(s, targets.to(s.dtype), reduction="none")
    return reduce(weight.to(s.dtype) * loss, reduction, known)


@LOSSES.register("bce")
class BCE(FullLabelLoss):
    """Binary cross-entropy over the known entries (see `bce`).

    Args:
        reduction: "none" ((B, C)), "mean" (over the known entries) or "sum".
    """

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        """BCE of a batch.

        Args:
            logits: (B, C) raw scores.
            targets: (B, C) in {0, 1}.
            known: (B, C) bool, the entries whose label is known (None: all).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        return bce(logits, targets, known, reduction=self.reduction)


@LOSSES.register("weighted_bce")
class WeightedBCE(FullLabelLoss):
    """Class-balanced BCE.

    weighting="batch": Wang et al. per-batch beta_P/beta_N; weighting="class": pos_weight_c = N_c / P_c from
    the training counts (N_c = num_samples - P_c, P_c at least 1).

    Args:
        weighting: "batch" or "class" (a ValueError otherwise).
        pos_counts: (C,) training positives per class (needed by "class").
        num_samples: training images (needed by "class").
        reduction: "none", "mean" or "sum".
    """

    def __init__(
        self,
        weighting: str = "batch",
        pos_counts: Tensor | None = None,
        num_samples: int | None = None,
        reduction: Reduction = "mean",
    ):
        super().__init__(reduction)
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
        """Class-balanced BCE of a batch.

        Args:
            logits: (B, C) raw scores.
            targets: (B, C) in {0, 1}.
            known: (B, C) bool, the entries whose label is known (None: all).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        if self.weighting == "batch":
            return batch_balanced_bce(logits, targets, known, self.reduction)
        return bce(logits, targets, known, self.pos_weight, self.reduction)
