"""Batch augmentation on the device with kornia: the weak and strong views.

Pipelines take float (B, 1, H, W) in [0, 1] and return the same shape in [0, 1]; every op draws its own
parameters per sample (kornia's same_on_batch=False) from the global torch RNG, so torch.manual_seed
makes them reproducible. An op whose strength or probability is 0 is left out of the pipeline.
Normalisation is part of the model (spml.models.Classifier), after augmentation.
"""

from __future__ import annotations

import kornia.augmentation as K
from torch import Tensor, nn

from spml.augment.elastic import RandomElasticTransform

BLUR_KERNEL, BLUR_SIGMA = 5, (0.1, 1.5)  # mild blur: fine CXR findings must survive
NOISE_P = 0.5  # probability of additive Gaussian noise (its std is `noise_std`)
ERASING_SCALE = (0.02, 0.1)  # erased area share; kornia's default (up to 1/3) can hide a whole finding


class AugmentPipeline(nn.Module):
    """kornia ops in order, then a clamp to [0, 1].

    Args:
        ops: kornia augmentation modules, applied in order.

    Shape:
        float (B, 1, H, W) in [0, 1] -> float (B, 1, H, W) in [0, 1].
    """

    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.ops = nn.Sequential(*ops)

    def forward(self, images: Tensor) -> Tensor:
        """Apply the ops in order and clamp to [0, 1].

        Args:
            images: float images in [0, 1].

        Returns:
            The augmented images, each with its own drawn parameters.

        Shape:
            (B, 1, H, W) -> (B, 1, H, W).
        """
        return self.ops(images).clamp(0.0, 1.0)


def geometric_ops(flip_p: float, degrees: float, translate: float, scale: tuple[float, float]) -> list[nn.Module]:
    """Horizontal flip and one affine (rotation up to `degrees`, translate, scale); ops of strength 0 are left out.

    Args:
        flip_p: horizontal flip probability.
        degrees: rotation up to +-degrees.
        translate: shift up to this fraction of each side.
        scale: (min, max) zoom factor; (1, 1) = none.

    Returns:
        kornia modules, possibly empty.
    """
    ops: list[nn.Module] = []
    if flip_p > 0:
        ops.append(K.RandomHorizontalFlip(p=flip_p))
    shift = (translate, translate) if translate > 0 else None
    zoom = tuple(scale) if tuple(scale) != (1.0, 1.0) else None
    if degrees > 0 or shift or zoom:
        ops.append(K.RandomAffine(degrees=degrees, translate=shift, scale=zoom, p=1.0))
    return ops


def elastic_op(p: float, kernel_size: int, sigma: float, alpha: float) -> nn.Module:
    """RED: kornia's RandomElasticTransform (fast smoothing, spml.augment.elastic).

    Args:
        p: probability per image.
        kernel_size: odd Gaussian kernel size >= 3 of the displacement smoothing (a ValueError otherwise).
        sigma: smoothing sigma.
        alpha: displacement scale.

    Returns:
        The module.
    """
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"elastic kernel_size must be odd and >= 3, got {kernel_size}")
    return RandomElasticTransform(kernel_size=(kernel_size,) * 2, sigma=(sigma,) * 2, alpha=(alpha,) * 2, p=p)


def intensity_ops(
    brightness: float, contrast: float, gamma: tuple[float, float], blur_p: float, noise_std: float, erasing_p: float
) -> list[nn.Module]:
    """Brightness (additive), contrast, gamma, blur, Gaussian noise, erasing; ops of strength 0 are left out.

    Args:
        brightness: factor drawn from 1 -+ the value (0 = off).
        contrast: factor drawn from 1 -+ the value (0 = off).
        gamma: (min, max); (1, 1) = off.
        blur_p: probability of a mild Gaussian blur (BLUR_KERNEL, BLUR_SIGMA).
        noise_std: additive Gaussian noise std (applied with probability NOISE_P).
        erasing_p: probability of erasing a patch (area share ERASING_SCALE).

    Returns:
        kornia modules in this order, possibly empty.
    """
    ops: list[nn.Module] = []
    if brightness > 0:
        ops.append(K.RandomBrightness(brightness=(1 - brightness, 1 + brightness), p=1.0))
    if contrast > 0:
        ops.append(K.RandomContrast(contrast=(1 - contrast, 1 + contrast), p=1.0))
    if tuple(gamma) != (1.0, 1.0):
        ops.append(K.RandomGamma(gamma=tuple(gamma), p=1.0))
    if blur_p > 0:
        ops.append(K.RandomGaussianBlur(kernel_size=BLUR_KERNEL, sigma=BLUR_SIGMA, p=blur_p))
    if noise_std > 0:
        ops.append(K.RandomGaussianNoise(std=noise_std, p=NOISE_P))
    if erasing_p > 0:
        ops.append(K.RandomErasing(scale=ERASING_SCALE, p=erasing_p))
    return ops


class WeakAugment(AugmentPipeline):
    """Weak view: horizontal flip + one small affine.

    Args:
        flip_p: horizontal flip probability.
        degrees: rotation up to +-degrees. translate: shift up to this fraction of each side.
        scale: (min, max) zoom factor; (1, 1) = none.

    Shape:
        float (B, 1, H, W) in [0, 1] -> float (B, 1, H, W) in [0, 1].
    """

    def __init__(
        self,
        flip_p: float = 0.5,
        degrees: float = 5.0,
        translate: float = 0.05,
        scale: tuple[float, float] = (0.95, 1.05),
    ):
        super().__init__(geometric_ops(flip_p, degrees, translate, scale))


class StrongAugment(AugmentPipeline):
    """Strong view: the weak ops with a larger rotation (one resampling, not two), random elastic deformation
    (RED, per-sample), then intensity ops and erasing.

    Args:
        flip_p, degrees, translate, scale: as WeakAugment (degrees is the strong rotation).
        elastic_p: probability of RED per image (0 leaves RED out, as does elastic_alpha=0).
        elastic_kernel_size: odd Gaussian kernel size of the displacement smoothing.
        elastic_sigma, elastic_alpha: smoothing sigma and displacement scale (kornia's RandomElasticTransform).
        brightness, contrast: factors drawn from 1 -+ the value (0 = off). gamma: (min, max); (1, 1) = off.
        noise_std: additive Gaussian noise std (applied with probability 0.5). blur_p, erasing_p: probabilities.

    Shape:
        float (B, 1, H, W) in [0, 1] -> float (B, 1, H, W) in [0, 1].
    """

    def __init__(
        self,
        flip_p: float = 0.5,
        degrees: float = 10.0,
        translate: float = 0.05,
        scale: tuple[float, float] = (0.95, 1.05),
        elastic_p: float = 0.5,
        elastic_kernel_size: int = 63,
        elastic_sigma: float = 32.0,
        elastic_alpha: float = 1.0,
        brightness: float = 0.2,
        contrast: float = 0.2,
        gamma: tuple[float, float] = (0.8, 1.2),
        noise_std: float = 0.03,
        blur_p: float = 0.2,
        erasing_p: float = 0.3,
    ):
        ops = geometric_ops(flip_p, degrees, translate, scale)
        if elastic_p > 0 and elastic_alpha != 0:
            ops.append(elastic_op(elastic_p, elastic_kernel_size, elastic_sigma, elastic_alpha))
        super().__init__(ops + intensity_ops(brightness, contrast, gamma, blur_p, noise_std, erasing_p))
