"""Assume-negative family for single positive labels (Cole et al. 2021): AN, AN-LS, WAN, EPR.

Entry losses are averaged over all B*C entries, as in the original code. eps = 1e-5 reproduces its
`-log(x + 1e-5)`; eps = 0 gives exact binary cross-entropy.
"""
from __future__ import annotations

import torch
from torch import Tensor

from spml.losses.common import SPML_LOSSES, SinglePositiveLoss, as_float, neg_log_probs


def assume_negative(logits: Tensor, observed: Tensor, eps: float = 1e-5, label_smoothing: float = 0.0,
                    unobserved_weight: float = 1.0) -> Tensor:
    """Observed: (1-ls)(-log p) + ls(-log(1-p)); unobserved: unobserved_weight * [(1-ls)(-log(1-p)) + ls(-log p)].
    logits, observed: (B, C) -> (B, C) entry losses."""
    nl_pos, nl_neg = neg_log_probs(as_float(logits), eps)
    ls = label_smoothing
    as_positive = (1 - ls) * nl_pos + ls * nl_neg
    as_negative = (1 - ls) * nl_neg + ls * nl_pos
    return torch.where(observed.bool(), as_positive, unobserved_weight * as_negative)


def expected_positive_penalty(probs: Tensor, expected_positives: float) -> Tensor:
    """(mean over rows of sum_c p - k)^2 / C^2. probs: (B, C) -> scalar."""
    return (probs.sum(1).mean() - expected_positives) ** 2 / probs.shape[1] ** 2


def observed_only(logits: Tensor, observed: Tensor, eps: float = 1e-5) -> Tensor:
    """-log(p + eps) at observed entries, 0 elsewhere. (B, C) -> (B, C)."""
    nl_pos, _ = neg_log_probs(as_float(logits), eps)
    return torch.where(observed.bool(), nl_pos, 0.0)


@SPML_LOSSES.register("an")
class AssumeNegative(SinglePositiveLoss):
    """AN: every unobserved label is a negative."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        return assume_negative(logits, observed, self.eps).mean()


@SPML_LOSSES.register("an_ls")
class AssumeNegativeSmoothed(SinglePositiveLoss):
    """AN-LS: AN with label smoothing `ls` on both observed and assumed labels."""

    def __init__(self, ls: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.ls, self.eps = ls, eps

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        return assume_negative(logits, observed, self.eps, label_smoothing=self.ls).mean()


@SPML_LOSSES.register("wan")
class WeakAssumeNegative(SinglePositiveLoss):
    """WAN: assumed negatives weighted by 1 / (C - 1)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        weight = 1.0 / max(logits.shape[1] - 1, 1)
        return assume_negative(logits, observed, self.eps, unobserved_weight=weight).mean()


@SPML_LOSSES.register("epr")
class ExpectedPositiveRegularized(SinglePositiveLoss):
    """EPR: observed positives only, plus the expected-number-of-positives penalty with k =
    `expected_positives` (the dataset's mean positives per image)."""

    def __init__(self, expected_positives: float, eps: float = 1e-5):
        super().__init__()
        self.expected_positives, self.eps = float(expected_positives), eps

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        probs = torch.sigmoid(as_float(logits))
        penalty = expected_positive_penalty(probs, self.expected_positives)
        return observed_only(logits, observed, self.eps).mean() + penalty
