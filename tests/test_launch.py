"""spml.experiments.launch's cluster settings, and the lock checks a grid shared by several nodes relies on
(spml.utils.lock: the mount options that make POSIX locks node-local, the lock test that takes no lock). The
launchers themselves run end to end in tests/test_ablate.py."""

import subprocess
import sys

import pytest

from spml.config import ConfigError
from spml.experiments.launch import ClusterSettings, cluster_settings
from spml.utils.lock import (
    GRID_LOCK_FILE,
    RunFolderLocked,
    RunLock,
    held,
    shared_lock_problem,
)
from tests.conftest import REPO


def test_cluster_settings_come_from_the_yaml_then_the_command_line():
    section = {"partition": "gpu", "gpus": 4, "time_min": 600, "sbatch": {"qos": "high"}, "setup": "module load x"}
    settings = cluster_settings(section, "grid.yaml", {"partition": "long", "cpus": None, "mem_gb": 64})
    assert settings == ClusterSettings(
        partition="long", gpus=4, time_min=600, mem_gb=64.0, sbatch={"qos": "high"}, setup=("module load x",)
    )
    with pytest.raises(ConfigError, match=r"grid.yaml: unknown key cluster.gpu; valid: \['account'"):
        cluster_settings({"gpu": 1}, "grid.yaml")
    with pytest.raises(ConfigError, match=r"cluster.gpus=1.5 must be int"):
        cluster_settings({"gpus": 1.5}, "grid.yaml")
    with pytest.raises(ConfigError, match=r"cluster.sbatch=\['qos'\] must be an \{option: value\} mapping"):
        cluster_settings({"sbatch": ["qos"]}, "grid.yaml")
    with pytest.raises(ConfigError, match="out of range"):
        cluster_settings({"time_min": 0}, "grid.yaml")


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
10.0.0.1@tcp:/scratch /scratch lustre rw,flock,lazystatfs 0 0
10.0.0.1@tcp:/work /work lustre rw,localflock 0 0
10.0.0.1@tcp:/old /old lustre rw,lazystatfs 0 0
nas:/home /home nfs4 rw,vers=4.2,hard,proto=tcp 0 0
nas:/data /data nfs rw,vers=3,nolock 0 0
nas:/proj /proj nfs4 rw,vers=4.1,local_lock=posix 0 0
"""


@pytest.mark.parametrize(
    "folder, problem",
    [
        ("/scratch/me/grid", None),
        ("/home/me/runs/not/yet/made", None),
        ("/tmp/grid", None),
        ("/work/me/grid", "localflock keeps file locks on each node"),
        ("/old/grid", "refuses file locks"),
        ("/data/grid", "keeps file locks on each client"),
        ("/proj/x", "keeps file locks on each client"),
    ],
)
def test_file_systems_whose_locks_do_not_reach_other_nodes_are_named(folder, problem):
    found = shared_lock_problem(folder, MOUNTS)
    assert found is None if problem is None else problem in found


def test_held_tells_whether_another_process_holds_a_lock_without_taking_it(tmp_path):
    lock = tmp_path / GRID_LOCK_FILE
    assert held(lock) is False  # no file: nobody holds it
    script = (
        "import time; from spml.utils.lock import RunLock\n"
        f"with RunLock({str(tmp_path)!r}, lock_file={GRID_LOCK_FILE!r}):\n"
        "    print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline() == "held\n"
        assert held(lock) is True
        assert held(lock) is True  # asking took nothing: the holder still has it, and a locker is refused
        with pytest.raises(RunFolderLocked, match="is in use"), RunLock(tmp_path, lock_file=GRID_LOCK_FILE):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert held(lock) is False  # a dead holder leaves no lock behind
