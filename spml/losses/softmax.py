"""Multi-label softmax / MSML (Ge et al. 2018) with a BCE companion for rows without positives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spml.losses.common import LOSSES, FullLabelLoss, Reduction, as_float, known_or_all, reduce


def msml(
    logits: Tensor, targets: Tensor, known: Tensor | None = None, bce_weight: float = 1.0, reduction: Reduction = "mean"
) -> Tensor:
    """MSML per row, with BCE for rows without a known positive.

    A row with a known positive: mean over its positives p of softplus(LSE_{known negatives n} s_n - s_p)
    (0 when it has no known negative). A row without one: bce_weight * mean BCE over its known entries.

    Args:
        logits: (B, C) raw scores.
        targets: (B, C) in {0, 1}.
        known: (B, C) bool, the entries whose label is known (None: all).
        bce_weight: weight of the BCE of rows without a known positive.
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B,) per row, 0 for rows with nothing known; "mean": mean over the rows with at least one
        known entry; "sum": scalar.
    """
    s = as_float(logits)
    known = known_or_all(known, s)
    positive = known & (targets > 0.5)
    negative = known & ~positive
    has_pos, has_neg = positive.any(1), negative.any(1)
    # Rows without negatives feed zeros into logsumexp: an all -inf row would give a NaN gradient.
    neg_input = torch.where(has_neg[:, None], torch.where(negative, s, float("-inf")), 0.0)
    neg_lse = torch.logsumexp(neg_input, 1, keepdim=True)
    pair = torch.where(positive & has_neg[:, None], F.softplus(neg_lse - s), 0.0)
    ranking = pair.sum(1) / positive.sum(1).clamp(min=1)
    entry_bce = torch.where(known, F.binary_cross_entropy_with_logits(s, targets.to(s.dtype), reduction="none"), 0.0)
    row_bce = entry_bce.sum(1) / known.sum(1).clamp(min=1)
    rows = torch.where(has_pos, ranking, bce_weight * row_bce)
    return reduce(rows, reduction, known.any(1))


@LOSSES.register("msml")
class MultiLabelSoftmax(FullLabelLoss):
    """MSML ranking loss (see `msml`); rows without positives (e.g. "No Finding") get `bce_weight` * BCE.
    Not torch.nn.MultiLabelSoftMarginLoss (which is plain BCE).

    Args:
        bce_weight: weight of the BCE of rows without a known positive.
        reduction: "none" (per row, (B,)), "mean" or "sum".
    """

    def __init__(self, bce_weight: float = 1.0, reduction: Reduction = "mean"):
        super().__init__(reduction)
        self.bce_weight = bce_weight

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        """MSML of a batch.

        Args:
            logits: (B, C) raw scores.
            targets: (B, C) in {0, 1}.
            known: (B, C) bool, the entries whose label is known (None: all).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B,) with reduction="none".
        """
        return msml(logits, targets, known, self.bce_weight, self.reduction)
