"""Entropy maximisation (EM) and EM with asymmetric pseudo-labels (APL) (Zhou et al. 2022).

Entry losses are averaged over all B*C entries; eps = 1e-5 reproduces the original `-log(x + 1e-5)`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spml.losses.common import (
    SPML_LOSSES,
    Reduction,
    SinglePositiveLoss,
    as_float,
    gather_across_ranks,
    neg_log_probs,
    reduce,
)


def entropy_maximisation(
    logits: Tensor,
    observed: Tensor,
    alpha: float = 0.1,
    eps: float = 1e-5,
    soft_target: Tensor | None = None,
    beta: float = 0.2,
    reduction: Reduction = "mean",
) -> Tensor:
    """EM (+ APL's soft negatives): observed -log p, unobserved -alpha H(p), soft negatives a weighted BCE.

    Soft negatives (finite `soft_target` q, not observed): beta [q(-log p) + (1-q)(-log(1-p))]; other unobserved:
    -alpha H(p).

    Args:
        logits: (B, C) raw scores.
        observed: (B, C) bool, True at the observed positives.
        alpha: weight of the entropy term.
        eps: added inside the logs, -log(x + eps).
        soft_target: (B, C) stored targets of APL's soft negatives, NaN where none (None: no soft negatives).
        beta: weight of the soft negatives' BCE.
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B, C) per entry; "mean": mean over all B*C entries; "sum": scalar.
    """
    s = as_float(logits)
    p = torch.sigmoid(s)
    nl_pos, nl_neg = neg_log_probs(s, eps)
    observed = observed.bool()
    loss = torch.where(observed, nl_pos, -alpha * (p * nl_pos + (1 - p) * nl_neg))
    if soft_target is not None:
        soft = torch.isfinite(soft_target) & ~observed
        q = torch.where(soft, soft_target, 0.0).to(s.dtype)
        loss = torch.where(soft, beta * (q * nl_pos + (1 - q) * nl_neg), loss)
    return reduce(loss, reduction)


@SPML_LOSSES.register("em")
class EntropyMaximisation(SinglePositiveLoss):
    """EM: observed positives by BCE, unobserved entries by maximising their prediction entropy.

    Args:
        alpha: weight of the entropy term.
        eps: added inside the logs.
        reduction: "none" ((B, C)), "mean" (over all B*C entries) or "sum".
    """

    def __init__(self, alpha: float = 0.1, eps: float = 1e-5, reduction: Reduction = "mean"):
        super().__init__(reduction)
        self.alpha, self.eps = alpha, eps

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        """EM loss of a batch.

        Args:
            logits: (B, C) raw scores.
            observed: (B, C) bool, True at the observed positives.
            index: (B,) dataset rows of the images (unused).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        return entropy_maximisation(logits, observed, self.alpha, self.eps, reduction=self.reduction)


@SPML_LOSSES.register("em_apl")
class EntropyMaximisationAPL(SinglePositiveLoss):
    """EM + APL: EM whose lowest-p unobserved entries become soft negatives after a warm-up.

    Forward (training mode) records p and the observed mask of each image in buffers. At set_epoch(e) with
    e >= warmup_epochs (once per epoch, also across resumes), for each class the `fraction` (one number, or one
    per class) of its recorded unobserved entries with the lowest recorded p, among those not yet marked,
    become soft negatives whose target is that stored p (kept from then on; buffer `soft_target`, NaN = none).
    Soft negatives get beta * BCE to their target instead of the entropy term.

    Args:
        num_classes, num_images: size of the tables.
        alpha: weight of the entropy term.
        beta: weight of the soft negatives' BCE.
        fraction: share of each class's recorded unobserved entries marked per epoch (one value or C, each in
            [0, 1]; a ValueError otherwise).
        warmup_epochs: epochs before the first marking.
        eps: added inside the logs.
        reduction: "none" ((B, C)), "mean" (over all B*C entries) or "sum".
    """

    def __init__(
        self,
        num_classes: int,
        num_images: int,
        alpha: float = 0.1,
        beta: float = 0.2,
        fraction: float | list[float] = 0.1,
        warmup_epochs: int = 1,
        eps: float = 1e-5,
        reduction: Reduction = "mean",
    ):
        super().__init__(reduction)
        fraction = torch.as_tensor(fraction, dtype=torch.float64).expand(num_classes)
        if not ((fraction >= 0) & (fraction <= 1)).all():
            raise ValueError(
                f"em_apl: fraction must be in [0, 1] (one value or {num_classes}), got {fraction.tolist()}"
            )
        self.alpha, self.beta, self.warmup_epochs, self.eps = alpha, beta, warmup_epochs, eps
        self.register_buffer("fraction", fraction.float().clone(), persistent=False)  # config, not state
        nan_table = torch.full((num_images, num_classes), float("nan"))
        self.register_buffer("recorded_probs", nan_table.clone())
        self.register_buffer("recorded_observed", torch.zeros(num_images, num_classes, dtype=torch.bool))
        self.register_buffer("soft_target", nan_table)
        self.register_buffer("marked_epoch", torch.tensor(-1))

    def forward(self, logits: Tensor, observed: Tensor, index: Tensor) -> Tensor:
        """EM + APL loss of a batch; in training mode also records p and the observed mask of its images.

        Args:
            logits: (B, C) raw scores.
            observed: (B, C) bool, True at the observed positives.
            index: (B,) long, dataset rows of the images (rows of the tables; gathered across ranks).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B, C) with reduction="none".
        """
        if self.training:
            with torch.no_grad():
                rows = gather_across_ranks(index)
                probs = torch.sigmoid(logits.detach().to(self.recorded_probs.dtype))
                self.recorded_probs[rows] = gather_across_ranks(probs)
                self.recorded_observed[rows] = gather_across_ranks(observed.bool())
        return entropy_maximisation(
            logits, observed, self.alpha, self.eps, self.soft_target[index], self.beta, self.reduction
        )

    def set_epoch(self, epoch: int) -> None:
        """Record the epoch; from `warmup_epochs` on, mark soft negatives once per epoch.

        Args:
            epoch: 0-based epoch index.
        """
        super().set_epoch(epoch)
        if epoch >= self.warmup_epochs and epoch > int(self.marked_epoch):
            self.mark_soft_negatives()
            self.marked_epoch.fill_(epoch)

    @torch.no_grad()
    def mark_soft_negatives(self) -> None:
        """Mark per class the lowest recorded p among unmarked unobserved entries (see the class docstring)."""
        unobserved = torch.isfinite(self.recorded_probs) & ~self.recorded_observed
        quota = (self.fraction * unobserved.sum(0)).floor().long()  # (C,) new soft negatives per class
        candidate = unobserved & torch.isnan(self.soft_target)
        ranked, order = torch.where(candidate, self.recorded_probs, float("inf")).sort(0)
        rank = torch.arange(ranked.shape[0], device=ranked.device)[:, None]
        chosen_sorted = (rank < quota[None, :]) & torch.isfinite(ranked)
        chosen = torch.zeros_like(candidate).scatter_(0, order, chosen_sorted)
        self.soft_target.copy_(torch.where(chosen, self.recorded_probs, self.soft_target))
