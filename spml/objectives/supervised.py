"""Supervised objective (full or partially known labels) and the single-positive loss alone."""
from __future__ import annotations

from torch import Tensor, nn

from spml.objectives.base import Objective


class SupervisedObjective(Objective):
    """One weak view, any full-label loss, the `known` mask respected.

    Args:
        classifier: float images in [0, 1] -> logits (B, C).
        loss: forward(logits (B,C), targets (B,C), known (B,C) bool) -> scalar (spml.losses.LOSSES).
        weak: the weak augmentation pipeline.
    """

    def __init__(self, classifier: nn.Module, loss: nn.Module, weak: nn.Module):
        super().__init__(classifier, weak)
        self.loss = loss

    def forward(self, batch: dict[str, Tensor]) -> dict:
        x = self.weak(self.to_input(batch["image"]))
        logits = self.classifier(x)
        loss = self.loss(logits, batch["targets"], batch["known"])
        return {"loss": loss, "logits": logits, "components": {"sup": loss.detach()}}


class SinglePositiveObjective(Objective):
    """A published single-positive loss (AN, AN-LS, WAN, EPR, ROLE, EM, EM+APL, LL-*) alone on one weak view.

    Reads only `image`, `observed` and `index` from the batch: hidden labels never reach the loss.

    Args:
        classifier: float images in [0, 1] -> logits (B, C).
        loss: forward(logits (B,C), observed (B,C) bool, index (B,) long) -> scalar, plus set_epoch(epoch)
            (spml.losses.SPML_LOSSES).
        weak: the weak augmentation pipeline.
    """

    def __init__(self, classifier: nn.Module, loss: nn.Module, weak: nn.Module):
        super().__init__(classifier, weak)
        self.loss = loss

    def set_progress(self, step: int, steps_per_epoch: int) -> None:
        super().set_progress(step, steps_per_epoch)
        self.loss.set_epoch(self.epoch)

    def forward(self, batch: dict[str, Tensor]) -> dict:
        x = self.weak(self.to_input(batch["image"]))
        logits = self.classifier(x)
        loss = self.loss(logits, batch["observed"], batch["index"])
        return {"loss": loss, "logits": logits, "components": {"base": loss.detach()}}
