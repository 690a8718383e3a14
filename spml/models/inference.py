"""A trained classifier packaged for inference: raw images in, logits out, with its classes and input size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spml.augment.tta import tta_predict


def to_unit_range(images: Tensor) -> Tensor:
    """Images as the classifier takes them.

    Args:
        images: uint8 in 0..255, or float already in [0, 1].

    Returns:
        float32 images in [0, 1] (uint8 input is divided by 255).

    Shape:
        (B, C, H, W) -> float32 (B, C, H, W) in [0, 1].

    >>> to_unit_range(torch.tensor([[[[0, 255]]]], dtype=torch.uint8)).tolist()
    [[[[0.0, 1.0]]]]
    """
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


class InferenceModel(nn.Module):
    """What evaluation scores and `spml.load_model` returns: a Classifier plus the facts needed to use it.

    Args:
        classifier: images in [0, 1] -> logits (normalisation inside, see spml.models.Classifier).
        classes: the C finding names, in logit order.
        image_size: the square input side S the classifier was trained on.
        tta_views: test-time augmentation views (spml.augment.TTA_VIEWS names), used when `tta` is True.
        tta_average: "prob" (mean probability, returned as its logit) or "logit".
        tta: average over `tta_views` (`with_tta` gives the same model with TTA on or off, without changing this one).
        metadata: anything else worth carrying (the exported model.json).

    Shape:
        forward: uint8 (B, in_chans, S, S) in 0..255, or float in [0, 1] -> float32 logits (B, C).
        Rows are independent of each other (no batch statistics at inference).
    """

    def __init__(
        self,
        classifier: nn.Module,
        classes: Sequence[str] = (),
        image_size: int = 0,
        tta_views: Sequence[str] = ("identity", "hflip", "scale_up", "shift"),
        tta_average: str = "prob",
        tta: bool = False,
        metadata: dict | None = None,
    ):
        super().__init__()
        self.classifier = classifier
        self.classes, self.image_size = tuple(classes), int(image_size)
        self.tta_views, self.tta_average, self.tta = tuple(tta_views), tta_average, tta
        self.metadata = dict(metadata or {})

    def with_tta(self, tta: bool) -> InferenceModel:
        """This model with TTA on or off: itself when it already is, else a new InferenceModel that shares the
        classifier (weights, device, train/eval mode), so evaluating with TTA never changes a shared model.

        Args:
            tta: average over `tta_views`.

        Returns:
            An InferenceModel; the same classes, size, views and metadata.
        """
        if tta == self.tta:
            return self
        return InferenceModel(
            self.classifier, self.classes, self.image_size, self.tta_views, self.tta_average, tta, self.metadata
        )

    def forward(self, images: Tensor) -> Tensor:
        """Logits of raw images, averaged over `tta_views` when `tta` is on.

        Args:
            images: uint8 in 0..255, or float in [0, 1].

        Returns:
            float32 logits.

        Shape:
            (B, in_chans, S, S) -> (B, C).
        """
        x = to_unit_range(images)
        if not self.tta:
            return self.classifier(x).float()
        return tta_predict(lambda view: self.classifier(view).float(), x, self.tta_views, self.tta_average)
