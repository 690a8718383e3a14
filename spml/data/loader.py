"""Training/evaluation DataLoaders with a per-epoch seeded order (exact resume, same order on every rank), and
worker processes that never outlive the process that started them.

Loader workers end on every way a process ends: `one_pass` ends a pass's workers at once when an error leaves it
(persistent workers are otherwise kept by the loader, and Python's multiprocessing exit handler would wait for them
forever), `end_workers` ends them when a loader is done, and a worker ends on a SIGTERM from its own main process
(multiprocessing's exit handler, torch's shutdown) while it ignores one from anyone else. A worker whose main
process died ends at its next look at the parent (torch's watchdog, within seconds).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from spml.data.dataset import collate_skip_none


class EpochSampler(Sampler[int]):
    """A permutation of range(n) drawn from seed + epoch: reproducible per epoch, no hidden state.

    Args:
        size: n, the dataset's length.
        seed: the base seed.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose permutation the next iteration draws.

        Args:
            epoch: the epoch.
        """
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


WorkerStart = Literal["default", "fork", "spawn", "forkserver"]


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader worker_init_fn: the main process decides how a run stops.

    Ctrl-C reaches every process of the terminal's process group and schedulers signal every process of a job; a
    worker that ended on it would break the main process's clean stop (spml.engine.signals). So a worker ignores
    SIGINT, and SIGTERM unless its own main process sent it: that one (multiprocessing's exit handler, torch's
    shutdown of a worker that did not answer) ends the worker at once. Only a signal taken with sigwaitinfo tells its
    sender, so SIGTERM is blocked in every thread and one thread waits for it.

    Args:
        worker_id: the worker's index (unused).
    """
    main_process = os.getppid()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit the mask
    threading.Thread(target=_end_on_sigterm_from, args=(main_process,), name="spml-sigterm", daemon=True).start()


def _end_on_sigterm_from(main_process: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != main_process:
        pass
    os._exit(0)  # exit code 0: the main process's SIGCHLD check (torch) takes it as an orderly end


def end_workers(loader: DataLoader) -> None:
    """End the worker processes of `loader` now; a later pass starts new ones.

    Persistent workers live in the loader's current iterator (torch's `_iterator`).

    Args:
        loader: a DataLoader or accelerate's wrapper of one.
    """
    base = getattr(loader, "base_dataloader", loader)
    iterator = getattr(base, "_iterator", None)
    if isinstance(iterator, _MultiProcessingDataLoaderIter):
        iterator._shutdown_workers()
    base._iterator = None


@contextmanager
def one_pass(loader: DataLoader, keep_workers: bool = True) -> Iterator[Iterator]:
    """One pass over `loader` whose workers end at once when an error leaves the block.

    `with one_pass(loader) as batches: for batch in batches: ...`; an error (or a stop signal's exception) ends the
    workers, and so does any way out with `keep_workers=False` (a loader used once).

    Args:
        loader: the loader.
        keep_workers: keep persistent workers after a normal end.

    Yields:
        The pass's batch iterator.
    """
    batches = iter(loader)
    keep = False
    try:
        yield batches
        keep = keep_workers
    finally:
        if hasattr(batches, "close"):  # accelerate's loaders iterate in a generator
            batches.close()
        if not keep:
            end_workers(loader)


def _loader(
    dataset: Dataset, batch_size: int, num_workers: int, worker_start: WorkerStart = "default", **kwargs
) -> DataLoader:
    """A private generator keeps each new iterator's worker-seed draw off the global RNG, which the
    augmentation uses: otherwise resuming mid-epoch would shift every later random draw. `worker_start`: how
    worker processes start (multiprocessing's start methods; default: the platform's)."""
    if batch_size < 1 or num_workers < 0:
        raise ValueError(
            f"batch_size={batch_size}, num_workers={num_workers}: the batch size must be at least 1, "
            "the workers at least 0"
        )
    context = worker_start if num_workers and worker_start != "default" else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_skip_none,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
        multiprocessing_context=context,
        worker_init_fn=leave_stop_signals_to_the_main_process,
        **kwargs,
    )


def make_train_loader(
    dataset: Dataset,
    sampler: EpochSampler,
    batch_size: int,
    num_workers: int = 0,
    worker_start: WorkerStart = "default",
) -> DataLoader:
    """Batches of `batch_size` in the sampler's per-epoch order, the last incomplete batch dropped.

    Args:
        dataset: the training dataset (at least `batch_size` items; a ValueError otherwise).
        sampler: the per-epoch order.
        batch_size: images per batch.
        num_workers: loader worker processes (0: in this process).
        worker_start: how worker processes start (multiprocessing's start methods; default: the platform's).

    Returns:
        The DataLoader.
    """
    if len(dataset) < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(dataset)} training images")
    return _loader(dataset, batch_size, num_workers, worker_start, sampler=sampler, drop_last=True)


def make_eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, worker_start: WorkerStart = "default"
) -> DataLoader:
    """Every sample once, in dataset order.

    Args:
        dataset: the dataset.
        batch_size: images per batch.
        num_workers: loader worker processes (0: in this process).
        worker_start: how worker processes start (multiprocessing's start methods; default: the platform's).

    Returns:
        The DataLoader.
    """
    return _loader(dataset, batch_size, num_workers, worker_start, shuffle=False)
