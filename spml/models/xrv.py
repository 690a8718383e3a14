"""torchxrayvision's CXR models as spml backbones (the optional extra `spml[xrv]`).

`XRVFeatures(name, weights)` builds torchxrayvision's own model class (its DenseNet-121, or the torchvision
ResNet-50 its ResNet wraps) and exposes timm's `forward_features` / `num_features`, so spml.models.Backbone wraps it
like a timm model. Inputs must be scaled as torchxrayvision's were, [-1024, 1024] (spml.models.weights.normalization
gives the mean/std that do it on images in [0, 1]); its automatic resize to the training resolution is left out
(spml trains at data.size), as are its classifier and operating points (spml adds its own head).

torchxrayvision's release files are whole pickled models, which torchxrayvision reads with `weights_only=False`
(any code could run). spml reads them with `torch.load(weights_only=True)` allowing only torchxrayvision's model
classes and torch.nn's modules (`read_xrv_weights`), and loads their state dict into the class it built.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

XRV_ARCHITECTURES = ("xrv_densenet121", "xrv_resnet50")
UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def import_xrv():
    """The torchxrayvision module.

    Returns:
        torchxrayvision; ImportError naming the optional extra when it is not installed.
    """
    try:
        import torchxrayvision as xrv
    except ImportError:
        raise ImportError("torchxrayvision backbones need the optional extra: pip install 'spml[xrv]'") from None
    return xrv


def allowed_classes() -> list[type]:
    """What a torchxrayvision weights file may construct: its model classes, torch.nn's modules, OrderedDict, set.

    Returns:
        The classes, for torch.serialization.safe_globals.
    """
    xrv = import_xrv()
    modules = [obj for obj in vars(nn).values() if isinstance(obj, type) and issubclass(obj, nn.Module)]
    own = [obj for obj in vars(xrv.models).values() if isinstance(obj, type) and issubclass(obj, nn.Module)]
    return [*modules, *own, collections.OrderedDict, set]


def read_xrv_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict in a torchxrayvision weights file (a pickled model, or a state dict), read without running code.

    `torch.load(weights_only=True)` with allowed_classes() only.

    Args:
        path: the weights file.

    Returns:
        {key: tensor}; non-tensor entries are dropped.

    Raises:
        ValueError naming the file and the first class it would construct that is not allowed.
    """
    try:
        with torch.serialization.safe_globals(allowed_classes()):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError/RuntimeError variants; reported as one
        found = UNSUPPORTED_GLOBAL.search(str(err))
        what = f"it would construct {found.group(1)}, not a torchxrayvision or torch.nn class" if found else str(err)
        raise ValueError(f"refusing torchxrayvision weights {path}: {what}") from None
    if isinstance(saved, nn.Module):
        for module in saved.modules():  # files pickled by old torch versions (as torchxrayvision patches them)
            if not hasattr(module, "_non_persistent_buffers_set"):
                module._non_persistent_buffers_set = set()
        saved = saved.state_dict()
    if not isinstance(saved, dict):
        raise ValueError(f"refusing torchxrayvision weights {path}: holds a {type(saved).__name__}")
    return {key: value for key, value in saved.items() if isinstance(value, Tensor)}


class XRVFeatures(nn.Module):
    """A torchxrayvision model as a feature extractor.

    Args:
        name: xrv_densenet121 | xrv_resnet50.
        weights: torchxrayvision weights name (e.g. densenet121-res224-all); "" builds the architecture untrained.
        weights_file: the local file of `weights` (spml.models.weights.locate). Empty: torchxrayvision finds or
            downloads it into its own folder (`torchxrayvision.models.get_weights`).

    Shape:
        forward_features: (B, 1, H, W) scaled to [-1024, 1024] -> (B, num_features, h, w).
    """

    def __init__(self, name: str, weights: str = "", weights_file: str = ""):
        super().__init__()
        if name not in XRV_ARCHITECTURES:
            raise ValueError(f"unknown torchxrayvision backbone {name!r}; choose from {XRV_ARCHITECTURES}")
        xrv = import_xrv()
        if name == "xrv_densenet121":
            self.net = xrv.models.DenseNet(weights=None)
            target, classifier = self.net, "classifier."
        else:  # torchxrayvision's ResNet always reads weights at construction: the torchvision model it wraps
            import torchvision

            self.net = nn.Module()
            self.net.model = torchvision.models.resnet50(num_classes=18, weights=None)
            self.net.model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            target, classifier = self.net.model, "fc."
        if weights:
            path = weights_file or xrv.models.get_weights(weights)
            state = read_xrv_weights(path)
            keep = {key: value for key, value in state.items() if key in target.state_dict()}
            target.load_state_dict(keep, strict=False)
            missing = [key for key in target.state_dict() if key not in keep and not key.startswith(classifier)]
            if missing:
                raise ValueError(f"torchxrayvision weights {path} do not fit {name}: missing {missing[:5]}")
        if name == "xrv_densenet121":
            self.num_features = self.net.classifier.in_features
            self.net.classifier = nn.Identity()  # spml adds its own head; unused parameters would stall DDP
            self.net.op_threshs = None  # its classifier's operating points: not part of a backbone
        else:
            self.num_features = self.net.model.fc.in_features
            self.net.model.fc = nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        """Feature maps before pooling (DenseNet: its features with the final ReLU; ResNet: layer4's output).

        Args:
            x: images scaled to [-1024, 1024].

        Returns:
            The feature maps.

        Shape:
            (B, 1, H, W) -> (B, num_features, h, w).
        """
        if isinstance(getattr(self.net, "features", None), nn.Sequential):
            return F.relu(self.net.features(x))  # torchxrayvision's features2 without its pooling
        model = self.net.model
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        return model.layer4(model.layer3(model.layer2(model.layer1(x))))
