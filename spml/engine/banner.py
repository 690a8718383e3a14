"""The first lines of a training run: world size, device, precision and effective batch, and a warning when
the launcher asked for more processes than the run has."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from accelerate import Accelerator


def requested_processes(environ: Mapping[str, str]) -> int | None:
    """Processes the launcher was asked for, as its environment shows it: WORLD_SIZE (torchrun, accelerate's
    multi-GPU launcher), or "more than one" (returned as 2) for accelerate's single-process launcher, which
    sets MASTER_ADDR/MASTER_PORT only when given --num_processes > 1 but then starts one process
    (`accelerate launch --cpu --num_processes 2` on a machine without a multi-CPU setup). None: no sign.

    Args:
        environ: the process environment (e.g. os.environ).

    Returns:
        The requested number of processes, 2 for "more than one", or None when the environment shows no sign.
    """
    if environ.get("WORLD_SIZE", "").isdigit():
        return int(environ["WORLD_SIZE"])
    if "ACCELERATE_USE_CPU" in environ and "MASTER_ADDR" in environ:
        return 2
    return None


def launcher_warning(environ: Mapping[str, str], world_size: int) -> str | None:
    """A warning when the environment asked for more processes than `world_size`, else None.

    Args:
        environ: the process environment (e.g. os.environ).
        world_size: the processes this run has.

    Returns:
        The warning text, or None when the launcher asked for no more than `world_size` processes.
    """
    requested = requested_processes(environ)
    if requested is None or requested <= world_size:
        return None
    asked = f"{requested}" if environ.get("WORLD_SIZE", "").isdigit() else "several"
    return (
        f"WARNING: the launcher asked for {asked} processes but this run has {world_size}: every process "
        "trains alone on the whole data. `accelerate launch --num_processes N` without --multi_gpu starts one "
        "process; use `accelerate launch --multi_gpu --num_processes N` on GPUs or "
        "`torchrun --nproc_per_node N tools/train.py ...` on CPUs (README, Multi-GPU / multi-node)."
    )


def run_banner(accelerator: Accelerator, batch_size: int, accumulate: int, environ: Mapping[str, str]) -> list[str]:
    """The lines a run starts with (print them on the main process).

    Args:
        accelerator: the run's accelerator (device, process count, precision).
        batch_size: images per process per step.
        accumulate: gradient accumulation steps.
        environ: the process environment, for the launcher warning.

    Returns:
        The banner lines: world size, device, precision and effective batch, then the warning if any.
    """
    device = str(accelerator.device)
    if accelerator.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(accelerator.device)})"
    world = accelerator.num_processes
    kind = "single process" if world == 1 else accelerator.distributed_type.value.lower().replace("_", "-")
    lines = [
        f"world size {world} ({kind}), device {device}, "
        f"precision {accelerator.mixed_precision}, effective batch {batch_size * world * accumulate} = "
        f"{batch_size} per process x {world} processes x {accumulate} accumulation steps"
    ]
    warning = launcher_warning(environ, world)
    return lines + ([warning] if warning else [])
