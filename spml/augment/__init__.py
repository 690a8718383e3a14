"""Augmentation on the device (kornia): weak/strong pipelines, normalisation, test-time augmentation."""
from spml.augment.pipelines import AugmentPipeline, Normalize, build_strong, build_weak
from spml.augment.tta import TTA_VIEWS, tta_predict

__all__ = ["AugmentPipeline", "Normalize", "TTA_VIEWS", "build_strong", "build_weak", "tta_predict"]
