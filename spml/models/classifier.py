"""Normalisation + backbone + head as one module: float images in [0, 1] -> logits."""

from __future__ import annotations

import torch
from kornia.enhance import Normalize as KorniaNormalize
from torch import Tensor, nn

from spml.models.backbone import Backbone
from spml.models.heads import Head


class Normalize(KorniaNormalize):
    """(x - mean) / std for grayscale batches.

    Args:
        mean, std: the intensity statistics (std > 0); kept as non-persistent buffers (not in state dicts).

    Shape:
        (B, 1, H, W) -> (B, 1, H, W).
    """

    def __init__(self, mean: float, std: float):
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        super().__init__(torch.tensor([float(mean)]), torch.tensor([float(std)]))


class Classifier(nn.Module):
    """The trained model: normalisation (after augmentation), backbone, head.

    Args:
        backbone: a Backbone (or any module with `num_features` giving (B, F, h, w) maps).
        head: a Head (embed + classify) sized for `backbone.num_features`.
        mean, std: input normalisation of images in [0, 1].

    Shape:
        forward: float (B, in_chans, H, W) in [0, 1] -> logits (B, C).
        features: float (B, in_chans, H, W) in [0, 1] -> (B, F, h, w); logits_from_features: -> (B, C).
    """

    def __init__(self, backbone: Backbone, head: Head, mean: float = 0.5, std: float = 0.25):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.normalize = Normalize(mean, std)

    def features(self, x: Tensor) -> Tensor:
        """Backbone feature maps of normalised images.

        Args:
            x: float images in [0, 1].

        Returns:
            The feature maps.

        Shape:
            (B, in_chans, H, W) -> (B, F, h, w).
        """
        return self.backbone(self.normalize(x))

    def logits_from_features(self, features: Tensor) -> Tensor:
        """The head on given feature maps.

        Args:
            features: backbone feature maps.

        Returns:
            Logits.

        Shape:
            (B, F, h, w) -> (B, C).
        """
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a batch: normalise, backbone, head.

        Args:
            x: float images in [0, 1].

        Returns:
            Logits.

        Shape:
            (B, in_chans, H, W) -> (B, C).
        """
        return self.head(self.features(x))
