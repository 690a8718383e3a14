"""Feature-level perturbation for the FPC stream (UniMatch-style): channel dropout and Gaussian noise."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FeaturePerturbation(nn.Module):
    """Dropout (whole channels: Dropout2d, as UniMatch; or single values), then multiplicative noise
    f * (1 + noise_std * N(0, 1)); identity in eval mode.

    Args:
        dropout: dropout rate (0 = off).
        noise_std: std of the multiplicative Gaussian noise (0 = off).
        channelwise: drop whole channels (Dropout2d); False drops single values (Dropout), a milder perturbation
            of a small feature map (2 x 2 for resnet10t at 64 px, where dropping a channel removes it from
            every position).

    Shape:
        (B, F, h, w) -> (B, F, h, w).
    """

    def __init__(self, dropout: float = 0.5, noise_std: float = 0.0, channelwise: bool = True):
        super().__init__()
        drop = nn.Dropout2d if channelwise else nn.Dropout
        self.dropout = drop(dropout) if dropout > 0 else nn.Identity()
        self.noise_std = noise_std

    def forward(self, features: Tensor) -> Tensor:
        """Perturb feature maps in training mode; identity in eval mode.

        Args:
            features: backbone feature maps.

        Returns:
            The perturbed features.

        Shape:
            (B, F, h, w) -> (B, F, h, w).
        """
        if not self.training:
            return features
        features = self.dropout(features)
        if self.noise_std > 0:
            features = features * (1 + self.noise_std * torch.randn_like(features))
        return features
