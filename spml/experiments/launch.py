"""Grid launchers: a grid's runs on this machine one after another (`local`), or one cluster job per run through
submitit (`slurm`; `submitit-local` and `submitit-debug` run the same jobs without a scheduler, for tests and for
trying a cluster setup on a workstation).

Every launcher trains a run through the same function, spml.experiments.grid.run_one (skip when finished, the grid
lock, resume when interrupted), so a job on a node does exactly what a local grid does for that run. A submitit
launcher submits the unfinished runs as one job array (`executor.batch()`), writes `<grid>/jobs/submitted-*.json`
(job id -> run folder, one file per launch), and (unless told not to wait) waits for the jobs, then collects the results from the run folders.
A job writes `<run>/job.json` (its id, node and submitit log files) when it starts the training; the training's
own output is `<run>/train_output.txt`. On preemption or time-out (Slurm's `--signal=USR2@N` warning, which
submitit catches) the job stops its training with SIGTERM (a checkpoint of the current step) and is requeued; the
requeued job resumes the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spml.config import ConfigError, read_yaml
from spml.experiments.grid import PlannedRun, finished, grid_rows, run_grid, run_one
from spml.utils.io import write_text_atomic
from spml.utils.lock import GRID_LOCK_FILE, LOCK_FILE, held, shared_lock_problem

LAUNCHERS = ("local", "slurm", "submitit-local", "submitit-debug")
SUBMITIT_CLUSTERS = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}
JOBS_FOLDER = "jobs"  # <grid>/jobs/: submitit's <job id>_* pickles and logs; submitted-*.json: job id -> run folder


@dataclass(frozen=True)
class ClusterSettings:
    """What each run's job asks the scheduler for: the `cluster:` section of a grid YAML, then the command line.

    Args:
        partition: Slurm partition ("" = the cluster's default).
        gpus: GPUs per run (one node); more than one trains the run with torchrun, one process per GPU.
        cpus: CPU cores per run (data loading workers + the main process).
        mem_gb: memory per run in GB.
        time_min: time limit per job in minutes; a run that needs longer is requeued and resumes.
        account: Slurm account ("" = none given).
        max_parallel: jobs of the array running at once.
        signal_delay_s: seconds before the time limit at which Slurm warns the job (USR2): the training stops and
            checkpoints within them.
        sbatch: more #SBATCH options, {name: value} (e.g. {qos: high, constraint: a100}).
        setup: shell lines run before the job (module load, conda activate, export HF_HUB_OFFLINE=1).
    """

    partition: str = ""
    gpus: int = 1
    cpus: int = 8
    mem_gb: float = 32.0
    time_min: int = 24 * 60
    account: str = ""
    max_parallel: int = 256
    signal_delay_s: int = 120
    sbatch: dict[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()


def cluster_settings(
    section: dict[str, Any] | None, where: str, overrides: dict[str, Any] | None = None
) -> ClusterSettings:
    """ClusterSettings from a YAML `cluster:` section, then `overrides`.

    An unknown key or a value of the wrong type is a ConfigError naming it.

    Args:
        section: the `cluster:` section (None: none).
        where: names the section in errors.
        overrides: the command line's values (None = not given).

    Returns:
        The ClusterSettings.
    """
    values = {**(section or {}), **{key: value for key, value in (overrides or {}).items() if value is not None}}
    fields = {f.name for f in dataclasses.fields(ClusterSettings)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key cluster.{unknown[0]}; valid: {sorted(fields)}")
    defaults, coerced = ClusterSettings(), {}
    for key, value in values.items():
        default = getattr(defaults, key)
        if key == "setup" and isinstance(value, str):
            value = [value]
        if isinstance(default, dict):
            valid, expected = isinstance(value, dict), "an {option: value} mapping"
        elif isinstance(default, tuple):
            valid, expected = isinstance(value, (list, tuple)), "a list of shell lines"
        elif isinstance(default, (int, float)):
            valid = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and (isinstance(default, float) or float(value).is_integer())
            )
            expected = type(default).__name__
        else:
            valid, expected = isinstance(value, str), "str"
        if not valid:
            raise ConfigError(f"{where}: cluster.{key}={value!r} must be {expected}")
        coerced[key] = tuple(map(str, value)) if isinstance(default, tuple) else type(default)(value)
    settings = ClusterSettings(**coerced)
    if settings.gpus < 0 or settings.cpus < 1 or settings.mem_gb <= 0 or settings.time_min < 1:
        raise ConfigError(
            f"{where}: cluster settings out of range: gpus >= 0, cpus >= 1, mem_gb > 0, time_min >= 1 (got {settings})"
        )
    return settings


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the launcher options tools/ablate.py and tools/masking_experiment.py share.

    Args:
        parser: the tool's argument parser.
    """
    group = parser.add_argument_group("launcher (docs: README 'Grids on a cluster')")
    group.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local: every run in turn on this machine (default); slurm: one job per run through "
        "submitit (a job array); submitit-local / submitit-debug: the same jobs without a "
        "scheduler (parallel local processes / in this process)",
    )
    group.add_argument(
        "--cluster-config",
        help="YAML file whose `cluster:` section sets the job resources (after the grid's own `cluster:` section)",
    )
    group.add_argument("--partition", help="Slurm partition")
    group.add_argument("--gpus", type=int, help="GPUs per run (default 1; more trains with torchrun)")
    group.add_argument("--cpus", type=int, help="CPU cores per run (default 8)")
    group.add_argument("--mem-gb", type=float, help="memory per run in GB (default 32)")
    group.add_argument("--time-min", type=int, help="time limit per job in minutes (default 1440)")
    group.add_argument("--account", help="Slurm account")
    group.add_argument("--max-parallel", type=int, help="jobs running at once (default 256)")
    group.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="more #SBATCH options (repeatable), e.g. --sbatch qos=high --sbatch constraint=a100",
    )
    group.add_argument(
        "--no-wait", action="store_true", help="submit and return; collect the results later with --report-only"
    )
    group.add_argument(
        "--throughput",
        help="tools/benchmark.py --json output: the measured images/s behind "
        "--dry-run's GPU-hour estimate (default: a stated figure)",
    )
    group.add_argument(
        "--train-images", type=int, help="train images per run for the --dry-run estimate (default: read from the data)"
    )


def settings_from_arguments(
    args: argparse.Namespace, grid_section: dict[str, Any] | None, grid_file: str
) -> ClusterSettings:
    """The cluster settings: the grid's `cluster:` section < --cluster-config's < the command-line flags.

    Args:
        args: the parsed arguments (add_launcher_arguments).
        grid_section: the grid's `cluster:` section.
        grid_file: the grid file (named in errors).

    Returns:
        The ClusterSettings.
    """
    section = dict(grid_section or {})
    if args.cluster_config:
        extra = read_yaml(args.cluster_config)
        if not isinstance(extra, dict) or not isinstance(extra.get("cluster"), dict):
            raise ConfigError(f"{args.cluster_config}: --cluster-config needs a `cluster:` section (a mapping)")
        section.update(extra["cluster"])
    sbatch = dict(section.get("sbatch") or {})
    for item in args.sbatch:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--sbatch {item!r}: write OPTION=VALUE, e.g. qos=high")
        sbatch[key.lstrip("-")] = value
    if sbatch:
        section["sbatch"] = sbatch
    flags = {
        "partition": args.partition,
        "gpus": args.gpus,
        "cpus": args.cpus,
        "mem_gb": args.mem_gb,
        "time_min": args.time_min,
        "account": args.account,
        "max_parallel": args.max_parallel,
    }
    where = f"{grid_file}" + (f" + {args.cluster_config}" if args.cluster_config else "") + " + command line"
    return cluster_settings(section, where, flags)


def import_submitit():
    """submitit, or a ConfigError saying how to install it (the `cluster` extra).

    Returns:
        The submitit module.
    """
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "the submitit launchers need submitit: pip install 'spml[cluster]' (or pip install submitit)"
        ) from None
    return submitit


def executor_parameters(settings: ClusterSettings, name: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters of `settings`.

    One node and one task per run (the job starts the run's processes), Slurm's own options prefixed `slurm_`.

    Args:
        settings: the cluster settings.
        name: the jobs' name.

    Returns:
        The parameters.
    """
    parameters: dict[str, Any] = {
        "name": name,
        "timeout_min": settings.time_min,
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": settings.cpus,
        "mem_gb": settings.mem_gb,
        "slurm_array_parallelism": settings.max_parallel,
        "slurm_signal_delay_s": settings.signal_delay_s,
    }
    if settings.gpus:
        parameters["gpus_per_node"] = settings.gpus
    if settings.partition:
        parameters["slurm_partition"] = settings.partition
    if settings.account:
        parameters["slurm_account"] = settings.account
    if settings.sbatch:
        parameters["slurm_additional_parameters"] = dict(settings.sbatch)
    if settings.setup:
        parameters["slurm_setup"] = list(settings.setup)
    return parameters


def make_executor(launcher: str, folder: Path, settings: ClusterSettings, name: str):
    """A submitit AutoExecutor for `launcher` (SUBMITIT_CLUSTERS).

    Args:
        launcher: a submitit launcher name.
        folder: where it writes its files (<job id>_* logs, pickles).
        settings: the cluster settings.
        name: the jobs' name.

    Returns:
        The executor.
    """
    executor = import_submitit().AutoExecutor(folder=folder, cluster=SUBMITIT_CLUSTERS[launcher])
    executor.update_parameters(**executor_parameters(settings, name))
    return executor


def sbatch_script(settings: ClusterSettings, folder: Path, name: str, jobs: int) -> str:
    """The sbatch script the slurm launcher submits for an array of `jobs` runs, as submitit writes it.

    Written through its SlurmExecutor; nothing is submitted, and Slurm need not be installed.

    Args:
        settings: the cluster settings.
        folder: the jobs folder.
        name: the jobs' name.
        jobs: the array's size.

    Returns:
        The script.
    """
    import_submitit()
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    class ScriptOnly(SlurmExecutor):  # SlurmExecutor refuses to exist where srun is missing; scripts need no srun
        @classmethod
        def affinity(cls) -> int:
            return 1

    slurm = ScriptOnly(folder)
    generic = {key.removeprefix("slurm_"): value for key, value in executor_parameters(settings, name).items()}
    slurm.update_parameters(**slurm._convert_parameters(generic))  # AutoExecutor's names -> Slurm's, as it does
    parameters = {**slurm.parameters, **({"map_count": jobs} if jobs > 1 else {})}
    return _make_sbatch_string(command=slurm._submitit_command_str, folder=slurm.folder, **parameters)


class RunJob:
    """One grid run as a submitit job: run_one on the node, with `processes` training processes (its GPUs).

    submitit calls `checkpoint()` on preemption or time-out (Slurm's USR2 warning): the training gets SIGTERM, saves
    a checkpoint of its current step and exits within `grace_s`; the returned submission (a fresh RunJob) is
    requeued and resumes the run.

    Args:
        run: the planned run.
        train_args: its tools/train.py arguments.
        train_script: tools/train.py.
        processes: training processes.
        grace_s: seconds the training has to stop after SIGTERM.
    """

    def __init__(
        self, run: PlannedRun, train_args: list[str], train_script: str, processes: int = 1, grace_s: float = 90.0
    ):
        self.run, self.train_args, self.train_script = run, list(train_args), str(train_script)
        self.processes, self.grace_s = processes, grace_s
        self.process: subprocess.Popen | None = None

    def __call__(self) -> str:
        return run_one(self.run, self.train_args, self.train_script, self.processes, started=self.started)

    def started(self, process: subprocess.Popen) -> None:
        """Keep the training process (to stop it) and record the job in `<run>/job.json`.

        Args:
            process: the training subprocess.
        """
        import submitit

        self.process = process
        environment = submitit.JobEnvironment()
        record = {
            "job_id": environment.job_id,
            "host": environment.hostname,
            "cluster": environment.cluster,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "training_pid": process.pid,
        }
        if "SUBMITIT_FOLDER" in os.environ:  # a job of its own (not submitit's debug executor, in the launcher)
            record.update(stdout=str(environment.paths.stdout), stderr=str(environment.paths.stderr))
        write_text_atomic(self.run.run_dir / "job.json", json.dumps(record, indent=1))

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Stop the training (SIGTERM: checkpoint, exit 143) and return the submission that resumes the run.

        Args:
            *args: submitit's arguments (unused).
            **kwargs: submitit's keyword arguments (unused).

        Returns:
            A submitit DelayedSubmission of a fresh RunJob.
        """
        import submitit

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.grace_s
            while self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
        return submitit.helpers.DelayedSubmission(
            RunJob(self.run, self.train_args, self.train_script, self.processes, self.grace_s)
        )


def submit_runs(
    runs: list[PlannedRun],
    train_script: str | Path,
    extra_overrides: list[str] | tuple[str, ...],
    launcher: str,
    settings: ClusterSettings,
    grid_out: Path,
    name: str,
) -> list[tuple[PlannedRun, Any]]:
    """Submit one job per unfinished run of `runs` as one array; finished runs are skipped here already ([skip]).

    Writes `<grid_out>/jobs/submitted-<time>-<host>-<pid>.json` (job id -> run folder).

    Args:
        runs: the planned runs.
        train_script: tools/train.py.
        extra_overrides: overrides added to every run.
        launcher: a submitit launcher name.
        settings: the cluster settings.
        grid_out: the grid's output folder.
        name: the jobs' name.

    Returns:
        (run, submitit job) pairs.
    """
    problem = shared_lock_problem(grid_out) if launcher == "slurm" else None
    if problem:
        raise ConfigError(f"{grid_out}: {problem}")
    pending = [run for run in runs if not finished(run, [*run.train_args(), *extra_overrides])]
    if not pending:
        return []
    folder = grid_out / JOBS_FOLDER
    executor = make_executor(launcher, folder, settings, name)
    grace = max(10.0, settings.signal_delay_s - 15.0)
    with executor.batch():
        jobs = [
            executor.submit(
                RunJob(run, [*run.train_args(), *extra_overrides], str(train_script), max(1, settings.gpus), grace)
            )
            for run in pending
        ]
    # one file per launch: launchers started at once on one grid (several login nodes) never rewrite each other's
    record = folder / f"submitted-{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{os.getpid()}.json"
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps({job.job_id: str(run.run_dir) for run, job in zip(pending, jobs)}, indent=1))
    for run, job in zip(pending, jobs):
        print(f"[job ] {job.job_id} {run.variant} seed {run.seed} -> {run.run_dir}")
    return list(zip(pending, jobs))


def wait_for(submitted: list[tuple[PlannedRun, Any]], poll_s: float = 10.0) -> None:
    """Wait for every job and print each run's outcome (run_one's answer, or the job's error).

    Then wait for the runs a job left to another process ("busy": another launcher's job, or a training started by
    hand, is on it) until nobody holds their locks, so the results cover them too.

    Args:
        submitted: (run, job) pairs (submit_runs).
        poll_s: seconds between lock checks.
    """
    busy = []
    for run, job in submitted:
        try:
            outcome = job.result()
        except Exception as error:  # noqa: BLE001 (a job that died: node failure, out of memory, cancelled)
            lines = str(error).strip().splitlines()
            outcome = f"job failed: {lines[-1] if lines else type(error).__name__}"  # its run is not done
        print(f"[done] {job.job_id} {run.variant} seed {run.seed}: {outcome}")
        if outcome == "busy":
            busy.append(run)
    for run in busy:
        if any(held(run.run_dir / name) for name in (GRID_LOCK_FILE, LOCK_FILE)):
            print(f"[wait] {run.variant} seed {run.seed}: another process is training it ({run.run_dir})")
        while any(held(run.run_dir / name) for name in (GRID_LOCK_FILE, LOCK_FILE)):
            time.sleep(poll_s)


def launch(
    runs: list[PlannedRun],
    train_script: str | Path,
    extra_overrides: list[str] | tuple[str, ...],
    launcher: str,
    settings: ClusterSettings,
    grid_out: Path,
    name: str,
    wait: bool = True,
) -> pd.DataFrame | None:
    """Train `runs` with `launcher` (LAUNCHERS).

    Args:
        runs: the planned runs.
        train_script: tools/train.py.
        extra_overrides: overrides added to every run.
        launcher: local | a submitit launcher.
        settings: the cluster settings.
        grid_out: the grid's output folder.
        name: the jobs' name.
        wait: wait for the jobs.

    Returns:
        The rows of every run as its folder is after the jobs (or the local grid) ended, or None when the jobs were
        submitted without waiting.
    """
    if launcher == "local":  # the cluster settings are for jobs: a local grid trains as today, one process per run
        return run_grid(runs, train_script, extra_overrides)
    submitted = submit_runs(runs, train_script, extra_overrides, launcher, settings, grid_out, name)
    if not wait:
        print(
            f"{len(submitted)} jobs submitted; collect the results when they have finished with the same command "
            "and --report-only"
        )
        return None
    wait_for(submitted)
    return grid_rows(runs)


def dry_run(
    runs: list[PlannedRun],
    train_script: str | Path,
    extra_overrides: list[str] | tuple[str, ...],
    launcher: str,
    settings: ClusterSettings,
    grid_out: Path,
    name: str,
    throughput: str | None = None,
    train_images: int | None = None,
) -> None:
    """Print what a launch would do, submitting and writing nothing.

    Each run's launch command, the jobs of the unfinished runs with a GPU-hour estimate (spml.experiments.estimate)
    and, for slurm, the sbatch script of their array.

    Args:
        runs: the planned runs.
        train_script: tools/train.py.
        extra_overrides: overrides added to every run.
        launcher: local | a submitit launcher.
        settings: the cluster settings.
        grid_out: the grid's output folder.
        name: the jobs' name.
        throughput: tools/benchmark.py --json output (None: the stated rates).
        train_images: train images per run for the estimate (None: read from the data).
    """
    from spml.data.table import DataError
    from spml.experiments.estimate import estimate, estimate_text, read_throughput

    run_grid(runs, train_script, extra_overrides, dry_run=True)
    pending = [run for run in runs if not finished(run, [*run.train_args(), *extra_overrides], quiet=True)]
    if not pending:
        return
    rates = read_throughput(throughput)
    print(f"\n{launcher} launch, {len(pending)} of {len(runs)} runs unfinished: one job each")
    try:
        table = estimate(pending, extra_overrides, rates, train_images)
    except (DataError, OSError) as error:  # e.g. data.root not set yet: the jobs are listed above all the same
        print(f"no GPU-hour estimate: the data could not be read ({error}); give --train-images N")
    else:
        print(estimate_text(table, rates, settings.gpus if launcher != "local" else 1))
    if launcher == "slurm":
        script = sbatch_script(settings, grid_out / JOBS_FOLDER, name, len(pending))
        print(f"\nsbatch script of the job array (submitit writes it at submission):\n{script}")
