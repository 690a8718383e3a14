"""Exponential moving average of a model's weights (timm ModelEmaV3) that stays frozen and in eval mode."""

from __future__ import annotations

from timm.utils import ModelEmaV3
from torch import nn


class ModelEma(ModelEmaV3):
    """ModelEmaV3 whose copy never trains: no gradients (so optimizers and DDP ignore it) and eval mode
    even when a parent module calls .train(). `module` is the averaged model; state_dict round-trips.

    Args:
        model: the module to average (deep-copied now; `.update(model)` after each optimizer step).
        decay: weight of the old average per update, in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, decay=decay)
        self.module.requires_grad_(False)

    def train(self, mode: bool = True) -> ModelEma:
        """Stay in eval mode whatever `mode` asks.

        Args:
            mode: ignored.

        Returns:
            self.
        """
        return super().train(False)


def build_ema(model: nn.Module, decay: float) -> ModelEma:
    """EMA copy of `model`; call `.update(model)` after each optimizer step.

    Args:
        model: the module to average.
        decay: in (0, 1); ValueError otherwise.

    Returns:
        The ModelEma.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
    return ModelEma(model, decay)
