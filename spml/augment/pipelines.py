"""Batch augmentation on the device with kornia: weak and strong views, then normalisation.

Pipelines take float (B, 1, H, W) in [0, 1] and return the same shape in [0, 1]; every op draws its own
parameters per sample (kornia's same_on_batch=False) from the global torch RNG, so torch.manual_seed
makes them reproducible. An op whose strength or probability is 0 is left out of the pipeline.
"""
from __future__ import annotations

import kornia.augmentation as K
import torch
from kornia.enhance import Normalize as KorniaNormalize
from torch import Tensor, nn

from spml.augment.elastic import RandomElasticTransform
from spml.config.schema import AugmentConfig

BLUR_KERNEL, BLUR_SIGMA = 5, (0.1, 1.5)  # mild blur: fine CXR findings must survive
NOISE_P = 0.5  # probability of additive Gaussian noise (its std is augment.noise_std)
ERASING_SCALE = (0.02, 0.1)  # erased area share; kornia's default (up to 1/3) can hide a whole finding


class AugmentPipeline(nn.Module):
    """kornia ops in order, then a clamp to [0, 1]: (B, 1, H, W) -> (B, 1, H, W)."""

    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.ops = nn.Sequential(*ops)

    def forward(self, images: Tensor) -> Tensor:
        return self.ops(images).clamp(0.0, 1.0)


class Normalize(KorniaNormalize):
    """(x - mean) / std for grayscale batches (B, 1, H, W); mean/std are non-persistent buffers."""

    def __init__(self, mean: float, std: float):
        if std <= 0:
            raise ValueError(f"augment.std must be > 0, got {std}")
        super().__init__(torch.tensor([float(mean)]), torch.tensor([float(std)]))


def geometric_ops(config: AugmentConfig, degrees: float) -> list[nn.Module]:
    """Horizontal flip and one affine (rotation up to `degrees`, translate, scale)."""
    ops: list[nn.Module] = []
    if config.flip_p > 0:
        ops.append(K.RandomHorizontalFlip(p=config.flip_p))
    translate = (config.translate, config.translate) if config.translate > 0 else None
    scale = tuple(config.scale) if tuple(config.scale) != (1.0, 1.0) else None
    if degrees > 0 or translate or scale:
        ops.append(K.RandomAffine(degrees=degrees, translate=translate, scale=scale, p=1.0))
    return ops


def elastic_op(config: AugmentConfig) -> nn.Module:
    """RED: kornia's RandomElasticTransform (fast smoothing, spml.augment.elastic) with augment.elastic."""
    elastic = config.elastic
    if elastic.kernel_size < 3 or elastic.kernel_size % 2 == 0:
        raise ValueError(f"augment.elastic.kernel_size must be odd and >= 3, got {elastic.kernel_size}")
    return RandomElasticTransform(kernel_size=(elastic.kernel_size,) * 2, sigma=(elastic.sigma,) * 2,
                                    alpha=(elastic.alpha,) * 2, p=elastic.p)


def intensity_ops(config: AugmentConfig) -> list[nn.Module]:
    """Brightness (additive), contrast, gamma, blur, Gaussian noise, erasing."""
    ops: list[nn.Module] = []
    if config.brightness > 0:
        ops.append(K.RandomBrightness(brightness=(1 - config.brightness, 1 + config.brightness), p=1.0))
    if config.contrast > 0:
        ops.append(K.RandomContrast(contrast=(1 - config.contrast, 1 + config.contrast), p=1.0))
    if tuple(config.gamma) != (1.0, 1.0):
        ops.append(K.RandomGamma(gamma=tuple(config.gamma), p=1.0))
    if config.blur_p > 0:
        ops.append(K.RandomGaussianBlur(kernel_size=BLUR_KERNEL, sigma=BLUR_SIGMA, p=config.blur_p))
    if config.noise_std > 0:
        ops.append(K.RandomGaussianNoise(std=config.noise_std, p=NOISE_P))
    if config.erasing_p > 0:
        ops.append(K.RandomErasing(scale=ERASING_SCALE, p=config.erasing_p))
    return ops


def build_weak(config: AugmentConfig) -> AugmentPipeline:
    """Weak view: horizontal flip + small affine (augment.degrees, translate, scale)."""
    return AugmentPipeline(geometric_ops(config, config.degrees))


def build_strong(config: AugmentConfig, red: bool) -> AugmentPipeline:
    """Strong view: the weak ops with rotation up to augment.strong_degrees (one resampling, not two),
    then random elastic deformation (when `red` and augment.elastic.enabled and its p > 0), then the
    intensity ops and erasing."""
    ops = geometric_ops(config, config.strong_degrees)
    if red and config.elastic.enabled and config.elastic.p > 0 and config.elastic.alpha != 0:
        ops.append(elastic_op(config))
    return AugmentPipeline(ops + intensity_ops(config))
