"""What every loss family shares: the two registries, fp32 casting, stable log-probabilities,
masked means, the single-positive module base and cross-process gathering of loss state."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from spml.registry import Registry

LOSSES = Registry("loss")  # full labels: forward(logits, targets, known) -> scalar
SPML_LOSSES = Registry("single-positive loss")  # forward(logits, observed, index) -> scalar


def as_float(logits: Tensor) -> Tensor:
    """Half/bfloat16 -> float32 (losses are computed in fp32 even under autocast); float64 stays."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def neg_log_probs(logits: Tensor, eps: float = 0.0) -> tuple[Tensor, Tensor]:
    """(-log(p + eps), -log(1 - p + eps)) with p = sigmoid(logits), each of the logits' shape.

    eps = 0 gives the exact binary cross-entropy terms (-logsigmoid(+-s)); eps > 0 reproduces the
    original implementations' `-log(x + eps)` as -logaddexp(logsigmoid(+-s), log eps), finite for any s.
    """
    if eps == 0:
        return -F.logsigmoid(logits), -F.logsigmoid(-logits)
    log_eps = logits.new_tensor(math.log(eps))
    return -torch.logaddexp(F.logsigmoid(logits), log_eps), -torch.logaddexp(F.logsigmoid(-logits), log_eps)


def masked_mean(values: Tensor, known: Tensor | None) -> Tensor:
    """Mean of `values` over the entries where `known` is True (0 when none is); masked entries
    get zero gradient. values, known: (B, C) -> scalar."""
    if known is None:
        return values.mean()
    return torch.where(known, values, 0.0).sum() / known.sum().clamp(min=1)


def known_or_all(known: Tensor | None, like: Tensor) -> Tensor:
    """The `known` mask, or all True when it is None."""
    return torch.ones_like(like, dtype=torch.bool) if known is None else known.bool()


class SinglePositiveLoss(nn.Module):
    """Base of the single-positive losses: `forward(logits (B,C), observed (B,C) bool, index (B,) long)
    -> scalar` and `set_epoch(epoch)` (0-based, called at each epoch start). Stateful losses keep their
    tables in buffers/parameters so `state_dict()` checkpoints them, and update them in training mode only."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


def gather_across_ranks(tensor: Tensor) -> Tensor:
    """Rows of `tensor` from every process of an initialised torch.distributed group, concatenated
    in rank order; the tensor itself in a single process. Keeps per-image loss tables identical on all
    ranks (DDP broadcasts buffers from rank 0). Bool tensors travel as uint8 (gloo has no bool)."""
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
