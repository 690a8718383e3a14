"""ROLE (Cole et al. 2021): a learned per-image label table trained jointly with the classifier."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from spml.losses.an import expected_positive_penalty, observed_only
from spml.losses.common import SPML_LOSSES, Reduction, SinglePositiveLoss, as_float, neg_log_probs, with_batch_term


def role_loss(
    logits: Tensor,
    table_logits: Tensor,
    observed: Tensor,
    expected_positives: float,
    eps: float = 1e-5,
    reduction: Reduction = "mean",
) -> Tensor:
    """ROLE: 0.5 [obs terms on p and g] + 0.5 [BCE(p, sg(g)) + BCE(g, sg(p))] per entry, plus 0.5 [EPR(p) + EPR(g)].

    p = sigmoid(logits), g = sigmoid(table_logits), sg = stop-gradient; the EPR terms are a batch penalty.

    Args:
        logits: (B, C) raw scores of the classifier.
        table_logits: (B, C) the label table's logits for the batch's images.
        observed: (B, C) bool, True at the observed positives.
        expected_positives: k of the EPR penalty.
        eps: added inside the logs.
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B, C) per entry with the batch penalty added to every entry; "mean": mean over all B*C
        entries plus the penalty; "sum": scalar.
    """
    s, t = as_float(logits), as_float(table_logits)
    p, g = torch.sigmoid(s), torch.sigmoid(t)
    nl_p_pos, nl_p_neg = neg_log_probs(s, eps)
    nl_g_pos, nl_g_neg = neg_log_probs(t, eps)
    observed_terms = observed_only(s, observed, eps, "none") + observed_only(t, observed, eps, "none")
    cross_p = g.detach() * nl_p_pos + (1 - g.detach()) * nl_p_neg
    cross_g = p.detach() * nl_g_pos + (1 - p.detach()) * nl_g_neg
    entries = 0.5 * observed_terms + 0.5 * (cross_p + cross_g)
    penalty = 0.5 * (
        expected_positive_penalty(p, expected_positives) + expected_positive_penalty(g, expected_positives)
    )
    return with_batch_term(entries, penalty, reduction)


@SPML_LOSSES.register("role")
class ROLE(SinglePositiveLoss):
    """ROLE with its label table `table` (num_images, C) of logits as an nn.Parameter carrying
    `lr_multiplier` (10 in the paper), read by the optimizer factory. The table starts uniform in
    logit(0.5 -+ 0.1) from `seed` (identical on every rank). Unlike the original, observed entries are not
    pre-set to 0.995: the loss never sees the observed matrix up front; its observed term pulls them up.

    Args:
        num_classes, num_images: size of the table.
        expected_positives: k of the EPR penalty.
        eps: added inside the logs.
        lr_multiplier: learning-rate factor of the table.
        seed: seed of the table's initialisation.
        reduction: "none" ((B, C)), "mean" (over all B*C entries, plus the penalty) or "sum".
    """

    def __init__(
        self,
        num_classes: int,
        num_images: int,
        expected_positives: float,
        eps: float = 1e-5,
        lr_multiplier: float = 10.0,
        seed: int = 0,
        reduction: Reduction = "mean",
    ):
        super().__init__(reduction)
        self.expected_positives, self.eps = float(expected_positives), eps
        half_width = math.log(0.6 / 0.4)
        generator = torch.Generator().manual_seed(seed)
        init = half_width * (2 * torch.rand(num_images, num_classes, generator=generator) - 1)
        self.table = nn.Parameter(init)
        self.table.lr_multiplier = lr_multiplier

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        """ROLE loss of a batch against the table rows of its images.

        Args:
            logits: (B, C) raw scores.
            observed: (B, C) bool, True at the observed positives.
            index: (B,) long, dataset rows of the images (rows of `table`).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        return role_loss(logits, self.table[index], observed, self.expected_positives, self.eps, self.reduction)
