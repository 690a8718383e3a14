"""Losses: full-label (`LOSSES`, `build_loss`) and single-positive (`SPML_LOSSES`, `build_spml_loss`).

Every family file is imported here explicitly, so a broken file fails at import, not at lookup.
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from spml.losses import (  # noqa: F401 (each family file registers its losses)
    an, asl, bce, entropy, focal, gr, large_loss, metric, role, softmax, zlpr)
from spml.losses.common import LOSSES, SPML_LOSSES
from spml.registry import ParameterError, Registry

__all__ = ["LOSSES", "SPML_LOSSES", "build_loss", "build_spml_loss"]


def _build(registry: Registry, name: str, params: dict[str, Any], context: dict[str, Any]) -> nn.Module:
    """Construct `name` with `params` plus the context arguments its constructor accepts (a param of the
    same name wins over the context). Unknown params raise, naming the loss and the accepted ones."""
    factory = registry.get(name)
    accepted = inspect.signature(factory).parameters
    params = dict(params or {})
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        options = sorted(set(accepted) - set(context))
        raise ParameterError(f"{registry.kind} {name!r}: unknown parameter(s) {unknown}; accepted: {options}")
    extra = {key: value for key, value in context.items() if key in accepted and key not in params}
    try:
        return factory(**extra, **params)
    except TypeError as err:
        raise ParameterError(f"{registry.kind} {name!r} with parameters {params}: {err}") from None


def build_loss(name: str, params: dict[str, Any] | None = None, *, pos_counts=None, num_samples: int | None = None
               ) -> nn.Module:
    """A full-label loss module: forward(logits (B,C), targets (B,C), known (B,C) bool | None) -> scalar.
    pos_counts: (C,) training positives per class (tensor or array); num_samples: training images."""
    return _build(LOSSES, name, params or {}, {"pos_counts": pos_counts, "num_samples": num_samples})


def build_spml_loss(name: str, params: dict[str, Any] | None = None, *, num_classes: int, num_images: int,
                    expected_positives: float) -> nn.Module:
    """A single-positive loss module: forward(logits (B,C), observed (B,C) bool, index (B,) long) -> scalar,
    plus set_epoch(epoch). expected_positives: mean positives per image of the dataset (EPR/ROLE)."""
    context = {"num_classes": num_classes, "num_images": num_images, "expected_positives": expected_positives}
    return _build(SPML_LOSSES, name, params or {}, context)
