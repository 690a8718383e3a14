"""Shared inputs for the loss tests: REFERENCE.md's check example and builders for every registered loss.

Imported by name (not a conftest, which would clash with tests/conftest.py)."""

import torch

from spml.losses import build_loss

CHECK_P = [[0.9, 0.2, 0.6], [0.3, 0.8, 0.1]]
CHECK_Y = [[1, 0, 1], [0, 1, 0]]
CHECK_OBSERVED = [[1, 0, 0], [0, 1, 0]]

# id -> (registered name, params): every full-label loss, some in two settings.
FULL = {
    "bce": ("bce", {}),
    "weighted_bce_batch": ("weighted_bce", {}),
    "weighted_bce_class": ("weighted_bce", {"weighting": "class"}),
    "focal": ("focal", {"gamma": 2.0, "alpha": 0.25}),
    "asl": ("asl", {}),
    "zlpr": ("zlpr", {}),
    "fzlpr": ("fzlpr", {"temperature": 0.2, "scale_by_temperature": True}),
    "msml": ("msml", {"bce_weight": 0.5}),
    "metric": ("metric", {"margin": 1.0, "hardness": 1.0}),
}
SPML = ["an", "an_ls", "wan", "epr", "role", "em", "em_apl", "ll_r", "ll_ct", "ll_cp", "gr"]


def check_example():
    """(logits float64 (2,3), full targets, observed bool, index) of REFERENCE.md section 1."""
    logits = torch.logit(torch.tensor(CHECK_P, dtype=torch.float64))
    return logits, torch.tensor(CHECK_Y, dtype=torch.float64), torch.tensor(CHECK_OBSERVED).bool(), torch.arange(2)


def make_full(key: str, num_classes: int = 4, **overrides):
    name, params = FULL[key]
    pos_counts = torch.arange(1, num_classes + 1, dtype=torch.float32) * 3
    return build_loss(name, {**params, **overrides}, pos_counts=pos_counts, num_samples=40)


def make_spml(name: str, num_classes: int = 4, num_images: int = 8, **params):
    return build_loss(name, params, mode="spml", num_classes=num_classes, num_images=num_images, expected_positives=1.5)


def active_spml(name: str, **params):
    """A loss in its most active state: past warm-up, with some soft negatives / flips present."""
    loss = make_spml(name, num_classes=4, num_images=8, **({"delta": 0.2} if name.startswith("ll") else {}), **params)
    loss.set_epoch(1)
    if name == "em_apl":
        loss.soft_target[1, 0] = 0.2
    if name == "ll_cp":
        loss.flipped[2, 3] = True
    return loss


def single_positive(batch: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    """(B, C) bool with one True per row."""
    generator = torch.Generator().manual_seed(seed)
    column = torch.randint(0, num_classes, (batch,), generator=generator)
    return torch.nn.functional.one_hot(column, num_classes).bool()
