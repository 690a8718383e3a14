"""Large-loss modification (Kim et al. 2022): LL-R rejects, LL-Ct corrects, LL-Cp corrects permanently.

Epoch 0 (the paper's epoch 1) is plain AN with exact BCE. From epoch e >= 1 the k largest losses among
the batch's unobserved entries are rejected (loss 0) or corrected (target 1); observed positives never
enter the top-k. LL-R/LL-Ct: k = ceil(B*C*min(e*delta, 1)) (the clean rate 1 - e*delta drops by delta per
epoch); LL-Cp: k = ceil(B*C*delta) and the corrected entries become observed positives for good.
Unlike the original (which selects by `>= k-th value`, and flips only entries strictly above it), exactly
the top k are selected and all of them are flipped. Mean over all B*C entries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from spml.losses.common import SPML_LOSSES, Reduction, SinglePositiveLoss, as_float, gather_across_ranks, reduce


def large_loss(
    logits: Tensor, observed: Tensor, k: int, correct: bool, reduction: Reduction = "mean"
) -> tuple[Tensor, Tensor]:
    """AN (exact BCE) where the k largest unobserved entry losses of the batch are rejected (loss 0, zero
    gradient) or, with `correct`, get target 1.

    Args:
        logits: (B, C) raw scores.
        observed: (B, C) bool, True at the observed positives (never selected).
        k: number of entries to select.
        correct: flip the selected entries' target to 1 instead of rejecting them.
        reduction: "none", "mean" or "sum".

    Returns:
        (loss, selected): the loss reduced as asked ("none": (B, C) per entry; "mean": mean over all B*C
        entries; "sum": scalar) and the (B, C) bool mask of the selected entries.
    """
    s = as_float(logits)
    observed = observed.bool()
    loss = F.binary_cross_entropy_with_logits(s, observed.to(s.dtype), reduction="none")
    k = min(k, observed.numel())  # beyond the unobserved count, topk picks -inf entries, masked below
    selected = torch.zeros_like(observed)
    if k > 0:
        candidates = torch.where(observed, float("-inf"), loss.detach()).flatten()
        top = torch.topk(candidates, k).indices
        selected = selected.flatten().index_fill(0, top, True).view_as(observed) & ~observed
        replacement = F.binary_cross_entropy_with_logits(s, torch.ones_like(s), reduction="none") if correct else 0.0
        loss = torch.where(selected, replacement, loss)
    return reduce(loss, reduction), selected


def _ceil(value: float) -> int:
    """ceil that ignores float noise (B*C*rate = 3.0000000000000004 -> 3)."""
    return math.ceil(round(value, 9))


class _LargeLoss(SinglePositiveLoss):
    correct = False
    permanent = False

    def __init__(self, delta: float, reduction: Reduction = "mean"):
        super().__init__(reduction)
        if not 0 <= delta <= 1:
            raise ValueError(f"{type(self).__name__}: delta is a fraction in [0, 1] (0.005 = 0.5%), got {delta}")
        self.delta = delta

    def num_selected(self, entries: int) -> int:
        if self.epoch == 0:
            return 0
        rate = self.delta if self.permanent else min(self.epoch * self.delta, 1.0)
        return _ceil(entries * rate)

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        loss, _ = large_loss(logits, observed, self.num_selected(logits.numel()), self.correct, self.reduction)
        return loss


@SPML_LOSSES.register("ll_r")
class LargeLossReject(_LargeLoss):
    """LL-R: the large unobserved losses are left out.

    Args:
        delta: growth of the rejected fraction per epoch.
        reduction: "none" ((B, C)), "mean" (over all B*C entries) or "sum".
    """

    def __init__(self, delta: float = 0.005, reduction: Reduction = "mean"):
        super().__init__(delta, reduction)


@SPML_LOSSES.register("ll_ct")
class LargeLossCorrectTemporary(_LargeLoss):
    """LL-Ct: the large unobserved losses are computed with target 1 in this step.

    Args:
        delta: growth of the corrected fraction per epoch.
        reduction: "none" ((B, C)), "mean" (over all B*C entries) or "sum".
    """

    correct = True

    def __init__(self, delta: float = 0.002, reduction: Reduction = "mean"):
        super().__init__(delta, reduction)


@SPML_LOSSES.register("ll_cp")
class LargeLossCorrectPermanent(_LargeLoss):
    """LL-Cp: as LL-Ct, and the corrected entries are stored in the buffer `flipped` (num_images, C),
    which adds them to the observed positives of every later call (training mode updates it).

    Args:
        num_classes, num_images: size of the table.
        delta: fraction of the batch's entries corrected per step from epoch 1 on.
        reduction: "none" ((B, C)), "mean" (over all B*C entries) or "sum".
    """

    correct = True
    permanent = True

    def __init__(self, num_classes: int, num_images: int, delta: float = 0.001, reduction: Reduction = "mean"):
        super().__init__(delta, reduction)
        self.register_buffer("flipped", torch.zeros(num_images, num_classes, dtype=torch.bool))

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        """LL-Cp loss of a batch; in training mode also stores the newly corrected entries in `flipped`.

        Args:
            logits: (B, C) raw scores.
            observed: (B, C) bool, True at the observed positives (the stored flips are added).
            index: (B,) long, dataset rows of the images (rows of `flipped`; gathered across ranks).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        observed = observed.bool() | self.flipped[index]
        loss, selected = large_loss(logits, observed, self.num_selected(logits.numel()), self.correct, self.reduction)
        if self.training:
            with torch.no_grad():
                rows, flips = gather_across_ranks(index), gather_across_ranks(selected)
                self.flipped[rows] |= flips
        return loss
