"""The training-set facts components are built from (none of them reveal hidden labels)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spml.data.build import DataBundle


@dataclass(frozen=True)
class DataStats:
    """The training-set facts components are built from. Written to <run>/data_stats.json.

    Attributes:
        classes: the class names.
        num_images: training images.
        pos_counts: (C,) positives per class among known training labels (supervised) or observed positives (SPML).
        class_prior: (C,) prevalence estimate from the labelled validation split.
        expected_positives: mean positives per image (see spml.data.build), for EPR/ROLE.
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
        return {
            "classes": list(self.classes),
            "num_images": self.num_images,
            "pos_counts": self.pos_counts.tolist(),
            "class_prior": self.class_prior.tolist(),
            "expected_positives": self.expected_positives,
        }

    @classmethod
    def from_json(cls, data: dict) -> DataStats:
        """The facts from their JSON form (to_json).

        Args:
            data: the dict to_json wrote.

        Returns:
            The DataStats.
        """
        return cls(
            classes=tuple(data["classes"]),
            num_images=int(data["num_images"]),
            pos_counts=torch.tensor(data["pos_counts"]),
            class_prior=torch.tensor(data["class_prior"]),
            expected_positives=float(data["expected_positives"]),
        )


def data_stats(bundle: DataBundle, mode: str) -> DataStats:
    """Facts objectives are built from; in SPML mode counts come from observed positives only.

    Args:
        bundle: the run's data.
        mode: "spml" | "supervised".

    Returns:
        The DataStats.
    """
    train, val = bundle.train, bundle.val
    if mode == "spml":
        pos_counts = torch.as_tensor(train.observed.sum(0), dtype=torch.float32)
    else:
        pos_counts = torch.as_tensor(((train.targets > 0.5) & train.known).sum(0), dtype=torch.float32)
    val_known = torch.as_tensor(val.known)
    val_pos = torch.as_tensor(val.targets > 0.5) & val_known
    class_prior = val_pos.sum(0).float() / val_known.sum(0).clamp(min=1).float()
    return DataStats(
        classes=tuple(bundle.classes),
        num_images=len(train),
        pos_counts=pos_counts,
        class_prior=class_prior,
        expected_positives=float(bundle.expected_positives),
    )
