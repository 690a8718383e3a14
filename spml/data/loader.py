"""Training/evaluation DataLoaders with a per-epoch seeded order (exact resume, same order on every rank)."""
from __future__ import annotations

import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

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


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader worker_init_fn: workers ignore SIGINT/SIGTERM. Ctrl-C reaches every process of the terminal's
    process group and schedulers signal every process of a job; a worker that ended on it would break the main
    process's clean stop (spml.engine.signals). Workers end with the main process."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _loader(dataset: Dataset, batch_size: int, num_workers: int, **kwargs) -> DataLoader:
    """A private generator keeps each new iterator's worker-seed draw off the global RNG, which the
    augmentation uses: otherwise resuming mid-epoch would shift every later random draw."""
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size={batch_size}, num_workers={num_workers}: the batch size must be at least 1, "
                         "the workers at least 0")
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip_none,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(0),
                      worker_init_fn=leave_stop_signals_to_the_main_process, **kwargs)


def make_train_loader(dataset: Dataset, sampler: EpochSampler, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Batches of `batch_size` in the sampler's per-epoch order, the last incomplete batch dropped."""
    if len(dataset) < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(dataset)} training images")
    return _loader(dataset, batch_size, num_workers, sampler=sampler, drop_last=True)


def make_eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Every sample once, in dataset order."""
    return _loader(dataset, batch_size, num_workers, shuffle=False)
