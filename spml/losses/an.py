"""Assume-negative family for single positive labels (Cole et al. 2021): AN, AN-LS, WAN, EPR.

Entry losses are averaged over all B*C entries, as in the original code. eps = 1e-5 reproduces its
`-log(x + 1e-5)`; eps = 0 gives exact binary cross-entropy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spml.losses.common import (
    SPML_LOSSES,
    Reduction,
    SinglePositiveLoss,
    as_float,
    neg_log_probs,
    reduce,
    with_batch_term,
)


def assume_negative(
    logits: Tensor,
    observed: Tensor,
    eps: float = 1e-5,
    label_smoothing: float = 0.0,
    unobserved_weight: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Binary cross-entropy with every unobserved label taken as negative, optionally smoothed and weighted.

    With ls = label_smoothing, observed: (1-ls)(-log p) + ls(-log(1-p)); unobserved:
    unobserved_weight * [(1-ls)(-log(1-p)) + ls(-log p)].

    Args:
        logits: (B, C) raw scores.
        observed: (B, C) bool, True at the observed positives.
        eps: added inside the logs, -log(x + eps) (0: exact BCE).
        label_smoothing: ls in [0, 1].
        unobserved_weight: weight of the assumed negatives.
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B, C) per entry; "mean": mean over all B*C entries; "sum": scalar.

    Example:
        REFERENCE.md's check values: AN 0.3216623 (exact BCE) / 0.3216479 (eps), AN-LS 0.4484580:

        >>> import torch
        >>> p = torch.tensor([[0.9, 0.2, 0.6], [0.3, 0.8, 0.1]], dtype=torch.float64)
        >>> observed = torch.tensor([[True, False, False], [False, True, False]])
        >>> print(f"{assume_negative(torch.logit(p), observed, eps=0).item():.7f}")
        0.3216623
        >>> print(f"{assume_negative(torch.logit(p), observed).item():.7f}")
        0.3216479
        >>> print(f"{assume_negative(torch.logit(p), observed, label_smoothing=0.1).item():.7f}")
        0.4484580
    """
    nl_pos, nl_neg = neg_log_probs(as_float(logits), eps)
    ls = label_smoothing
    as_positive = (1 - ls) * nl_pos + ls * nl_neg
    as_negative = (1 - ls) * nl_neg + ls * nl_pos
    return reduce(torch.where(observed.bool(), as_positive, unobserved_weight * as_negative), reduction)


def expected_positive_penalty(probs: Tensor, expected_positives: float) -> Tensor:
    """EPR's batch-level regulariser (mean over rows of sum_c p - k)^2 / C^2.

    Args:
        probs: (B, C) probabilities.
        expected_positives: k, the expected number of positives per image.

    Returns:
        Scalar; not a per-element loss, so it takes no reduction (see `with_batch_term`).
    """
    return (probs.sum(1).mean() - expected_positives) ** 2 / probs.shape[1] ** 2


def observed_only(logits: Tensor, observed: Tensor, eps: float = 1e-5, reduction: Reduction = "mean") -> Tensor:
    """-log(p + eps) at the observed positives, 0 elsewhere.

    Args:
        logits: (B, C) raw scores.
        observed: (B, C) bool, True at the observed positives.
        eps: added inside the log (0: exact).
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B, C) per entry; "mean": mean over all B*C entries; "sum": scalar.
    """
    nl_pos, _ = neg_log_probs(as_float(logits), eps)
    return reduce(torch.where(observed.bool(), nl_pos, 0.0), reduction)


@SPML_LOSSES.register("an")
class AssumeNegative(SinglePositiveLoss):
    """AN: every unobserved label is a negative (see `assume_negative`).

    Args:
        eps: added inside the logs (0: exact BCE).
        reduction: "none" ((B, C)), "mean" (over all B*C entries) or "sum".
    """

    def __init__(self, eps: float = 1e-5, reduction: Reduction = "mean"):
        super().__init__(reduction)
        self.eps = eps

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        """AN loss of a batch.

        Args:
            logits: (B, C) raw scores.
            observed: (B, C) bool, True at the observed positives.
            index: (B,) dataset rows of the images (unused).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        return assume_negative(logits, observed, self.eps, reduction=self.reduction)


@SPML_LOSSES.register("an_ls")
class AssumeNegativeSmoothed(SinglePositiveLoss):
    """AN-LS, label smoothing for assume-negative: AN whose targets are smoothed on both the observed
    positives (target 1 - ls) and the assumed negatives (target ls), so that an unobserved true positive
    is never pushed all the way to p = 0.

    The formula, the default ls = 0.1, eps = 1e-5 and the mean over all B*C entries are those of Cole et al.
    (2021)'s `loss_an_ls` (REFERENCE.md check value 0.4484580); the original also smooths both kinds of label.
    It differs only numerically: the logs are taken from the logits (-logaddexp(logsigmoid(+-s), log eps))
    in fp32, not as -log(sigmoid(s) + eps), which gives the same values and stays finite for any logit.
    It is not the multi-class label smoothing of Szegedy et al. with the same coefficient, whose binary
    targets would be 1 - ls/2 and ls/2.

    Args:
        ls: smoothing coefficient in [0, 1].
        eps: added inside the logs (0: exact BCE).
        reduction: "none" ((B, C)), "mean" (over all B*C entries) or "sum".
    """

    def __init__(self, ls: float = 0.1, eps: float = 1e-5, reduction: Reduction = "mean"):
        super().__init__(reduction)
        if not 0 <= ls <= 1:
            raise ValueError(f"an_ls: ls is a smoothing coefficient in [0, 1], got {ls}")
        self.ls, self.eps = ls, eps

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        """AN-LS loss of a batch.

        Args:
            logits: (B, C) raw scores.
            observed: (B, C) bool, True at the observed positives.
            index: (B,) dataset rows of the images (unused).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        return assume_negative(logits, observed, self.eps, label_smoothing=self.ls, reduction=self.reduction)


@SPML_LOSSES.register("wan")
class WeakAssumeNegative(SinglePositiveLoss):
    """WAN: assumed negatives weighted by 1 / (C - 1).

    Args:
        eps: added inside the logs (0: exact BCE).
        reduction: "none" ((B, C)), "mean" (over all B*C entries) or "sum".
    """

    def __init__(self, eps: float = 1e-5, reduction: Reduction = "mean"):
        super().__init__(reduction)
        self.eps = eps

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        """WAN loss of a batch: assumed negatives weighted by 1 / max(C - 1, 1).

        Args:
            logits: (B, C) raw scores.
            observed: (B, C) bool, True at the observed positives.
            index: (B,) dataset rows of the images (unused).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        weight = 1.0 / max(logits.shape[1] - 1, 1)
        return assume_negative(logits, observed, self.eps, unobserved_weight=weight, reduction=self.reduction)


@SPML_LOSSES.register("epr")
class ExpectedPositiveRegularized(SinglePositiveLoss):
    """EPR: observed positives only, plus the expected-number-of-positives penalty with k =
    `expected_positives` (the dataset's mean positives per image).

    Args:
        expected_positives: k.
        eps: added inside the log (0: exact).
        reduction: "none" ((B, C), the batch penalty added to every entry), "mean" (over all B*C entries,
            plus the penalty) or "sum".
    """

    def __init__(self, expected_positives: float, eps: float = 1e-5, reduction: Reduction = "mean"):
        super().__init__(reduction)
        self.expected_positives, self.eps = float(expected_positives), eps

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        """EPR loss of a batch: observed-positive terms plus the batch penalty.

        Args:
            logits: (B, C) raw scores.
            observed: (B, C) bool, True at the observed positives.
            index: (B,) dataset rows of the images (unused).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        probs = torch.sigmoid(as_float(logits))
        penalty = expected_positive_penalty(probs, self.expected_positives)
        return with_batch_term(observed_only(logits, observed, self.eps, "none"), penalty, self.reduction)
