"""Dual-weighted metric loss (after Jin et al. 2023, whose exact formula is not public) on prototype distances.

The prototype head returns logits = -d (d_c >= 0: distance of the image embedding to class prototype c),
so -d_c is also the AUROC score. Implemented form, per image i and known class c:

    L = mean_i sum_{c known} w_img(i) * w_cls(c) * [y_ic * d_ic + (1 - y_ic) * max(0, margin - d_ic)]

* w_cls(c) = (1 / P_c) / mean_c'(1 / P_c'): inverse positive frequency from the training counts
  (P_c at least 1), normalised to mean 1; all ones without counts.
* w_img(i) = B * h_i^hardness / sum_j h_j^hardness: the image's own (detached) class-weighted loss h_i
  raised to `hardness` and normalised to mean 1 over the batch; hardness = 0 gives all ones.
* d = max(-logits, 0): a head that returns positive logits cannot drive the positive term below 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spml.losses.common import LOSSES, FullLabelLoss, Reduction, as_float, known_or_all, reduce


def dual_weighted_metric(
    logits: Tensor,
    targets: Tensor,
    known: Tensor | None = None,
    margin: float = 1.0,
    class_weight: Tensor | None = None,
    hardness: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Dual-weighted metric loss per image (formula in the module docstring).

    Args:
        logits: (B, C) = -distance to each class prototype.
        targets: (B, C) in {0, 1}.
        known: (B, C) bool, the entries whose label is known (None: all).
        margin: m of the negative hinge.
        class_weight: (C,) w_cls (None: all ones).
        hardness: exponent of the image weight (0: all ones).
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B,) per image, image weight included; "mean": mean over all B images; "sum": scalar.
    """
    d = (-as_float(logits)).clamp(min=0)
    known = known_or_all(known, d)
    entry = torch.where(targets > 0.5, d, (margin - d).clamp(min=0))
    if class_weight is not None:
        entry = entry * class_weight.to(d.dtype)
    per_image = torch.where(known, entry, 0.0).sum(1)
    if hardness != 0:
        hard = per_image.detach().clamp(min=1e-12) ** hardness
        per_image = per_image * (hard * hard.numel() / hard.sum())
    return reduce(per_image, reduction)


@LOSSES.register("metric")
class DualWeightedMetricLoss(FullLabelLoss):
    """Dual-weighted (class and image) contrastive loss on prototype distances; use with model.head=prototype.

    Args:
        margin: m of the negative hinge.
        hardness: exponent of the image weight (0: all ones).
        pos_counts: (C,) training positives per class, for w_cls (None: all ones).
        reduction: "none" (per image, (B,)), "mean" or "sum".
    """

    def __init__(
        self,
        margin: float = 1.0,
        hardness: float = 1.0,
        pos_counts: Tensor | None = None,
        reduction: Reduction = "mean",
    ):
        super().__init__(reduction)
        self.margin, self.hardness = margin, hardness
        weight = None
        if pos_counts is not None:
            inverse = 1.0 / torch.as_tensor(pos_counts, dtype=torch.float32).clamp(min=1)
            weight = inverse / inverse.mean()
        self.register_buffer("class_weight", weight)

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        """Dual-weighted metric loss of a batch.

        Args:
            logits: (B, C) = -distance to each class prototype.
            targets: (B, C) in {0, 1}.
            known: (B, C) bool, the entries whose label is known (None: all).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B,) with reduction="none".
        """
        return dual_weighted_metric(
            logits, targets, known, self.margin, self.class_weight, self.hardness, self.reduction
        )
