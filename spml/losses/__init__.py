"""Losses: full-label (`LOSSES`, `build_loss`) and single-positive (`SPML_LOSSES`, `build_spml_loss`).

Every family file is imported here explicitly, so a broken file fails at import, not at lookup.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from spml.losses import (  # noqa: F401 (each family file registers its losses)
    an, asl, bce, entropy, focal, gr, large_loss, metric, role, softmax, zlpr)
from spml.losses.common import LOSSES, SPML_LOSSES

__all__ = ["LOSSES", "SPML_LOSSES", "build_loss", "build_spml_loss"]


def build_loss(name: str, params: dict[str, Any] | None = None, *, pos_counts=None, num_samples: int | None = None
               ) -> nn.Module:
    """A full-label loss module from its registry name.

    The module's forward is (logits (B,C), targets (B,C), known (B,C) bool | None) -> scalar.

    Args:
        name: a `LOSSES` name.
        params: the loss's own parameters (None: defaults).
        pos_counts: (C,) training positives per class (tensor or array), offered to losses that take it.
        num_samples: training images, offered to losses that take it.

    Returns:
        The loss module.
    """
    return LOSSES.build_in_context(name, params, {"pos_counts": pos_counts, "num_samples": num_samples})


def build_spml_loss(name: str, params: dict[str, Any] | None = None, *, num_classes: int, num_images: int,
                    expected_positives: float) -> nn.Module:
    """A single-positive loss module from its registry name.

    The module's forward is (logits (B,C), observed (B,C) bool, index (B,) long) -> scalar, plus set_epoch(epoch).

    Args:
        name: a `SPML_LOSSES` name.
        params: the loss's own parameters (None: defaults).
        num_classes: C, offered to losses that take it.
        num_images: training images (rows of per-image tables), offered to losses that take it.
        expected_positives: mean positives per image of the dataset (EPR/ROLE).

    Returns:
        The loss module.
    """
    context = {"num_classes": num_classes, "num_images": num_images, "expected_positives": expected_positives}
    return SPML_LOSSES.build_in_context(name, params, context)
