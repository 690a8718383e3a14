"""torchxrayvision's CXR models as spml backbones (the optional extra `spml[xrv]`).

`XRVFeatures(name, weights)` builds torchxrayvision's own model class (DenseNet-121 or its ResNet-50) with its own
weight loading and exposes timm's `forward_features` / `num_features`, so spml.models.Backbone wraps it like a timm
model. Inputs must be scaled as torchxrayvision's were, [-1024, 1024] (spml.models.weights.normalization gives the
mean/std that do it on images in [0, 1]); its automatic resize to the training resolution is left out (spml
trains at data.size), as is its classifier (spml adds its own head).
"""
from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

XRV_ARCHITECTURES = ("xrv_densenet121", "xrv_resnet50")


def import_xrv():
    try:
        import torchxrayvision as xrv
    except ImportError:
        raise ImportError("torchxrayvision backbones need the optional extra: pip install 'spml[xrv]'") from None
    return xrv


class XRVFeatures(nn.Module):
    """A torchxrayvision model as a feature extractor.

    Args:
        name: xrv_densenet121 | xrv_resnet50.
        weights: torchxrayvision weights name (e.g. densenet121-res224-all); "" builds the architecture untrained.
        weights_file: the cached file of `weights` (spml.models.weights.locate); torchxrayvision reads it from its
            folder. Empty: torchxrayvision finds (or downloads) it itself.

    Shape:
        forward_features: (B, 1, H, W) scaled to [-1024, 1024] -> (B, num_features, h, w).
    """

    def __init__(self, name: str, weights: str = "", weights_file: str = ""):
        super().__init__()
        if name not in XRV_ARCHITECTURES:
            raise ValueError(f"unknown torchxrayvision backbone {name!r}; choose from {XRV_ARCHITECTURES}")
        xrv = import_xrv()
        cache_dir = str(Path(weights_file).parent) + "/" if weights_file else None
        if name == "xrv_densenet121":
            self.net = xrv.models.DenseNet(weights=weights or None, cache_dir=cache_dir)
            self.num_features = self.net.classifier.in_features
            self.net.classifier = nn.Identity()  # spml adds its own head; unused parameters would stall DDP
        else:
            if weights:
                self.net = xrv.models.ResNet(weights=weights, cache_dir=cache_dir)
            else:  # torchxrayvision's ResNet always loads weights: its architecture, built the same way
                import torchvision

                self.net = nn.Module()
                self.net.model = torchvision.models.resnet50(num_classes=18, weights=None)
                self.net.model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.num_features = self.net.model.fc.in_features
            self.net.model.fc = nn.Identity()
        self.net.op_threshs = None  # its classifier's operating points: not part of a backbone
        self.net.train()  # torchxrayvision leaves loaded models in eval mode

    def forward_features(self, x: Tensor) -> Tensor:
        if hasattr(self.net, "features") and isinstance(self.net.features, nn.Sequential):
            return F.relu(self.net.features(x))  # torchxrayvision's features2 without its pooling
        model = self.net.model
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        return model.layer4(model.layer3(model.layer2(model.layer1(x))))
