"""Augmentation on the device (kornia) from plain arguments: weak/strong views, test-time augmentation."""

from spml.augment.pipelines import AugmentPipeline, StrongAugment, WeakAugment
from spml.augment.tta import TTA_VIEWS, tta_predict

__all__ = ["TTA_VIEWS", "AugmentPipeline", "StrongAugment", "WeakAugment", "tta_predict"]
