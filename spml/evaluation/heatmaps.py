"""Class heatmaps through captum (Grad-CAM, guided Grad-CAM, integrated gradients) and their overlay pictures.

Every method takes a classifier `model` (float images (B, 1, S, S) in [0, 1] -> logits (B, C), in eval mode)
and, for the Grad-CAM family, the `layer` whose output is explained (the backbone's last feature map; a
module or a function returning it). Maps come back at the image size, non-negative: the evidence *for* the
class (Grad-CAM's ReLU; the positive part of the pixel attributions of the other methods).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from captum.attr import GuidedGradCam, IntegratedGradients, LayerAttribution, LayerGradCam
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import Tensor, nn

from spml.registry import Registry

HEATMAP_METHODS = Registry("heatmap method")
IG_STEPS = 32  # integrated gradients: Riemann steps from the black image to the input


def _layer(layer: nn.Module | Callable[[], nn.Module]) -> nn.Module:
    return layer if isinstance(layer, nn.Module) else layer()


@HEATMAP_METHODS.register("gradcam")
def gradcam(model: nn.Module, layer: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ReLU of the layer's channels weighted by their mean gradient,
    upsampled bilinearly to the image. images (B, 1, S, S), targets (B,) class indices -> (B, S, S).

    Args:
        model: eval-mode classifier, float images in [0, 1] -> logits.
        layer: the module whose output Grad-CAM explains (the backbone's last feature map).
        images: float images in [0, 1].
        targets: the class index explained for each image.

    Returns:
        The heatmaps.

    Shape:
        images (B, 1, S, S), targets (B,) -> (B, S, S).
    """
    coarse = LayerGradCam(model, layer).attribute(images, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(coarse, tuple(images.shape[-2:]), interpolate_mode="bilinear")[:, 0]


@HEATMAP_METHODS.register("guided_gradcam")
def guided_gradcam(model: nn.Module, layer: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM (pixel resolution) -> (B, S, S).

    Args:
        model: eval-mode classifier, float images in [0, 1] -> logits.
        layer: the module whose output Grad-CAM explains (the backbone's last feature map).
        images: float images in [0, 1].
        targets: the class index explained for each image.

    Returns:
        The heatmaps.

    Shape:
        images (B, 1, S, S), targets (B,) -> (B, S, S).
    """
    with warnings.catch_warnings():  # captum announces the temporary ReLU hooks guided backpropagation needs
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        return GuidedGradCam(model, layer).attribute(images.requires_grad_(), target=targets)[:, 0].clamp(min=0)


@HEATMAP_METHODS.register("integrated_gradients")
def integrated_gradients(model: nn.Module, layer: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """Integrated gradients (Sundararajan et al. 2017) from a black image in IG_STEPS steps; `layer` is
    not used. -> (B, S, S), the positive part.

    Args:
        model: eval-mode classifier, float images in [0, 1] -> logits.
        layer: the module whose output Grad-CAM explains (not used here).
        images: float images in [0, 1].
        targets: the class index explained for each image.

    Returns:
        The heatmaps.

    Shape:
        images (B, 1, S, S), targets (B,) -> (B, S, S).
    """
    attributions = IntegratedGradients(model).attribute(
        images, baselines=torch.zeros_like(images), target=targets, n_steps=IG_STEPS
    )
    return attributions[:, 0].clamp(min=0)


def heatmaps(
    model: nn.Module,
    layer: nn.Module | Callable[[], nn.Module],
    images: Tensor,
    targets: Tensor | Sequence[int],
    method: str = "gradcam",
    batch_size: int = 32,
) -> np.ndarray:
    """Heatmaps of `method` for each image's target class.

    Args:
        model: eval-mode classifier, float images (B, 1, S, S) in [0, 1] -> logits (B, C).
        layer: the module whose output Grad-CAM explains (the backbone's last feature map), or a function
            returning it.
        images: (N, 1, S, S) uint8 (0..255) or float in [0, 1].
        targets: (N,) class index explained for each image.
        method: a name of HEATMAP_METHODS (gradcam, guided_gradcam, integrated_gradients).
        batch_size: images per captum call.

    Returns:
        float32 (N, S, S), >= 0 (the evidence for the class, in the method's own units).
    """
    explain = HEATMAP_METHODS.get(method)
    layer = _layer(layer)
    images = torch.as_tensor(images)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if images.ndim != 4 or images.shape[1] != 1 or len(targets) != len(images):
        raise ValueError(
            f"heatmaps: images must be (N, 1, S, S) with one target each; got {tuple(images.shape)} "
            f"and {len(targets)} targets"
        )
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        batch = batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float()
        maps = explain(model, layer, batch, targets[start : start + batch_size].to(device))
        out.append(maps.detach().float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[-2:]), np.float32)


def normalise(heatmap: np.ndarray) -> np.ndarray:
    """(S, S) -> [0, 1] for display: divided by its 99.5th percentile (its maximum when that is 0), clipped.
    Smooth maps (Grad-CAM) are scaled by about their maximum; sparse pixel attributions stay visible instead
    of fading behind their few largest pixels. An all-zero map stays zero.

    Args:
        heatmap: the heatmap (S, S), >= 0.

    Returns:
        The map in [0, 1] (S, S).
    """
    top = float(np.percentile(heatmap, 99.5)) or float(heatmap.max())
    return np.clip(heatmap / top, 0, 1) if top > 0 else np.zeros_like(heatmap)


def draw_overlay(
    ax,
    image: np.ndarray,
    heatmap: np.ndarray,
    title: str = "",
    mask: np.ndarray | None = None,
    point: tuple[int, int] | None = None,
) -> None:
    """Draw a grey image (S, S) with its heatmap (S, S) on top (turbo colours, opacity rising with the
    value), optionally the finding's region (a white contour) and the pointing location (a cross).

    Args:
        ax: the matplotlib axes drawn into.
        image: the grey image (S, S).
        heatmap: its heatmap (S, S).
        title: the axes title.
        mask: the finding's region (S, S) bool, or None.
        point: the pointing location (row, column), or None.
    """
    heat = normalise(heatmap)
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.imshow(colormaps["turbo"](heat)[..., :3], alpha=np.clip(heat, 0, 1) * 0.6, interpolation="bilinear")
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.9)
    if point is not None:
        ax.plot(point[1], point[0], marker="+", color="white", markersize=9, markeredgewidth=1.6)
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def overlay_figure(
    image: np.ndarray,
    panels: list[tuple[str, np.ndarray]],
    out_path: str | Path,
    masks: list[np.ndarray | None] | None = None,
) -> Path:
    """One image and its heatmaps side by side: image (S, S) uint8, panels [(title, heatmap (S, S))], optional
    region masks per panel -> a PNG at out_path.

    Args:
        image: the image (S, S) uint8.
        panels: [(title, heatmap (S, S))].
        out_path: the PNG written.
        masks: the region mask (or None) of each panel, or None.

    Returns:
        `out_path` as a Path.
    """
    fig = Figure(figsize=(2.0 * (len(panels) + 1), 2.4))
    axes = fig.subplots(1, len(panels) + 1, squeeze=False)[0]
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[0].set_title("image", fontsize=7)
    axes[0].set_axis_off()
    for k, (title, heatmap) in enumerate(panels):
        draw_overlay(axes[k + 1], image, heatmap, title, masks[k] if masks else None)
    return _save(fig, out_path)


def gallery_figure(
    images: np.ndarray,
    heatmaps: np.ndarray,
    titles: list[str],
    out_path: str | Path,
    suptitle: str = "",
    masks: np.ndarray | None = None,
    points: np.ndarray | None = None,
) -> Path:
    """N images of one class: the images (top row) and their overlays (bottom row). images uint8 (N, S, S),
    heatmaps (N, S, S), titles N strings, masks bool (N, S, S) or None, points (N, 2) or None -> out_path.

    Args:
        images: the images, uint8 (N, S, S).
        heatmaps: their heatmaps (N, S, S).
        titles: one title per image.
        out_path: the PNG written.
        suptitle: the figure title.
        masks: the finding regions, bool (N, S, S), or None.
        points: the pointing locations (N, 2), or None.

    Returns:
        `out_path` as a Path.
    """
    n = len(images)
    fig = Figure(figsize=(max(2.0 * n, 4.0), 4.6))
    axes = fig.subplots(2, n, squeeze=False)
    for k in range(n):
        axes[0, k].imshow(images[k], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[0, k].set_title(titles[k], fontsize=7)
        axes[0, k].set_axis_off()
        draw_overlay(
            axes[1, k],
            images[k],
            heatmaps[k],
            "",
            None if masks is None else masks[k],
            None if points is None else tuple(points[k]),
        )
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _save(fig, out_path)


def _save(fig: Figure, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return out_path
