"""Per-image loss tables stay identical across processes (2-process gloo on the CPU)."""

import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spml.losses import build_loss


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    context = {"num_classes": 3, "num_images": 6, "expected_positives": 1.0}
    ll_cp = build_loss("ll_cp", {"delta": 0.2}, mode="spml", **context).train()
    apl = build_loss("em_apl", {"fraction": 0.5}, mode="spml", **context).train()
    ll_cp.set_epoch(1)
    rows = torch.arange(3) + 3 * rank  # rank 0 sees images 0-2, rank 1 images 3-5; rank 1 one image fewer
    rows = rows[: 3 - rank]
    logits = torch.randn(len(rows), 3, generator=torch.Generator().manual_seed(rank))
    observed = torch.nn.functional.one_hot(rows % 3, 3).bool()
    ll_cp(logits, observed, rows), apl(logits, observed, rows)
    apl.set_epoch(1)
    torch.save(
        {
            "flipped": ll_cp.flipped,
            "probs": apl.recorded_probs,
            "soft": apl.soft_target,
            "logits": logits,
            "rows": rows,
        },
        f"{out}/rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_tables_gather_updates_from_every_rank(tmp_path):
    # fork: the children reuse the imported torch (spawn would import it again, several seconds)
    context = mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 60
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("2-process gloo workers did not finish within 60 s")
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(zero["flipped"], one["flipped"])
    assert zero["flipped"][:3].any() and zero["flipped"][3:5].any() and not zero["flipped"][5].any()
    assert torch.equal(zero["soft"].isnan(), one["soft"].isnan()) and torch.isfinite(zero["soft"]).any()
    for rank in (zero, one):
        assert torch.allclose(zero["probs"][rank["rows"]], torch.sigmoid(rank["logits"]))
    assert torch.isnan(zero["probs"][5]).all()
