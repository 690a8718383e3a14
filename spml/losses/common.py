"""What every loss family shares: the two registries, the reduction convention, fp32 casting, stable
log-probabilities, the single-positive module base and cross-process gathering of loss state.

Reduction convention of every public loss function (and module):
* "none": the loss's natural per-element tensor, per entry (B, C) or per row (B,) as each docstring's
  Shape section says; masked elements are 0 (and get zero gradient).
* "mean" (default): the average the original paper/code uses, = the "none" tensor's sum divided by the
  number of elements that count (all, the known ones, or the rows with a known entry: each Shape section
  says which).
* "sum": the "none" tensor's sum.
A batch-level term (EPR's and ROLE's expected-positives penalty) is added to every element of the "none"
tensor, so "mean" and "sum" keep these identities.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from spml.registry import Registry

LOSSES = Registry("loss")  # full labels: forward(logits, targets, known) -> scalar
SPML_LOSSES = Registry("single-positive loss")  # forward(logits, observed, index) -> scalar

Reduction = Literal["none", "mean", "sum"]
REDUCTIONS = ("none", "mean", "sum")


def as_float(logits: Tensor) -> Tensor:
    """Half/bfloat16 -> float32 (losses are computed in fp32 even under autocast); float64 stays.

    Args:
        logits: raw scores of any shape and float dtype.

    Returns:
        `logits`, cast to float32 when it was half or bfloat16.
    """
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def neg_log_probs(logits: Tensor, eps: float = 0.0) -> tuple[Tensor, Tensor]:
    """(-log(p + eps), -log(1 - p + eps)) with p = sigmoid(logits).

    eps = 0 gives the exact binary cross-entropy terms (-logsigmoid(+-s)); eps > 0 reproduces the
    original implementations' `-log(x + eps)` as -logaddexp(logsigmoid(+-s), log eps), finite for any s.

    Args:
        logits: raw scores, any shape.
        eps: added inside the logs (0: exact).

    Returns:
        The positive and the negative term, each of the logits' shape.
    """
    if eps == 0:
        return -F.logsigmoid(logits), -F.logsigmoid(-logits)
    log_eps = logits.new_tensor(math.log(eps))
    return -torch.logaddexp(F.logsigmoid(logits), log_eps), -torch.logaddexp(F.logsigmoid(-logits), log_eps)


def check_reduction(reduction: str) -> str:
    """Validate a reduction name.

    Args:
        reduction: "none", "mean" or "sum".

    Returns:
        `reduction` itself, or a ValueError naming the valid choices.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    return reduction


def reduce(values: Tensor, reduction: Reduction = "mean", known: Tensor | None = None) -> Tensor:
    """Apply `reduction` to per-element losses.

    Args:
        values: per-element losses, (B, C) entries or (B,) rows.
        reduction: "none", "mean" or "sum" (see the module docstring).
        known: bool of values' shape, the elements that count (None: all). The others become 0 with
            zero gradient, and "mean" divides by the number of known elements (at least 1).

    Returns:
        values (masked) for "none", else a scalar.
    """
    check_reduction(reduction)
    if known is not None:
        values = torch.where(known, values, 0.0)
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    return values.mean() if known is None else values.sum() / known.sum().clamp(min=1)


def with_batch_term(values: Tensor, term: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Per-element losses plus a batch-level `term` counted once per element (EPR's penalty).

    Args:
        values: per-element losses, any shape, unreduced.
        term: scalar.
        reduction: "none" -> values + term; "mean" -> mean(values) + term; "sum" -> sum(values) + numel * term.

    Returns:
        values' shape for "none", else a scalar.
    """
    if check_reduction(reduction) == "none":
        return values + term
    return reduce(values, reduction) + (term if reduction == "mean" else values.numel() * term)


def known_or_all(known: Tensor | None, like: Tensor) -> Tensor:
    """The `known` mask, or all True when it is None.

    Args:
        known: bool (or 0/1) mask, or None.
        like: tensor whose shape and device the all-True mask takes.

    Returns:
        A bool tensor.
    """
    return torch.ones_like(like, dtype=torch.bool) if known is None else known.bool()


class FullLabelLoss(nn.Module):
    """Base of the full-label losses: `forward(logits (B,C), targets (B,C), known (B,C) bool | None) -> scalar`
    (the per-element tensor with reduction="none").

    Args:
        reduction: "none", "mean" or "sum" (a ValueError otherwise).
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)


class SinglePositiveLoss(nn.Module):
    """Base of the single-positive losses: `forward(logits (B,C), observed (B,C) bool, index (B,) long) -> scalar`
    (the per-element tensor with reduction="none") and `set_epoch(epoch)`.

    Stateful losses keep their tables in buffers/parameters so `state_dict()` checkpoints them, and update them
    in training mode only.

    Args:
        reduction: "none", "mean" or "sum" (a ValueError otherwise).
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.epoch = 0
        self.reduction = check_reduction(reduction)

    def set_epoch(self, epoch: int) -> None:
        """Record the current epoch; called at each epoch start.

        Args:
            epoch: 0-based epoch index.
        """
        self.epoch = int(epoch)


def gather_across_ranks(tensor: Tensor) -> Tensor:
    """Rows of `tensor` from every process of an initialised torch.distributed group, concatenated in rank order.

    Keeps per-image loss tables identical on all ranks (DDP broadcasts buffers from rank 0). Bool tensors travel
    as uint8 (gloo has no bool).

    Args:
        tensor: (N, ...) this process's rows; N may differ between ranks.

    Returns:
        The tensor itself in a single process, else every rank's rows.

    Shape:
        (N, ...) -> (sum of N over ranks, ...), same dtype.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    payload = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    size = torch.tensor([payload.shape[0]], device=payload.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    lengths = [int(s) for s in sizes]  # one host sync per step, only in multi-process runs
    padded = payload.new_zeros((max(lengths), *payload.shape[1:]))
    padded[: payload.shape[0]] = payload
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    rows = torch.cat([part[:length] for part, length in zip(parts, lengths)])
    return rows.bool() if tensor.dtype == torch.bool else rows
