"""MPC's pseudo-label strategies, each a small registered object (no string dispatch inside the objective).

* THRESHOLDS: where an unobserved entry becomes pseudo-positive / pseudo-negative. `update(probs, observed)`
  records a batch (state changes only there); calling the object returns the thresholds (a pure read).
* TARGETS: what the consistency streams are trained towards (hard pseudo-labels or the teacher's probabilities).
* CONSISTENCY: the loss of one consistency stream (the base loss with pseudo-positives, or a masked BCE).
* BASE_TERMS: what the base loss on the weak view becomes once warm-up is over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from spml.losses.bce import bce
from spml.registry import Registry

THRESHOLDS = Registry("MPC threshold")
TARGETS = Registry("MPC target")
CONSISTENCY = Registry("MPC consistency")
BASE_TERMS = Registry("MPC base term")


class PseudoLabels(NamedTuple):
    """The weak view's pseudo-labels for one batch; tensors (B, C), no gradient.

    positive: unobserved entries marked positive. target: what a stream is trained towards (float).
    mask: the entries a masked loss counts. active: warm-up is over (before it, nothing but the observed).
    """

    positive: Tensor
    target: Tensor
    mask: Tensor
    active: bool


@contextmanager
def reads_state_only(loss: nn.Module) -> Iterator[None]:
    """Put a loss in eval mode inside the context, restoring its mode on exit.

    Stateful single-positive losses (EM+APL, LL-Cp) update their tables in training mode only;
    under this a consistency stream uses the tables without recording its own predictions in them.

    Args:
        loss: the loss module.

    Yields:
        Nothing.
    """
    was_training = loss.training
    loss.train(False)
    try:
        yield
    finally:
        loss.train(was_training)


# ------------------------------------------------------------------------------------------------ thresholds
@THRESHOLDS.register("global")
class GlobalThresholds(nn.Module):
    """One positive and one negative threshold for every class.

    Args:
        tau_pos: probability at or above which an unobserved entry is pseudo-positive.
        tau_neg: probability at or below which it is pseudo-negative.
    """

    def __init__(self, tau_pos: float = 0.9, tau_neg: float = 0.1):
        super().__init__()
        self.tau_pos, self.tau_neg = float(tau_pos), float(tau_neg)

    def update(self, probs: Tensor, observed: Tensor) -> None:
        """Nothing to remember.

        Args:
            probs: teacher probabilities (unused).
            observed: observed-label mask (unused).
        """

    def forward(self) -> tuple[float, float]:
        return self.tau_pos, self.tau_neg


@THRESHOLDS.register("class_prior")
class ClassPriorThresholds(nn.Module):
    """Per-class quantiles of recently seen teacher probabilities (distribution alignment).

    The hidden-positive rate per class is the class prior minus the observed-positive rate (renormalised to
    the unobserved entries); the thresholds are chosen so that `prior_fraction` of the estimated hidden
    positives are marked positive and `negative_fraction` of the estimated true negatives negative.
    Observed entries are not remembered. A class with no remembered value yet gets (1, 0): nothing marked.

    Args:
        class_prior: (C,) prevalence estimate (e.g. of the labelled validation split).
        observed_rate: (C,) observed positives per training image.
        prior_fraction, negative_fraction: shares described above, in [0, 1].
        memory_size: rows of teacher probabilities remembered (a ring buffer), >= 1.

    Shape:
        update: probs (B, C) float, observed (B, C) bool. forward: -> (positive (C,), negative (C,)).
    """

    def __init__(
        self,
        class_prior: Tensor,
        observed_rate: Tensor,
        prior_fraction: float = 0.5,
        negative_fraction: float = 0.7,
        memory_size: int = 256,
    ):
        super().__init__()
        if memory_size < 1:
            raise ValueError(f"memory_size must be >= 1, got {memory_size}")
        observed_rate = torch.as_tensor(observed_rate).float()
        hidden_rate = (
            (torch.as_tensor(class_prior).float() - observed_rate) / (1 - observed_rate).clamp(min=1e-6)
        ).clamp(0, 1)
        num_classes = hidden_rate.shape[0]
        self.register_buffer("positive_level", (1 - prior_fraction * hidden_rate).clamp(0, 1))
        self.register_buffer("negative_level", (negative_fraction * (1 - hidden_rate)).clamp(0, 1))
        self.register_buffer("memory_probs", torch.full((memory_size, num_classes), float("nan")))
        self.register_buffer("memory_cursor", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, probs: Tensor, observed: Tensor) -> None:
        """Write the batch's unobserved probabilities into the ring buffer (on the device, no host read).

        Args:
            probs: teacher probabilities, (B, C) float.
            observed: the observed entries (not remembered), (B, C) bool.
        """
        size = self.memory_probs.shape[0]
        rows = (self.memory_cursor + torch.arange(probs.shape[0], device=probs.device)) % size
        self.memory_probs[rows] = torch.where(observed, float("nan"), probs)
        self.memory_cursor.copy_((self.memory_cursor + probs.shape[0]) % size)

    @torch.no_grad()
    def forward(self) -> tuple[Tensor, Tensor]:
        levels = torch.cat([self.positive_level, self.negative_level])
        quantiles = torch.nanquantile(self.memory_probs, levels, dim=0)  # (2C, C)
        count = self.positive_level.shape[0]
        positive = torch.nan_to_num(quantiles[:count].diagonal(), nan=1.0)
        negative = torch.nan_to_num(quantiles[count:].diagonal(), nan=0.0)
        return positive.clamp(min=negative + 1e-6), negative


# ------------------------------------------------------------------------------------------------ targets
@TARGETS.register("hard")
class HardTargets:
    """Target 1 at observed and pseudo-positive entries, else 0; only confident entries count."""

    def __call__(
        self, probs: Tensor, observed: Tensor, unobserved: Tensor, positive: Tensor, confident: Tensor
    ) -> tuple[Tensor, Tensor]:
        return (observed | positive).float(), confident


@TARGETS.register("soft")
class SoftTargets:
    """Target = the teacher probability itself (1 at observed entries), every entry counted once warm-up is over:
    consistency without a label decision, so a base loss that keeps unobserved entries uncertain (EM) is not
    pulled back towards "negative"."""

    def __call__(
        self, probs: Tensor, observed: Tensor, unobserved: Tensor, positive: Tensor, confident: Tensor
    ) -> tuple[Tensor, Tensor]:
        return torch.where(observed, 1.0, probs), observed | unobserved


# ------------------------------------------------------------------------------------------------ consistency
@CONSISTENCY.register("base")
class BaseLossConsistency:
    """The base loss with pseudo-positives counted as observed (entries that are neither keep the base loss's own
    treatment, e.g. EM's entropy); stateful loss tables are read, not written (they record the weak view only)."""

    def __call__(
        self, logits: Tensor, labels: PseudoLabels, base: nn.Module, observed: Tensor, index: Tensor
    ) -> Tensor:
        with reads_state_only(base):
            return base(logits, observed | labels.positive, index)


@CONSISTENCY.register("bce")
class MaskedBCEConsistency:
    """Masked BCE to the pseudo-label targets over the counted entries."""

    def __call__(
        self, logits: Tensor, labels: PseudoLabels, base: nn.Module, observed: Tensor, index: Tensor
    ) -> Tensor:
        return bce(logits, labels.target, labels.mask)  # masked BCE: mean over the mask


# ------------------------------------------------------------------------------------------------ base terms
@BASE_TERMS.register("loss")
class BaseLoss:
    """The base loss on the weak view, unchanged after warm-up."""

    def __call__(
        self, logits: Tensor, labels: PseudoLabels, base: nn.Module, observed: Tensor, index: Tensor
    ) -> Tensor:
        return base(logits, observed, index)


@BASE_TERMS.register("positives")
class BaseLossWithPseudoPositives:
    """The base loss with pseudo-positives counted as observed (they also correct its assumed negatives)."""

    def __call__(
        self, logits: Tensor, labels: PseudoLabels, base: nn.Module, observed: Tensor, index: Tensor
    ) -> Tensor:
        return base(logits, observed | labels.positive, index)


@BASE_TERMS.register("confident")
class ConfidentBCE:
    """After warm-up, BCE on the weak view over the confident entries only (uncertain unobserved entries are no
    longer assumed negative); the base loss still runs, so stateful tables keep recording."""

    def __call__(
        self, logits: Tensor, labels: PseudoLabels, base: nn.Module, observed: Tensor, index: Tensor
    ) -> Tensor:
        loss = base(logits, observed, index)
        return bce(logits, labels.target, labels.mask) if labels.active else loss  # masked: mean over the mask
