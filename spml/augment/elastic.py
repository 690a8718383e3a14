"""Random elastic deformation (RED) with kornia's parameters and semantics, smoothed by matrix products.

kornia's elastic_transform2d smooths the (B, 2, H, W) noise with a separable Gaussian convolution;
on the CPU a 63-tap convolution over 1-channel images costs about 10x more than multiplying by the
equivalent banded (Toeplitz) matrices, and on GPUs matrix products are the fastest kernels there are.
The result equals kornia's (zero border, truncated normalised kernel) up to float rounding.
"""

from __future__ import annotations

from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.filters import get_gaussian_kernel1d
from torch import Tensor


def gaussian_band_matrix(size: int, kernel_size: int, sigma: float, like: Tensor) -> Tensor:
    """Banded matrix M with (M @ v) = Gaussian-filtered v under zero padding.

    Args:
        size: length of v.
        kernel_size: length of the truncated, normalised Gaussian.
        sigma: its standard deviation.
        like: device/dtype source.

    Returns:
        M.

    Shape:
        -> (size, size).
    """
    kernel = get_gaussian_kernel1d(kernel_size, sigma, device=like.device, dtype=like.dtype)[0]
    index = torch.arange(size, device=like.device)
    offset = index[None, :] - index[:, None] + kernel_size // 2
    inside = (offset >= 0) & (offset < kernel_size)
    return torch.where(inside, kernel[offset.clamp(0, kernel_size - 1)], 0.0)


class RandomElasticTransform(K.RandomElasticTransform):
    """kornia.augmentation.RandomElasticTransform (same arguments, parameters and RNG use), faster smoothing.

    Args:
        as kornia's: kernel_size, sigma, alpha (each a pair), p, ...

    Shape:
        float (B, C, H, W) -> (B, C, H, W).
    """

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        """kornia's hook: displace `input` by the smoothed noise in `params` (band-matrix smoothing, then grid_sample).

        Args:
            input: the images.
            params: kornia's drawn parameters; "noise" is (B, 2, H, W), channels (x, y).
            flags: kornia's flags (kernel_size, sigma, alpha, align_corners, resample, padding_mode).
            transform: unused (kornia's signature).

        Returns:
            The deformed images, in `input`'s dtype (sampled in fp32 on the CPU, where half grid_sample is broken).

        Shape:
            float (B, C, H, W) -> (B, C, H, W).
        """
        (kernel_y, kernel_x), (sigma_y, sigma_x), (alpha_x, alpha_y) = (
            flags["kernel_size"],
            flags["sigma"],
            flags["alpha"],
        )
        height, width = input.shape[-2:]
        noise = params["noise"].to(device=input.device, dtype=torch.float32)  # (B, 2, H, W), channels (x, y)
        rows = gaussian_band_matrix(height, kernel_y, sigma_y, noise)
        cols = gaussian_band_matrix(width, kernel_x, sigma_x, noise)
        displacement = rows @ noise @ cols.T * noise.new_tensor([alpha_x, alpha_y]).view(1, 2, 1, 1)
        identity = torch.eye(2, 3, device=input.device, dtype=torch.float32).unsqueeze(0)
        grid = F.affine_grid(identity, [1, 1, height, width], align_corners=flags["align_corners"])
        grid = grid + displacement.permute(0, 2, 3, 1)
        sample_dtype = torch.float32 if input.device.type == "cpu" else input.dtype  # CPU half grid_sample is broken
        return F.grid_sample(
            input.to(sample_dtype),
            grid.to(sample_dtype),
            mode=flags["resample"].name.lower(),
            padding_mode=flags["padding_mode"],
            align_corners=flags["align_corners"],
        ).to(input.dtype)
