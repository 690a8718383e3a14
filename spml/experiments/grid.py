"""Experiment grids: expand an ablation YAML into runs, train them, collect run folders into tables and plots."""

from __future__ import annotations

import json
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from spml.config import ConfigError, load_config
from spml.config.loader import read_config_file
from spml.reporting.grid_results import RUN_RESULT, SPLIT_METRICS, read_run
from spml.utils.io import atomic_path, write_text_atomic
from spml.utils.lock import GRID_LOCK_FILE, RunFolderLocked, RunLock, in_use
from spml.utils.text import slug


@dataclass(frozen=True)
class PlannedRun:
    """One (variant, seed) cell of a grid: its folder and the train.py arguments that produce it.

    Attributes:
        variant: the variant's name.
        seed: the seed.
        run_dir: the run folder.
        configs: the config files (--config each).
        overrides: the `key=value` overrides.
    """

    variant: str
    seed: int
    run_dir: Path
    configs: tuple[str, ...]
    overrides: tuple[str, ...]

    def train_args(self) -> list[str]:
        args = [arg for path in self.configs for arg in ("--config", path)]
        return args + list(self.overrides)


@dataclass(frozen=True)
class Grid:
    """An experiment grid read from an ablation YAML (load_grid).

    Attributes:
        name: the grid's name.
        out: the grid's output folder.
        runs: the planned runs.
        reference: {"full": [variants], "an": [variant]}: the recovery references.
        tta: also score every run with test-time augmentation (rows "<variant> + TTA").
        compare: variant whose per-seed differences to every other variant are tested (spml.reporting.stats).
        split: the split the tables report: test, or val when the grid chooses settings (SPLIT_METRICS).
        cluster: job resources per run (spml.experiments.launch.cluster_settings).
    """

    name: str
    out: Path
    runs: list[PlannedRun]
    reference: dict[str, list[str]] = field(default_factory=dict)  # {"full": [variants], "an": [variant]}: recovery
    tta: bool = False  # also score every run with test-time augmentation (rows "<variant> + TTA")
    compare: str = ""  # variant whose per-seed differences to every other variant are tested (spml.reporting.stats)
    split: str = "test"  # the split the tables report: test, or val when the grid chooses settings (SPLIT_METRICS)
    cluster: dict = field(default_factory=dict)  # job resources per run (spml.experiments.launch.cluster_settings)


def load_grid(path: str | Path, out: str | Path | None = None) -> Grid:
    """Read an ablation YAML into a Grid.

    Keys: configs, overrides, seeds, variants [{name, overrides}], reference, out, runs, tta, compare, split and
    cluster (the job resources of a cluster launch, read by spml.experiments.launch); an `include:` list merges other
    grid YAMLs first (paths relative to the file; its own keys win), so grids that differ only in data share one
    method list (configs/benchmarks/).

    Seeds set train.seed, data.split_seed and data.synthetic.seed (a seed is a full repetition). Run folders
    are <runs>/<variant>/seed<N> (`runs` defaults to the grid folder): grids that name the same `runs` folder
    share the runs of identically named variants, which run_grid trains once.

    Args:
        path: the grid YAML.
        out: the output folder (default: the file's `out`, else runs/ablations/<name>); also holds the runs then.

    Returns:
        The Grid (an unknown key or variant is a ConfigError naming the file).
    """
    spec = read_config_file(path)
    allowed = {
        "name",
        "configs",
        "overrides",
        "seeds",
        "variants",
        "out",
        "reference",
        "runs",
        "tta",
        "compare",
        "split",
        "cluster",
    }
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid: {sorted(allowed)}")
    if not spec.get("variants"):
        raise ConfigError(f"{path}: 'variants' must list at least one {{name, overrides}} entry")
    name = spec.get("name", Path(path).stem)
    root = Path(out or spec.get("out") or f"runs/ablations/{slug(name)}")
    runs_root = Path(spec["runs"]) if spec.get("runs") and not out else root
    configs = tuple(spec.get("configs", []))
    common = tuple(spec.get("overrides", []))
    runs = []
    names = set()
    for i, variant in enumerate(spec["variants"]):
        if not isinstance(variant, dict) or "name" not in variant:
            raise ConfigError(f"{path}: variants[{i}] needs a 'name' (and optional 'overrides', 'configs')")
        if variant["name"] in names:
            raise ConfigError(f"{path}: variant name {variant['name']!r} used twice")
        names.add(variant["name"])
        for seed in spec.get("seeds", [0]):
            run_dir = runs_root / slug(variant["name"]) / f"seed{seed}"
            seeds = (f"train.seed={seed}", f"data.split_seed={seed}", f"data.synthetic.seed={seed}")
            runs.append(
                PlannedRun(
                    variant["name"],
                    int(seed),
                    run_dir,
                    configs + tuple(variant.get("configs", [])),
                    common + tuple(variant.get("overrides", [])) + seeds + (f"train.out={run_dir}",),
                )
            )
    reference = {
        key: [value] if isinstance(value, str) else list(value) for key, value in spec.get("reference", {}).items()
    }
    for key, values in reference.items():
        for value in values:
            if value not in names:
                raise ConfigError(f"{path}: reference.{key} names unknown variant {value!r}")
    tta = spec.get("tta", False)
    if not isinstance(tta, bool):
        raise ConfigError(f"{path}: 'tta' must be true or false, got {tta!r}")
    compare = spec.get("compare", "")
    if compare and compare not in names:
        raise ConfigError(f"{path}: compare names unknown variant {compare!r}; variants: {sorted(names)}")
    split = spec.get("split", "test")
    if split not in SPLIT_METRICS:
        raise ConfigError(f"{path}: split must be one of {sorted(SPLIT_METRICS)}, got {split!r}")
    cluster = spec.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise ConfigError(
            f"{path}: 'cluster' must be a mapping of job settings (partition, gpus, ...), got {cluster!r}"
        )
    return Grid(name, root, runs, reference, tta, compare, split, cluster)


def run_grid(
    runs: list[PlannedRun],
    train_script: str | Path,
    extra_overrides: tuple[str, ...] | list[str] = (),
    dry_run: bool = False,
    processes: int = 1,
) -> pd.DataFrame | None:
    """Train each run in turn in this process's machine (run_one: one `tools/train.py` subprocess each).

    A progress bar counts the runs (the runs' own output stays in their files). A dry run only prints the
    `accelerate launch` commands.

    Args:
        runs: the planned runs.
        train_script: tools/train.py.
        extra_overrides: overrides added to every run.
        dry_run: print the commands only.
        processes: training processes per run on this machine.

    Returns:
        One row per run (variant, seed, read_run), or None after a dry run.
    """
    if dry_run:
        for run in runs:
            print("accelerate launch " + shlex.join([str(train_script), *run.train_args(), *extra_overrides]))
        return None
    bar = tqdm(runs, desc="grid", unit="run", dynamic_ncols=True)
    for run in bar:
        bar.set_postfix_str(f"{run.variant} seed {run.seed}")
        run_one(run, run.train_args() + list(extra_overrides), train_script, processes)
    bar.close()
    return grid_rows(runs)


def run_one(
    run: PlannedRun,
    train_args: list[str],
    train_script: str | Path,
    processes: int = 1,
    started: Callable[[subprocess.Popen], None] | None = None,
) -> str:
    """Bring one run of a grid to its end: the one code path of every launcher (a local grid calls it for each run
    in turn, a cluster job for its run, spml.experiments.launch).

    A run whose eval/metrics.json exists is skipped, unless its train_args.json records other arguments (then
    ConfigError: a shared or reused folder never silently stands for another setting), and so is one that another
    grid is on (spml.utils.lock's grid lock, held from this check until the run's training has ended: the same grid
    started twice, on one machine or on several nodes sharing the folder) or that another training holds. Otherwise
    train_run trains it: an interrupted run with a checkpoint and the same arguments resumes, any other starts over.

    Args:
        run: the planned run.
        train_args: its tools/train.py arguments (run.train_args() plus the grid's extra overrides).
        train_script: tools/train.py.
        processes: training processes on this machine (> 1: torchrun --standalone, one per GPU).
        started: called with the training subprocess once it runs (a cluster job keeps it to stop it on preemption).

    Returns:
        "finished" (skipped), "busy" (left to another process), or train_run's "done" | "failed" | "interrupted".
    """
    if finished(run, train_args):  # a finished folder is left untouched, no lock file written into it
        return "finished"
    try:
        with RunLock(run.run_dir, lock_file=GRID_LOCK_FILE):
            if finished(run, train_args):  # by the grid that held the lock until a moment ago
                return "finished"
            busy = in_use(run.run_dir)  # a training started by hand on the same folder: leave it alone
            if busy:
                tqdm.write(f"[busy] {run.variant} seed {run.seed}: {busy}")
                return "busy"
            outcome = train_run(run, train_args, train_script, processes, started)
            write_run_result(run)
            return outcome
    except RunFolderLocked as held:
        tqdm.write(f"[busy] {run.variant} seed {run.seed}: {held}")
        return "busy"


def finished(run: PlannedRun, train_args: list[str], quiet: bool = False) -> bool:
    """Whether `run` has finished (eval/metrics.json; says "[skip]" unless `quiet`).

    A ConfigError when it finished with other train arguments than `train_args`: a shared or reused folder never
    silently stands for another setting.

    Args:
        run: the planned run.
        train_args: its tools/train.py arguments.
        quiet: print nothing.

    Returns:
        True when finished.
    """
    if not (run.run_dir / "eval" / "metrics.json").exists():
        return False
    recorded = run.run_dir / "train_args.json"
    if recorded.exists() and json.loads(recorded.read_text(encoding="utf-8")) != train_args:
        raise ConfigError(
            f"{run.run_dir}: finished with other train arguments ({recorded}) than "
            f"{run.variant!r} seed {run.seed} asks for now; use another output folder"
        )
    if not quiet:
        tqdm.write(f"[skip] {run.variant} seed {run.seed}: finished ({run.run_dir})")
    return True


def resumable(run: PlannedRun, train_args: list[str]) -> bool:
    """Whether `run` was interrupted (a checkpoint, no FAILED) while training with `train_args`: it then resumes.

    Args:
        run: the planned run.
        train_args: its tools/train.py arguments.

    Returns:
        True when it resumes.
    """
    recorded = run.run_dir / "train_args.json"
    return (
        (run.run_dir / "checkpoints" / "latest.json").exists()
        and not (run.run_dir / "FAILED").exists()
        and recorded.exists()
        and json.loads(recorded.read_text(encoding="utf-8")) == train_args
    )


def interrupted_exit(code: int) -> bool:
    """Whether a training's exit code means a stop signal (128 + N after its checkpoint, or killed by one).

    Such a run resumes next time instead of counting as failed.

    Args:
        code: the exit code (negative: killed by a signal).

    Returns:
        True for a stop signal.
    """
    return code < 0 or code > 128


def train_command(train_script: str | Path, processes: int) -> list[str]:
    """How a run's training starts: `python train.py`, or torchrun with `processes` local processes (one per GPU).

    Args:
        train_script: tools/train.py.
        processes: training processes (<= 1: plain python).

    Returns:
        The command's arguments.
    """
    if processes <= 1:
        return [sys.executable, str(train_script)]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        str(train_script),
    ]


def ignore_time_warning() -> None:
    """In the training process (before exec): ignore SIGUSR2, Slurm's warning before a time limit or preemption
    (`--signal=USR2@N`, sent to every process of the job). The cluster job catches it and stops the training with
    SIGTERM, which checkpoints; left at its default, SIGUSR2 would end the training without a checkpoint."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def train_run(
    run: PlannedRun,
    train_args: list[str],
    train_script: str | Path,
    processes: int = 1,
    started: Callable[[subprocess.Popen], None] | None = None,
) -> str:
    """Train `run` into its folder.

    `train.py --resume RUN` when it was interrupted with the same arguments (resumable), else
    `train.py <train_args> --overwrite` after writing train_args.json. Its output (stdout and stderr) goes to
    train_output.txt as it runs (appended, one header line per attempt); then seconds.txt (the attempts' sum), FAILED
    (the output's end) or, after a stop signal (interrupted_exit), nothing: the next grid resumes it. A stop signal
    the grid gets is passed on to the training, which stops; the grid then stops too (spml.engine.signals.Interrupted).

    Args:
        run: the planned run.
        train_args: its tools/train.py arguments.
        train_script: tools/train.py.
        processes: training processes on this machine.
        started: called with the training subprocess once it runs.

    Returns:
        "done", "failed" or "interrupted".
    """
    from spml.engine.signals import Interrupted, passing_stop_signals  # noqa: PLC0415 (torch: only where a grid trains)

    resume = resumable(run, train_args)
    tqdm.write(f"[{'resu' if resume else 'run '}] {run.variant} seed {run.seed} -> {run.run_dir}")
    (run.run_dir / "FAILED").unlink(missing_ok=True)
    seconds_file = run.run_dir / "seconds.txt"
    earlier = float(seconds_file.read_text(encoding="utf-8")) if resume and seconds_file.exists() else 0.0
    if resume:
        args = ["--resume", str(run.run_dir)]
    else:
        write_text_atomic(run.run_dir / "train_args.json", json.dumps(train_args))
        args = [*train_args, "--overwrite"]
    output = run.run_dir / "train_output.txt"
    start = time.perf_counter()
    with open(output, "a" if resume else "w", encoding="utf-8") as log:
        log.write(
            f"=== {'resume' if resume else 'start'} on {platform.node()} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
            " ===\n"
        )
        log.flush()
        proc = subprocess.Popen(
            [*train_command(train_script, processes), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=ignore_time_warning,
        )  # noqa: PLW1509 (one signal call, no locks)
        if started is not None:
            started(proc)
        with passing_stop_signals(proc) as received:  # a stop of the grid stops the training, which checkpoints
            code = proc.wait()
    write_text_atomic(seconds_file, f"{earlier + time.perf_counter() - start:.1f}\n")
    if code == 0:
        return "done"
    if received:  # passed on to the training, which has stopped (resumable): the grid stops too
        raise Interrupted(received[0])
    if interrupted_exit(code):
        tqdm.write(f"[stop] {run.variant} seed {run.seed}: stopped (exit {code}); the next start resumes it")
        return "interrupted"
    write_text_atomic(run.run_dir / "FAILED", output.read_text(encoding="utf-8")[-4000:] or f"exit {code}")
    tqdm.write(f"[fail] {run.variant} seed {run.seed}: exit {code}, see {run.run_dir}/FAILED")
    return "failed"


def write_run_result(run: PlannedRun) -> None:
    """Write `<run>/result.csv` (RUN_RESULT): the run's row (variant, seed, read_run) as its training attempt left it.

    Written by the process that trained it, so results gathered from many nodes need no launcher's memory.

    Args:
        run: the planned run.
    """
    with atomic_path(run.run_dir / RUN_RESULT) as temporary:
        pd.DataFrame([{"variant": run.variant, "seed": run.seed, **read_run(run.run_dir)}]).to_csv(
            temporary, index=False
        )


def grid_rows(runs: list[PlannedRun]) -> pd.DataFrame:
    """One row per planned run as its folder is now (variant, seed, read_run: status done, failed or missing).

    Args:
        runs: the planned runs.

    Returns:
        The rows.
    """
    return pd.DataFrame([{"variant": r.variant, "seed": r.seed, **read_run(r.run_dir)} for r in runs])


def score_with_tta(runs: list[PlannedRun], evaluate_script: str | Path) -> pd.DataFrame:
    """Score each finished run with test-time augmentation.

    `python <evaluate_script> RUN --tta` -> eval-tta/, skipped when it exists; output in tta_output.txt.

    Args:
        runs: the planned runs.
        evaluate_script: tools/evaluate.py.

    Returns:
        Rows like run_grid's, variant "<name> + TTA".
    """
    from spml.engine.signals import Interrupted, run_child  # noqa: PLC0415 (torch: only where a grid scores)

    rows = []
    for run in tqdm(runs, desc="TTA scoring", unit="run", dynamic_ncols=True):
        finished = (run.run_dir / "eval" / "metrics.json").exists()
        if finished and not (run.run_dir / "eval-tta" / "metrics.json").exists():
            tqdm.write(f"[tta ] {run.variant} seed {run.seed}")
            proc, stopped_by = run_child([sys.executable, str(evaluate_script), str(run.run_dir), "--tta"])
            (run.run_dir / "tta_output.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
            if stopped_by:
                raise Interrupted(stopped_by)
        row = read_run(run.run_dir, "eval-tta")
        if finished and row["status"] == "missing":
            row.update(status="failed", error=f"TTA evaluation failed, see {run.run_dir}/tta_output.txt")
        rows.append({"variant": f"{run.variant} + TTA", "seed": run.seed, **row})
    return pd.DataFrame(rows)


def run_budget(frame: pd.DataFrame) -> str:
    """One line on what a run of the grid trained.

    Backbone and weights, image size, data, epochs, batch, optimizer (from the first finished run's config.yaml).

    Args:
        frame: the grid's rows (run_dir, status).

    Returns:
        The line; "" when no finished run folder is there.
    """

    folders = [
        Path(folder)
        for folder in frame.get("run_dir", pd.Series(dtype=str))[frame["status"] == "done"]
        if (Path(folder) / "config.yaml").exists()
    ]
    if not folders:
        return ""
    config = load_config(run_dir=folders[0])
    model, data = config.model, config.data
    weights = f"pretrained {model.pretrained}" if model.pretrained else "random init"
    images = f", {data.synthetic.num_images} images" if data.dataset == "synthetic" else ""
    return (
        f"{model.backbone} ({weights}), {data.size} px, {data.dataset}{images}, {config.train.epochs} epochs, "
        f"batch {data.batch_size}, {config.optim.name} lr {config.optim.lr:g}"
    )
