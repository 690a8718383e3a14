"""The objectives registry and the dataset facts objectives are built from."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spml.registry import Registry

OBJECTIVES = Registry("objective")


@dataclass(frozen=True)
class DataStats:
    """Training-set facts an objective may need (none of them reveal hidden labels).

    pos_counts: (C,) positives per class among known training labels (supervised) or observed
    positives (SPML). class_prior: (C,) prevalence estimate from the labelled validation split.
    expected_positives: mean positives per image (validation split), for EPR/ROLE.
    """

    classes: tuple[str, ...]
    num_images: int
    pos_counts: torch.Tensor
    class_prior: torch.Tensor
    expected_positives: float

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> dict:
        return {"classes": list(self.classes), "num_images": self.num_images,
                "pos_counts": self.pos_counts.tolist(), "class_prior": self.class_prior.tolist(),
                "expected_positives": self.expected_positives}

    @classmethod
    def from_json(cls, data: dict) -> "DataStats":
        return cls(classes=tuple(data["classes"]), num_images=int(data["num_images"]),
                   pos_counts=torch.tensor(data["pos_counts"]), class_prior=torch.tensor(data["class_prior"]),
                   expected_positives=float(data["expected_positives"]))
