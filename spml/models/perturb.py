"""Feature-level perturbation for the FPC stream (UniMatch-style): channel dropout and Gaussian noise."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class FeaturePerturbation(nn.Module):
    """Dropout2d(dropout), then multiplicative noise f * (1 + noise_std * N(0, 1)); identity in eval mode.

    Args:
        dropout: channel dropout rate (0 = off).
        noise_std: std of the multiplicative Gaussian noise (0 = off).

    Shape:
        (B, F, h, w) -> (B, F, h, w).
    """

    def __init__(self, dropout: float = 0.5, noise_std: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.noise_std = noise_std

    def forward(self, features: Tensor) -> Tensor:
        if not self.training:
            return features
        features = self.dropout(features)
        if self.noise_std > 0:
            features = features * (1 + self.noise_std * torch.randn_like(features))
        return features
