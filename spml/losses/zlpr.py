"""ZLPR (Su et al. 2022) and focal ZLPR (Hanif et al. 2025): multi-label ranking around threshold 0."""

from __future__ import annotations

import torch
from torch import Tensor

from spml.losses.common import LOSSES, FullLabelLoss, Reduction, as_float, known_or_all, reduce


def zlpr(
    logits: Tensor,
    targets: Tensor,
    known: Tensor | None = None,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """ZLPR per row: log(1 + sum_neg e^{s/T}) + log(1 + sum_pos e^{-s/T}) over the row's known entries.

    A row with no known positive has positive term 0; a row with nothing known has loss 0.

    Args:
        logits: (B, C) raw scores.
        targets: (B, C) in {0, 1}.
        known: (B, C) bool, the entries whose label is known (None: all).
        temperature: T; below 1 gives focal ZLPR.
        reduction: "none", "mean" or "sum".

    Returns:
        The loss under `reduction`.

    Shape:
        "none": (B,) per row; "mean": mean over all B rows; "sum": scalar.

    Example:
        REFERENCE.md's check values (ZLPR per sample 0.7985077, 0.6547198; mean 0.7266137; FZLPR T=0.5 0.3382417):

        >>> import torch
        >>> p = torch.tensor([[0.9, 0.2, 0.6], [0.3, 0.8, 0.1]], dtype=torch.float64)
        >>> y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
        >>> print(f"{zlpr(torch.logit(p), y).item():.7f}")
        0.7266137
        >>> [round(v, 7) for v in zlpr(torch.logit(p), y, reduction="none").tolist()]
        [0.7985077, 0.6547198]
        >>> print(f"{zlpr(torch.logit(p), y, temperature=0.5).item():.7f}")
        0.3382417
    """
    s = as_float(logits) / temperature
    known = known_or_all(known, s)
    positive = targets > 0.5
    pos = torch.where(known & positive, -s, float("-inf"))
    neg = torch.where(known & ~positive, s, float("-inf"))
    zero = s.new_zeros(s.shape[0], 1)
    rows = torch.logsumexp(torch.cat([pos, zero], 1), 1) + torch.logsumexp(torch.cat([neg, zero], 1), 1)
    return reduce(rows, reduction)


@LOSSES.register("zlpr")
class ZLPR(FullLabelLoss):
    """ZLPR on logits / temperature (see `zlpr`), mean over rows.

    `scale_by_temperature` returns T * L, which undoes the 1/T gradient scale of a small temperature.

    Args:
        temperature: T > 0 (a ValueError otherwise).
        scale_by_temperature: multiply the loss by T.
        reduction: "none" (per row, (B,)), "mean" or "sum".
    """

    def __init__(self, temperature: float = 1.0, scale_by_temperature: bool = False, reduction: Reduction = "mean"):
        super().__init__(reduction)
        if temperature <= 0:
            raise ValueError(f"{type(self).__name__}: temperature must be > 0, got {temperature}")
        self.temperature, self.scale_by_temperature = temperature, scale_by_temperature

    def forward(self, logits: Tensor, targets: Tensor, known: Tensor | None = None) -> Tensor:
        """ZLPR of a batch (times T with `scale_by_temperature`).

        Args:
            logits: (B, C) raw scores.
            targets: (B, C) in {0, 1}.
            known: (B, C) bool, the entries whose label is known (None: all).

        Returns:
            The loss under `reduction`.

        Shape:
            scalar; (B,) with reduction="none".
        """
        loss = zlpr(logits, targets, known, self.temperature, self.reduction)
        return self.temperature * loss if self.scale_by_temperature else loss


@LOSSES.register("fzlpr")
class FocalZLPR(ZLPR):
    """Focal ZLPR: ZLPR with a temperature below 1 (Hanif et al.'s T is not public; 0.5 by default).

    Args:
        temperature: T > 0.
        scale_by_temperature: multiply the loss by T.
        reduction: "none" (per row, (B,)), "mean" or "sum".
    """

    def __init__(self, temperature: float = 0.5, scale_by_temperature: bool = False, reduction: Reduction = "mean"):
        super().__init__(temperature, scale_by_temperature, reduction)
