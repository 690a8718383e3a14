"""Losses: full-label (`LOSSES`) and single-positive (`SPML_LOSSES`), one registry per training mode
(`LOSS_FAMILIES`), built by name with `build_loss`.

Every family file is imported here explicitly, so a broken file fails at import, not at lookup.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from spml.losses import an, asl, bce, entropy, focal, gr, large_loss, metric, role, softmax, zlpr  # noqa: F401 (each family file registers its losses)
from spml.losses.common import LOSSES, SPML_LOSSES
from spml.registry import Registry

__all__ = ["LOSSES", "LOSS_FAMILIES", "SPML_LOSSES", "build_loss", "loss_family"]

LOSS_FAMILIES = {"supervised": LOSSES, "spml": SPML_LOSSES}  # training mode -> the registry its losses are in


def loss_family(mode: str, name: str) -> Registry:
    """The registry a loss `name` is looked up in for `mode`.

    Args:
        mode: "supervised" (LOSSES) or "spml" (SPML_LOSSES).
        name: the loss name.

    Returns:
        The mode's Registry; a name of the other mode's family is a KeyError saying so (an unknown name is left to
        the registry, which lists the choices).
    """
    registry = LOSS_FAMILIES[mode]
    if name not in registry:
        other = next((m for m, r in LOSS_FAMILIES.items() if m != mode and name in r), None)
        if other is not None:
            raise KeyError(
                f"loss.name={name!r} is a {LOSS_FAMILIES[other].kind} ({other} mode); in {mode} "
                f"mode choose a {registry.kind} from {registry.names()}"
            )
    return registry


def build_loss(
    name: str, params: dict[str, Any] | None = None, *, mode: str = "supervised", **context: Any
) -> nn.Module:
    """A loss module by name.

    Args:
        name: a LOSSES name (mode "supervised") or an SPML_LOSSES name (mode "spml").
        params: the loss's own keyword arguments (unknown ones raise, naming the accepted ones).
        mode: "supervised" (full-label losses: forward(logits (B,C), targets (B,C), known (B,C) bool | None))
            or "spml" (single-positive losses: forward(logits (B,C), observed (B,C) bool, index (B,) long)).
        context: dataset facts offered to the constructor, each taken only by the losses that name it:
            pos_counts (C,), num_samples, num_classes, num_images, expected_positives, num_epochs.

    Returns:
        The nn.Module (its forward returns a scalar).

    >>> build_loss("focal", {"gamma": 2.0}).gamma
    2.0
    >>> type(build_loss("an", mode="spml")).__name__
    'AssumeNegative'
    """
    return loss_family(mode, name).build_in_context(name, params, context)
