"""Training/evaluation DataLoaders with a per-epoch seeded order (exact resume, same order on every rank)."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from spml.config import DataConfig
from spml.data.dataset import collate_skip_none


class EpochSampler(Sampler[int]):
    """A permutation of range(n) drawn from seed + epoch: reproducible per epoch, no hidden state."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def _loader(dataset: Dataset, batch_size: int, config: DataConfig, **kwargs) -> DataLoader:
    """A private generator keeps each new iterator's worker-seed draw off the global RNG, which the
    augmentation uses: otherwise resuming mid-epoch would shift every later random draw."""
    workers = config.num_workers
    if batch_size < 1 or workers < 0:
        raise ValueError(f"data.batch_size={config.batch_size}, data.eval_batch_size={config.eval_batch_size}, "
                         f"data.num_workers={workers}: batch sizes must be at least 1, workers at least 0")
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_none,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0), **kwargs)


def make_train_loader(dataset: Dataset, sampler: EpochSampler, config: DataConfig) -> DataLoader:
    if len(dataset) < config.batch_size:
        raise ValueError(f"data.batch_size={config.batch_size} exceeds the {len(dataset)} training images")
    return _loader(dataset, config.batch_size, config, sampler=sampler, drop_last=True)


def make_eval_loader(dataset: Dataset, config: DataConfig) -> DataLoader:
    return _loader(dataset, config.eval_batch_size, config, shuffle=False)
