"""timm backbone wrapper: any timm model name -> feature map (B, F, h, w) and a pooled vector (B, F)."""
from __future__ import annotations

import math

import timm
import torch
from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn

from spml.config.schema import ModelConfig
from spml.models.pretrained import LITE_MODELS, load_pretrained


class Backbone(nn.Module):
    """`timm.create_model(config.backbone, num_classes=0, global_pool="")` with local pretrained weights.

    forward: (B, in_chans, H, W) -> feature map (B, num_features, h, w), always NCHW (NHWC outputs are
    permuted; ViT-style token outputs drop their prefix tokens and are laid out on their square grid).
    With `config.channels_last` the weights and the input use torch.channels_last; with `config.compile`
    the forward runs through torch.compile.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.pretrained in LITE_MODELS and config.backbone != config.pretrained:
            raise ValueError(f"model.pretrained={config.pretrained} holds {config.pretrained} weights; "
                             f"set model.backbone={config.pretrained} (got {config.backbone!r})")
        try:
            self.model = timm.create_model(config.backbone, pretrained=False, num_classes=0, global_pool="",
                                           in_chans=config.in_chans, drop_path_rate=config.drop_path or None)
        except RuntimeError as err:
            if "Unknown model" not in str(err):
                raise
            raise ValueError(f"model.backbone={config.backbone!r}: not a timm model (see timm.list_models())") from None
        if config.pretrained:
            load_pretrained(self.model, config.pretrained)
        self.num_features: int = self.model.num_features
        self.pooling = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.channels_last = config.channels_last
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if config.compile:  # in place: parameter names (checkpoints) do not change
            self.compile()

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.to_nchw(self.model.forward_features(x))

    def to_nchw(self, features: Tensor) -> Tensor:
        """Bring timm's NCHW, NHWC or (B, tokens, F) feature outputs to (B, F, h, w)."""
        if features.ndim == 3:
            tokens = features[:, getattr(self.model, "num_prefix_tokens", 0):]
            side = math.isqrt(tokens.shape[1])
            if side * side != tokens.shape[1]:
                raise ValueError(f"model.backbone={type(self.model).__name__}: {tokens.shape[1]} tokens do not "
                                 f"form a square grid; use a square input size")
            return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
        if getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            return features.permute(0, 3, 1, 2)
        return features

    def pool(self, features: Tensor) -> Tensor:
        """Global average pool: (B, F, h, w) -> (B, F)."""
        return self.pooling(features)
