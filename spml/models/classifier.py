"""Backbone + head as one module: images -> logits, with the feature map exposed for the objectives."""
from __future__ import annotations

from torch import Tensor, nn

from spml.config.schema import ModelConfig
from spml.models.backbone import Backbone
from spml.models.heads import Head, build_head


class Classifier(nn.Module):
    """forward: (B, in_chans, H, W) -> logits (B, C); features: -> (B, F, h, w)."""

    def __init__(self, backbone: Backbone, head: Head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def logits_from_features(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def build_classifier(config: ModelConfig, num_classes: int) -> Classifier:
    """Backbone(config) + build_head(config, backbone.num_features, num_classes)."""
    backbone = Backbone(config)
    return Classifier(backbone, build_head(config, backbone.num_features, num_classes))
