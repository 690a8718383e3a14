"""Supervised objective (full or partially known labels) and the single-positive baselines."""
from __future__ import annotations

from torch import Tensor

from spml.config import Config
from spml.losses import build_loss, build_spml_loss
from spml.objectives.base import Objective
from spml.objectives.registry import OBJECTIVES, DataStats


@OBJECTIVES.register("supervised")
class SupervisedObjective(Objective):
    """One weak view, any registered full-label loss, `known` mask respected."""

    def __init__(self, config: Config, stats: DataStats):
        super().__init__(config, stats.num_classes)
        self.loss = build_loss(config.loss.name, config.loss.params, pos_counts=stats.pos_counts,
                               num_samples=stats.num_images)

    def forward(self, batch: dict[str, Tensor]) -> dict:
        self.count_step()
        x = self.weak(self.to_input(batch["image"]))
        logits = self.classifier(self.model_input(x))
        loss = self.loss(logits, batch["targets"], batch["known"])
        return {"loss": loss, "logits": logits, "components": {"sup": loss.detach()}}


@OBJECTIVES.register("spml_baseline")
class SinglePositiveObjective(Objective):
    """A published single-positive loss (AN, AN-LS, WAN, EPR, ROLE, EM, EM+APL, LL-*) on one weak view.

    Reads only `image`, `observed` and `index` from the batch: hidden labels never reach the loss.
    """

    def __init__(self, config: Config, stats: DataStats):
        super().__init__(config, stats.num_classes)
        self.loss = build_spml_loss(config.spml.method, config.spml.params, num_classes=stats.num_classes,
                                    num_images=stats.num_images, expected_positives=stats.expected_positives)

    def set_epoch(self, epoch: int, steps_per_epoch: int) -> None:
        super().set_epoch(epoch, steps_per_epoch)
        self.loss.set_epoch(epoch)

    def forward(self, batch: dict[str, Tensor]) -> dict:
        self.count_step()
        x = self.weak(self.to_input(batch["image"]))
        logits = self.classifier(self.model_input(x))
        loss = self.loss(logits, batch["observed"], batch["index"])
        return {"loss": loss, "logits": logits, "components": {"base": loss.detach()}}
