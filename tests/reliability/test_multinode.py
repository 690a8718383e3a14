"""Multi-node training proven on the CPU: the README's multi-node torchrun command as 2 "nodes" x 1 process, each
node its own torchrun agent, joined by a c10d rendezvous on localhost (as two machines of a cluster join at the main
node's address), gloo. The run trains,
checkpoints, is stopped by a SIGTERM to one node, resumes on two nodes again, and ends exactly as the uninterrupted
2-process single-node run: the same world size gives every rank the same shard of each epoch's seeded order and the
same per-process batch, so the all-reduced gradients, hence the weights and the metrics, are identical. (A 1-process
run is not the reference: with one process each step's batch is another set of images.)"""

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import GLOO_ABORT, REPO, TWO_PROCESS_RUN, torchrun_env
from tests.reliability.conftest import (
    STALLING_TRAIN,
    final_results,
    latest_step,
    progress_of,
    reaped,
    wait_for,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def readme_node_options() -> dict[str, str]:
    """The options of the README's multi-node torchrun command (section Multi-GPU / multi-node)."""
    section = (REPO / "README.md").read_text().split("## Multi-GPU / multi-node", 1)[1]
    words = re.search(r"^torchrun (--nnodes .*?) \\\n\s+tools/train.py", section, re.MULTILINE).group(1).split()
    return dict(zip(words[::2], words[1::2]))


def node_command(script: Path, *args: str, endpoint: str, run_id: str) -> list[str]:
    """What each node runs: the README's command, with 1 process per node and a rendezvous on localhost."""
    options = readme_node_options()
    assert set(options) == {"--nnodes", "--nproc_per_node", "--rdzv_backend", "--rdzv_endpoint", "--rdzv_id"}
    assert (options["--nnodes"], options["--rdzv_backend"]) == ("2", "c10d")
    options.update({"--nproc_per_node": "1", "--rdzv_endpoint": endpoint, "--rdzv_id": run_id})
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *(f"{key}={value}" for key, value in options.items()),
        str(script),
        *args,
    ]


def start_nodes(script: Path, *args: str, run_id: str) -> list[subprocess.Popen]:
    endpoint = f"localhost:{free_port()}"
    return [
        subprocess.Popen(
            node_command(script, *args, endpoint=endpoint, run_id=run_id),
            cwd=REPO,
            env=torchrun_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for _ in range(2)
    ]


def test_two_nodes_train_stop_resume_and_end_as_the_single_node_run(two_process_run, tmp_path):
    for attempt in range(3):  # a new try only for the known gloo abort at exit
        out, progress = tmp_path / f"run{attempt}", tmp_path / f"progress{attempt}"
        ranks = [Path(f"{progress}-{rank}") for rank in (0, 1)]
        nodes = start_nodes(
            STALLING_TRAIN,
            "--step-delay",
            "0.3",
            "--progress",
            str(progress),
            *TWO_PROCESS_RUN,
            f"train.out={out}",
            run_id=f"stop{attempt}",
        )
        with reaped(nodes[0]), reaped(nodes[1]):
            wait_for(lambda ranks=ranks: min(progress_of(path)["step"] for path in ranks) >= 2, nodes[0])
            nodes[0].send_signal(signal.SIGTERM)  # one node's agent forwards it to its process; the ranks agree
            errors = [node.communicate(timeout=240)[1].decode() for node in nodes]
        if not any(GLOO_ABORT in err for err in errors):
            break
    reports = [progress_of(path) for path in ranks]
    step = reports[0]["step"]
    assert [(r["step"], r["exit"]) for r in reports] == [(step, 128 + signal.SIGTERM)] * 2, (reports, errors)
    assert latest_step(out / "checkpoints") == step < latest_step(two_process_run / "checkpoints")
    assert not (out / "eval").exists()
    for attempt in range(3):
        nodes = start_nodes(REPO / "tools" / "train.py", "--resume", str(out), run_id=f"resume{attempt}")
        with reaped(nodes[0]), reaped(nodes[1]):
            errors = [node.communicate(timeout=300)[1].decode() for node in nodes]
        if [node.returncode for node in nodes] == [0, 0] or not any(GLOO_ABORT in err for err in errors):
            break
    assert [node.returncode for node in nodes] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    (resumed,) = [json.loads(line) for line in (out / "resumes.jsonl").read_text().splitlines()]
    assert (resumed["step"], resumed["processes"]) == (step, 2)
    assert final_results(out) == final_results(two_process_run)
