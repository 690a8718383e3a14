"""Supervised objectives (full or partially known labels, with or without a weak-to-strong consistency stream)
and the single-positive loss alone."""

from __future__ import annotations

from torch import Tensor, nn

from spml.objectives.base import OBJECTIVES, Objective, frozen_norm_statistics, ramp


@OBJECTIVES["supervised"].register("loss")
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
        """One training step's loss on the weak view over the known labels.

        Args:
            batch: image (B, 1, H, W) uint8 or float, targets (B, C), known (B, C) bool.

        Returns:
            loss (scalar), logits (B, C) and components {"sup": the detached loss}.
        """
        x = self.weak(self.to_input(batch["image"]))
        logits = self.classifier(x)
        loss = self.loss(logits, batch["targets"], batch["known"])
        return {"loss": loss, "logits": logits, "components": {"sup": loss.detach()}}


class SupervisedConsistencyObjective(SupervisedObjective):
    """Full labels with MPC's image-level stream: L = loss(z_w, y) + w(t) loss(z_s, y).

    The full-label counterpart of MPC's IPC stream, so that a full-label reference gets the same extra
    augmentation MPC does: the strong view (random elastic deformation included) passes through the backbone
    without updating batch-norm running statistics, is trained with the same loss towards the labels (the
    best label MPC's stream could have: its pseudo-labels with every hidden positive found), and its weight
    follows MPC's warm-up and linear ramp.

    Args:
        classifier: float images in [0, 1] -> logits (B, C).
        loss: forward(logits (B,C), targets (B,C), known (B,C) bool) -> scalar (spml.losses.LOSSES).
        weak, strong: the weak and strong augmentation pipelines.
        weight: the strong stream's weight after the ramp.
        warmup_epochs: weak view only before this. rampup_epochs: the weight ramps linearly after it.
    """

    def __init__(
        self,
        classifier: nn.Module,
        loss: nn.Module,
        weak: nn.Module,
        strong: nn.Module,
        weight: float = 0.2,
        warmup_epochs: float = 1.0,
        rampup_epochs: float = 2.0,
    ):
        super().__init__(classifier, loss, weak)
        self.strong, self.weight = strong, weight
        self.warmup_epochs, self.rampup_epochs = warmup_epochs, rampup_epochs

    def forward(self, batch: dict[str, Tensor]) -> dict:
        """One training step's loss: the weak view's loss plus the ramped loss of the strong view towards the labels.

        Args:
            batch: image (B, 1, H, W) uint8 or float, targets (B, C), known (B, C) bool.

        Returns:
            loss (scalar), logits (B, C) of the weak view and components {"sup", "strong"} (detached).
        """
        out = super().forward(batch)
        with frozen_norm_statistics(self.classifier):
            strong_logits = self.classifier(self.strong(self.to_input(batch["image"])))
        consistency = self.loss(strong_logits, batch["targets"], batch["known"])
        weight = ramp(self.weight, self.epochs_done(), self.warmup_epochs, self.rampup_epochs)
        out["loss"] = out["loss"] + weight * consistency
        out["components"]["strong"] = consistency.detach()
        return out


@OBJECTIVES["supervised"].register("consistency")
def supervised_consistency(
    classifier: nn.Module,
    loss: nn.Module,
    weak: nn.Module,
    strong: nn.Module,
    ipc_weight: float,
    warmup_epochs: float,
    rampup_epochs: float,
) -> SupervisedConsistencyObjective:
    """SupervisedConsistencyObjective with MPC's image-level settings: the full-label reference with MPC's extra
    augmentation.

    Args:
        classifier: the spml.models.Classifier.
        loss: the full-label loss.
        weak, strong: the views (strong: with or without RED).
        ipc_weight: weight of the strong view's consistency term (spml.mpc.ipc_weight).
        warmup_epochs: the loss alone before this (spml.mpc.warmup_epochs).
        rampup_epochs: the consistency weight ramps linearly over these epochs (spml.mpc.rampup_epochs).

    Returns:
        The SupervisedConsistencyObjective.
    """
    return SupervisedConsistencyObjective(classifier, loss, weak, strong, ipc_weight, warmup_epochs, rampup_epochs)


@OBJECTIVES["spml"].register("loss")
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
        """Record the training progress and pass the epoch on to the loss (`set_epoch`).

        Args:
            step: batches trained including this one (1 for the first).
            steps_per_epoch: batches per epoch.
        """
        super().set_progress(step, steps_per_epoch)
        self.loss.set_epoch(self.epoch)

    def forward(self, batch: dict[str, Tensor]) -> dict:
        """One training step's single-positive loss on the weak view.

        Args:
            batch: image (B, 1, H, W) uint8 or float, observed (B, C) bool, index (B,) long; nothing else is read.

        Returns:
            loss (scalar), logits (B, C) and components {"base": the detached loss}.
        """
        x = self.weak(self.to_input(batch["image"]))
        logits = self.classifier(x)
        loss = self.loss(logits, batch["observed"], batch["index"])
        return {"loss": loss, "logits": logits, "components": {"base": loss.detach()}}
