"""Classification heads on a feature map: linear, mlp, bilinear, prototype, boostlu (registry HEADS).

Every head is built from `(num_features, num_classes, **its own arguments)`. The pooled heads split into
`embed(feature_map (B,F,h,w)) -> (B,D)` and `classify(vector (B,D)) -> logits (B,C)`, with
`forward = classify(embed(.))` and `embed_dim = D`, so the MPC objective can run its batch transformer
between the two and share the classifier across streams. The boostlu head pools after a non-linearity on
its class activation maps, so it has no pooled embedding (`pools_last = False`) and serves the objectives that
call the whole head.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn

from spml.registry import Registry

HEADS = Registry("head")


class Head(nn.Module):
    """Base: pooled embedding then a classifier; subclasses set `embed_dim` and override the two halves.

    Shape:
        embed: (B, F, h, w) -> (B, embed_dim); classify: (B, embed_dim) -> (B, C); forward: (B, F, h, w) -> (B, C).
    """

    embed_dim: int
    pools_last = True  # forward == classify(embed(.)); False: the head pools after its class maps (BoostLU)

    def embed(self, features: Tensor) -> Tensor:
        """Pooled embedding of feature maps (subclasses implement it).

        Args:
            features: backbone feature maps.

        Returns:
            The embedding.

        Shape:
            (B, F, h, w) -> (B, embed_dim).
        """
        raise NotImplementedError

    def classify(self, embedding: Tensor) -> Tensor:
        """Logits of embeddings (subclasses implement it).

        Args:
            embedding: `embed`'s output (MPC's batch-level stream mixes it across the batch first).

        Returns:
            Logits.

        Shape:
            (B, embed_dim) -> (B, C).
        """
        raise NotImplementedError

    def forward(self, features: Tensor) -> Tensor:
        """classify(embed(features)).

        Args:
            features: backbone feature maps.

        Returns:
            Logits.

        Shape:
            (B, F, h, w) -> (B, C).
        """
        return self.classify(self.embed(features))


def global_pool() -> nn.Module:
    """timm's global average pool, flattened.

    Returns:
        A module (B, F, h, w) -> (B, F).
    """
    return SelectAdaptivePool2d(pool_type="avg", flatten=True)


@HEADS.register("linear")
class LinearHead(Head):
    """pool -> dropout -> Linear.

    Args:
        num_features: F, channels of the feature map. num_classes: C.
        drop_rate: dropout before the classifier.

    Shape:
        embed: (B, F, h, w) -> (B, F); forward: (B, F, h, w) -> (B, C).
    """

    def __init__(self, num_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.embed_dim = num_features
        self.pool = global_pool()
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes)

    def embed(self, features: Tensor) -> Tensor:
        """Global average pool.

        Args:
            features: backbone feature maps.

        Returns:
            The pooled features.

        Shape:
            (B, F, h, w) -> (B, F).
        """
        return self.pool(features)

    def classify(self, embedding: Tensor) -> Tensor:
        """Dropout, then the linear classifier.

        Args:
            embedding: pooled features.

        Returns:
            Logits.

        Shape:
            (B, F) -> (B, C).
        """
        return self.fc(self.dropout(embedding))


@HEADS.register("mlp")
class MLPHead(Head):
    """pool -> Linear(hidden) -> BatchNorm1d -> ReLU (embed) -> Dropout -> Linear (Kufel et al.).

    Args:
        num_features: F. num_classes: C. hidden: D, width of the hidden layer. drop_rate: dropout before
            the classifier.

    Shape:
        embed: (B, F, h, w) -> (B, hidden); forward: (B, F, h, w) -> (B, C).
    """

    def __init__(self, num_features: int, num_classes: int, hidden: int = 512, drop_rate: float = 0.0):
        super().__init__()
        self.embed_dim = hidden
        self.pool = global_pool()
        self.hidden = nn.Sequential(nn.Linear(num_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden, num_classes)

    def embed(self, features: Tensor) -> Tensor:
        """Pool, then Linear(hidden) -> BatchNorm1d -> ReLU.

        Args:
            features: backbone feature maps.

        Returns:
            The hidden embedding.

        Shape:
            (B, F, h, w) -> (B, hidden).
        """
        return self.hidden(self.pool(features))

    def classify(self, embedding: Tensor) -> Tensor:
        """Dropout, then the linear classifier.

        Args:
            embedding: the hidden embedding.

        Returns:
            Logits.

        Shape:
            (B, hidden) -> (B, C).
        """
        return self.fc(self.dropout(embedding))


@HEADS.register("bilinear")
class BilinearHead(Head):
    """1x1 conv F -> k, bilinear pooling (outer product averaged over positions), signed sqrt, L2 norm.

    The projection keeps memory bounded for wide backbones (2048 -> k); the pooling runs in fp32 because
    the outer products overflow fp16.

    Args:
        num_features: F. num_classes: C. channels: k, projection channels. drop_rate: dropout before the
            classifier.

    Shape:
        embed: (B, F, h, w) -> (B, k * k), unit L2 norm; forward: (B, F, h, w) -> (B, C).
    """

    def __init__(self, num_features: int, num_classes: int, channels: int = 512, drop_rate: float = 0.0):
        super().__init__()
        self.embed_dim = channels * channels
        self.project = nn.Sequential(
            nn.Conv2d(num_features, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.embed_dim, num_classes)

    def embed(self, features: Tensor) -> Tensor:
        """Bilinear pooling of the projected maps (fp32), signed square root, L2 normalisation.

        Args:
            features: backbone feature maps.

        Returns:
            The unit-norm embedding, float32.

        Shape:
            (B, F, h, w) -> (B, k * k).
        """
        z = self.project(features).flatten(2).float()  # (B, k, hw)
        gram = torch.bmm(z, z.transpose(1, 2)) / z.shape[2]  # (B, k, k)
        v = gram.flatten(1)
        v = torch.sign(v) * torch.sqrt(v.abs() + 1e-8)
        return F.normalize(v, dim=1)

    def classify(self, embedding: Tensor) -> Tensor:
        """Dropout, then the linear classifier.

        Args:
            embedding: the bilinear embedding.

        Returns:
            Logits.

        Shape:
            (B, k * k) -> (B, C).
        """
        return self.fc(self.dropout(embedding))


def boost_positive(class_maps: Tensor, boost: float) -> Tensor:
    """BoostLU (Kim et al., CVPR 2023): positive class-activation values times `boost`, the others unchanged.

    Args:
        class_maps: (B, C, h, w) class activation maps (the linear classifier at every position).
        boost: the factor on positive values (the paper's alpha); 1 is the identity.

    Returns:
        The boosted maps.

    Shape:
        (B, C, h, w) -> (B, C, h, w).
    """
    return torch.where(class_maps > 0, class_maps * boost, class_maps)


@HEADS.register("boostlu")
class BoostLUHead(Head):
    """Class activation maps -> BoostLU -> average pool (Kim et al., CVPR 2023), in training and at inference.

    The maps are the linear classifier applied at every position of the feature map (a 1x1 convolution with the
    weights of `fc`, so the parameters and their names are the linear head's). Averaging them gives the linear
    head's logits exactly; BoostLU in between raises the pooled score of every class with a positive region,
    most for a class whose region is small or weak (the unannotated positives the paper studies).

    Args:
        num_features: F. num_classes: C.
        boost: the factor on positive class-activation values (the authors' alpha, default 5 as in their code).

    Shape:
        class_maps: (B, F, h, w) -> (B, C, h, w); forward: (B, F, h, w) -> (B, C).
    """

    pools_last = False

    def __init__(self, num_features: int, num_classes: int, boost: float = 5.0):
        super().__init__()
        if boost <= 0:
            raise ValueError(f"boost must be > 0 (1 = no boost), got {boost}")
        self.embed_dim, self.boost = num_features, float(boost)
        self.fc = nn.Linear(num_features, num_classes)

    def class_maps(self, features: Tensor) -> Tensor:
        """The linear classifier at every position (a 1x1 convolution with `fc`'s weights).

        Args:
            features: backbone feature maps.

        Returns:
            Class activation maps; their spatial mean is the linear head's logits.

        Shape:
            (B, F, h, w) -> (B, C, h, w).
        """
        return F.conv2d(features, self.fc.weight[:, :, None, None], self.fc.bias)

    def forward(self, features: Tensor) -> Tensor:
        """Class maps -> BoostLU -> average pool.

        Args:
            features: backbone feature maps.

        Returns:
            Logits.

        Shape:
            (B, F, h, w) -> (B, C).
        """
        return boost_positive(self.class_maps(features), self.boost).mean((2, 3))

    def embed(self, features: Tensor) -> Tensor:
        """Not available: this head pools after its class maps; raises TypeError (MPC's streams need a pooled head).

        Args:
            features: unused.
        """
        raise TypeError(
            "the boostlu head pools after its class maps and has no pooled embedding; objectives that "
            "split the head (MPC's streams) need a pooled head such as linear"
        )


def read_prototypes(path: str, num_classes: int, embedding_dim: int) -> Tensor:
    """Class prototypes from a .npy (allow_pickle=False) or .pt (weights_only=True) file, shape-checked.

    Args:
        path: the file (FileNotFoundError if missing; ValueError for another suffix, a non-tensor or a wrong shape).
        num_classes: C.
        embedding_dim: D.

    Returns:
        The prototypes.

    Shape:
        -> float32 (C, D).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"prototype file {file} does not exist (write it with tools/make_prototypes.py, e.g. "
            "--encoder dmis-lab/biobert-v1.1, or set model.prototypes= for a random start)"
        )
    if file.suffix == ".npy":
        prototypes = torch.from_numpy(np.load(file, allow_pickle=False).astype(np.float32))
    elif file.suffix in (".pt", ".pth"):
        prototypes = torch.load(file, map_location="cpu", weights_only=True)
        if not isinstance(prototypes, Tensor):
            raise ValueError(f"prototype file {file} holds a {type(prototypes).__name__}, not a tensor")
        prototypes = prototypes.float()
    else:
        raise ValueError(f"prototype file {file} must be a .npy or .pt file")
    if tuple(prototypes.shape) != (num_classes, embedding_dim):
        raise ValueError(
            f"prototype file {file} has shape {tuple(prototypes.shape)}; expected one row per class "
            f"and embedding_dim columns: ({num_classes}, {embedding_dim})"
        )
    return prototypes


def prototype_manifest(path: str | Path) -> Path:
    """Where tools/make_prototypes.py describes a prototype file: <file>.manifest.json (classes, encoder, ...).

    Args:
        path: the prototype file.

    Returns:
        The manifest's path (it may not exist).
    """
    return Path(f"{path}.manifest.json")


def check_prototype_classes(path: str, classes: Sequence[str]) -> None:
    """A prototype file with a manifest must list the data's classes in the same order (row c = class c).

    Without a manifest only its shape is checked (read_prototypes). A mismatch raises a ValueError naming the
    manifest and both class lists.

    Args:
        path: the prototype file ("" checks nothing).
        classes: the data's C class names, in logit order.
    """
    manifest = prototype_manifest(path)
    if not path or not manifest.is_file():
        return
    listed = json.loads(manifest.read_text(encoding="utf-8")).get("classes")
    if list(listed or []) != list(classes):
        raise ValueError(
            f"{manifest} lists classes {listed}, the data has {list(classes)} "
            "(rows must follow the data's class order; rebuild with tools/make_prototypes.py)"
        )


@HEADS.register("prototype")
class PrototypeHead(Head):
    """pool -> Linear(embedding_dim) (embed) -> logits = -Euclidean distance to C class prototypes.

    Logits are <= 0 (sigmoid <= 0.5): they are scores for a metric loss and for ranking (AUC), which
    reads -d_c; pair this head with a distance-based loss rather than BCE.

    Args:
        num_features: F. num_classes: C. embedding_dim: D.
        prototypes: "" (random start) or a .npy/.pt file of shape (C, D) (tools/make_prototypes.py).
        drop_rate: dropout before the projection.

    Shape:
        embed: (B, F, h, w) -> (B, D); forward: (B, F, h, w) -> (B, C), values <= 0.
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        embedding_dim: int = 128,
        prototypes: str = "",
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.embed_dim = embedding_dim
        self.pool = global_pool()
        self.dropout = nn.Dropout(drop_rate)
        self.project = nn.Linear(num_features, embedding_dim)
        initial = (
            read_prototypes(prototypes, num_classes, embedding_dim)
            if prototypes
            else torch.randn(num_classes, embedding_dim) / embedding_dim**0.5
        )
        self.prototypes = nn.Parameter(initial)

    def embed(self, features: Tensor) -> Tensor:
        """Pool, dropout, then the projection to D.

        Args:
            features: backbone feature maps.

        Returns:
            The embedding.

        Shape:
            (B, F, h, w) -> (B, D).
        """
        return self.project(self.dropout(self.pool(features)))

    def classify(self, embedding: Tensor) -> Tensor:
        """Minus the Euclidean distance (fp32) of each embedding to each class prototype.

        Args:
            embedding: projected embeddings.

        Returns:
            Logits, all <= 0.

        Shape:
            (B, D) -> (B, C).
        """
        return -torch.cdist(embedding.float(), self.prototypes.float())


def build_head(name: str, num_features: int, num_classes: int, **kwargs) -> Head:
    """The head registered as `name` (linear | mlp | bilinear | prototype | boostlu).

    Args:
        name: HEADS name.
        num_features: F of the backbone's map.
        num_classes: C.
        **kwargs: that head's own arguments (e.g. hidden=512 for mlp, channels=256 for bilinear).

    Returns:
        The head.
    """
    return HEADS.build(name, num_features=num_features, num_classes=num_classes, **kwargs)
