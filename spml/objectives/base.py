"""What every objective shares: the classifier, the weak view, uint8 -> float, the training progress."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from torch import Tensor, nn

from spml.models.inference import to_unit_range
from spml.registry import Registry

# training mode -> objective name -> builder(classifier, loss, weak, **the arguments it names); spml.factories offers
# the strong view, every spml.mpc.* value and the dataset facts (num_classes, class_prior, observed_rate)
OBJECTIVES = {"supervised": Registry("supervised objective"), "spml": Registry("single-positive objective")}


class Objective(nn.Module):
    """Base objective: receives every trainable part so one `accelerator.prepare` covers them.

    Subclasses implement `forward(batch) -> {"loss", "logits", "components"}` (components: detached scalars
    the trainer logs). The trainer calls `set_progress(step, steps_per_epoch)` before each training forward
    and `after_optimizer_step()` after each optimizer update; it never branches on the objective.
    Evaluation does not go through the objective: it scores `classifier` (or its EMA) alone.

    Args:
        classifier: float images in [0, 1] -> logits (spml.models.Classifier).
        weak: the weak augmentation pipeline (float (B,1,H,W) in [0, 1] -> same).
    """

    def __init__(self, classifier: nn.Module, weak: nn.Module):
        super().__init__()
        self.classifier, self.weak = classifier, weak
        self.step, self.steps_per_epoch = 0, 1

    @staticmethod
    def to_input(images: Tensor) -> Tensor:
        """uint8 images -> float images in [0, 1].

        Args:
            images: uint8 images.

        Returns:
            The images as floats in [0, 1].

        Shape:
            images (B, 1, H, W) uint8 -> (B, 1, H, W) float.
        """
        return to_unit_range(images)

    def set_progress(self, step: int, steps_per_epoch: int) -> None:
        """Record the training progress; called by the trainer before each training forward.

        Args:
            step: the batches trained including this one (1 for the first), so `step / steps_per_epoch` is the
                progress in epochs at its end.
            steps_per_epoch: batches per epoch (values below 1 count as 1).
        """
        self.step, self.steps_per_epoch = int(step), max(int(steps_per_epoch), 1)

    @property
    def epoch(self) -> int:
        """0-based epoch of the current step."""
        return max(self.step - 1, 0) // self.steps_per_epoch

    def epochs_done(self) -> np.float32:
        """Progress in epochs, in float32: schedules computed from it (warm-up, ramps) equal the float32 device
        arithmetic they replace, bit for bit, without a device tensor or a host read in the step."""
        return np.float32(self.step) / np.float32(self.steps_per_epoch)

    def after_optimizer_step(self) -> None:
        """Called after each optimizer update (an EMA teacher follows the classifier here)."""


def ramp(weight: float, epochs_done: np.float32, warmup_epochs: float, rampup_epochs: float) -> float:
    """A warm-up then linear ramp-up weight: the consistency weights of MPC and of the supervised consistency objective.

    weight * clamp((t - warmup) / rampup, 0, 1) at t = `epochs_done` (a step function at the warm-up's end
    when rampup_epochs <= 0), in float32 like Objective.epochs_done.

    Args:
        weight: the full weight, reached at the ramp-up's end.
        epochs_done: training progress in epochs (Objective.epochs_done).
        warmup_epochs: epochs with weight 0.
        rampup_epochs: epochs of the linear ramp after the warm-up (<= 0: a step).

    Returns:
        The weight at `epochs_done`.
    """
    t = epochs_done - np.float32(warmup_epochs)
    if rampup_epochs <= 0:
        return float(np.float32(weight) * np.float32(t >= 0))
    return float(np.float32(weight) * np.clip(t / np.float32(rampup_epochs), np.float32(0), np.float32(1)))


@contextmanager
def frozen_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Batch norms normalise with batch statistics but leave their running statistics untouched.

    Args:
        module: the module whose training-mode batch norms are frozen (momentum 0) inside the context.

    Yields:
        Nothing; the momenta are restored on exit.

    The strong view passes through the backbone under this: its heavy intensity/elastic changes
    would otherwise shift the running statistics that evaluation on clean images uses, and mixing
    weak and strong images in one batch-norm batch measurably hurt (see docs/results.md).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
