"""The first lines of a run: what it runs on, and a warning when the launcher asked for more processes."""

from accelerate import Accelerator

from spml.engine.banner import launcher_warning, run_banner


def test_launcher_warning_compares_the_requested_processes_with_the_world_size():
    assert launcher_warning({}, 1) is None
    assert launcher_warning({"WORLD_SIZE": "2"}, 2) is None
    torchrun = launcher_warning({"WORLD_SIZE": "4"}, 1)
    assert torchrun.startswith("WARNING") and "asked for 4 processes but this run has 1" in torchrun
    # accelerate launch --cpu --num_processes 2: its simple launcher sets MASTER_ADDR, then starts one process
    simple = launcher_warning({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, 1)
    assert "asked for several processes but this run has 1" in simple and "torchrun" in simple
    assert launcher_warning({"ACCELERATE_USE_CPU": "True"}, 1) is None  # accelerate launch of one process


def test_banner_names_world_size_device_precision_and_effective_batch():
    lines = run_banner(Accelerator(cpu=True), batch_size=16, accumulate=4, environ={})
    assert lines == [
        "world size 1 (single process), device cpu, precision no, effective batch 64 = 16 per "
        "process x 1 processes x 4 accumulation steps"
    ]
