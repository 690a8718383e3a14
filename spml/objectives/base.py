"""What every objective shares: the classifier, uint8 -> float conversion, weak view, evaluation path."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from spml.augment import Normalize, build_weak, tta_predict
from spml.config import Config
from spml.models import Classifier, build_classifier, build_ema


class Objective(nn.Module):
    """Base objective: owns every trainable part so one `accelerator.prepare` covers them.

    Subclasses implement `forward(batch) -> {"loss", "logits", "components"}`. The trainer calls
    `set_epoch` at each epoch start, `after_optimizer_step` after each optimizer step and
    `predict` for evaluation; it never branches on the mode.
    """

    def __init__(self, config: Config, num_classes: int):
        super().__init__()
        self.config = config
        self.classifier: Classifier = build_classifier(config.model, num_classes)
        if config.model.channels_last:
            self.classifier = self.classifier.to(memory_format=torch.channels_last)
        self.weak = build_weak(config.augment)
        self.normalize = Normalize(config.augment.mean, config.augment.std)
        self.eval_ema = build_ema(self.classifier, config.model.ema_decay) if config.model.ema_decay > 0 else None
        self.register_buffer("micro_step", torch.zeros((), dtype=torch.long))
        self.epoch = 0
        self.steps_per_epoch = 1

    def to_input(self, images: Tensor) -> Tensor:
        """uint8 (B,1,H,W) -> float (B,1,H,W) in [0, 1] on the model's device."""
        return images.float().div_(255.0)

    def model_input(self, x: Tensor) -> Tensor:
        """Normalise an augmented float batch and lay it out for the backbone."""
        x = self.normalize(x)
        if self.config.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def set_epoch(self, epoch: int, steps_per_epoch: int) -> None:
        """Called by the trainer at each epoch start (0-based)."""
        self.epoch, self.steps_per_epoch = epoch, max(steps_per_epoch, 1)

    def progress(self) -> Tensor:
        """Training progress in epochs as a device scalar (no host sync)."""
        return self.micro_step.float() / self.steps_per_epoch

    def after_optimizer_step(self) -> None:
        """Update EMA copies after each optimizer step."""
        if self.eval_ema is not None:
            self.eval_ema.update(self.classifier)

    def count_step(self) -> None:
        if self.training:
            self.micro_step += 1

    @torch.no_grad()
    def predict(self, images: Tensor, tta: tuple[str, ...] = ()) -> Tensor:
        """Evaluation logits for uint8 images (B,1,H,W) -> (B,C); EMA weights when configured."""
        model = self.eval_ema.module if self.eval_ema is not None else self.classifier
        x = self.to_input(images)
        if not tta:
            return model(self.model_input(x)).float()
        return tta_predict(lambda v: model(self.model_input(v)).float(), x, tta, self.config.augment.tta_average)
