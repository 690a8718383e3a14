"""Experiment grids: expand an ablation YAML into runs, train them, collect run folders into tables and plots."""
from __future__ import annotations

import json
import os
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

from spml.config import ConfigError
from spml.config.loader import read_config_file
from spml.utils.io import atomic_path, write_text_atomic
from spml.utils.lock import GRID_LOCK_FILE, RunFolderLocked, RunLock, in_use
from spml.utils.text import slug

METRICS = ("mAP", "mean_auroc")  # test split (eval/metrics.json)
VAL_METRICS = ("val_mAP", "val_mean_auroc")  # the last validation of the run (log.csv), for choosing settings
SPLIT_METRICS = {"test": METRICS, "val": VAL_METRICS}
RUN_RESULT = "result.csv"  # <run>/result.csv: the run's row of its grid's table, written where (on the node) it trained


@dataclass(frozen=True)
class PlannedRun:
    """One (variant, seed) cell of a grid: its folder and the train.py arguments that produce it."""

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
    name: str
    out: Path
    runs: list[PlannedRun]
    reference: dict[str, list[str]] = field(default_factory=dict)  # {"full": [variants], "an": [variant]}: recovery
    tta: bool = False  # also score every run with test-time augmentation (rows "<variant> + TTA")
    compare: str = ""  # variant whose per-seed differences to every other variant are tested (spml.reporting.stats)
    split: str = "test"  # the split the tables report: test, or val when the grid chooses settings (SPLIT_METRICS)
    cluster: dict = field(default_factory=dict)  # job resources per run (spml.experiments.launch.cluster_settings)


def load_grid(path: str | Path, out: str | Path | None = None) -> Grid:
    """Read an ablation YAML: configs, overrides, seeds, variants [{name, overrides}], reference, out, runs, tta,
    compare, split and cluster (the job resources of a cluster launch, read by spml.experiments.launch); an
    `include:` list merges other grid YAMLs first (paths relative to the file; its own keys win), so grids that
    differ only in data share one method list (configs/benchmarks/).

    Seeds set train.seed, data.split_seed and data.synthetic.seed (a seed is a full repetition). Run folders
    are <runs>/<variant>/seed<N> (`runs` defaults to the grid folder): grids that name the same `runs` folder
    share the runs of identically named variants, which run_grid trains once.
    """
    spec = read_config_file(path)
    allowed = {"name", "configs", "overrides", "seeds", "variants", "out", "reference", "runs", "tta", "compare",
               "split", "cluster"}
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
            runs.append(PlannedRun(variant["name"], int(seed), run_dir, configs + tuple(variant.get("configs", [])),
                                   common + tuple(variant.get("overrides", [])) + seeds + (f"train.out={run_dir}",)))
    reference = {key: [value] if isinstance(value, str) else list(value)
                 for key, value in spec.get("reference", {}).items()}
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
        raise ConfigError(f"{path}: 'cluster' must be a mapping of job settings (partition, gpus, ...), got {cluster!r}")
    return Grid(name, root, runs, reference, tta, compare, split, cluster)


def last_validation(log_csv: Path) -> dict[str, float]:
    """{"val_mAP", "val_mean_auroc"} of the last validation in a run's log.csv (long format: step, name, value);
    empty when the run logged none."""
    if not log_csv.exists():
        return {}
    log = pd.read_csv(log_csv)
    last = log[log["name"].isin(["val/mAP", "val/mean_auroc"])].groupby("name")["value"].last()
    return {f"val_{name.removeprefix('val/')}": float(value) for name, value in last.items()}


def read_run(run_dir: Path, eval_name: str = "eval") -> dict:
    """One row: the run folder's final test metrics (plus per-class AP columns) and its last validation metrics
    (VAL_METRICS), status "done"; or its status "failed", "interrupted" (a checkpoint, no evaluation) or "missing".
    Everything comes from the run folder itself, so runs trained on many nodes are collected alike."""
    row: dict = {"run_dir": str(run_dir)}
    metrics_path = run_dir / eval_name / "metrics.json"
    if metrics_path.exists():
        summary = json.loads(metrics_path.read_text(encoding="utf-8"))
        row.update({key: summary[key] for key in METRICS}, **last_validation(run_dir / "log.csv"), status="done")
        per_class = run_dir / eval_name / "per_class.csv"
        if per_class.exists():
            frame = pd.read_csv(per_class)
            row.update({f"AP/{c}": ap for c, ap in zip(frame["class"], frame["ap"])})
        seconds = run_dir / "seconds.txt"
        if seconds.exists():
            row["seconds"] = float(seconds.read_text(encoding="utf-8"))
    elif (run_dir / "FAILED").exists():
        row["status"] = "failed"
        row["error"] = (run_dir / "FAILED").read_text(encoding="utf-8")[-500:]
    elif (run_dir / "checkpoints" / "latest.json").exists():
        row["status"] = "interrupted"  # stopped after a checkpoint: the next start of the grid resumes it
    else:
        row["status"] = "missing"
    return row


def best_reference(table: pd.DataFrame, candidates: list[str]) -> str | None:
    """The candidate variant with the highest mean mAP among those with finished runs (None if none finished)."""
    finished = [name for name in candidates if name in table.index and not pd.isna(table.loc[name, "mAP_mean"])]
    return max(finished, key=lambda name: table.loc[name, "mAP_mean"]) if finished else None


def aggregate(frame: pd.DataFrame, reference: dict[str, list[str]] | None = None, split: str = "test"
              ) -> pd.DataFrame:
    """Mean and std over seeds per variant (finished runs only) of `split`'s metrics (SPLIT_METRICS; the columns
    are named mAP_* and mean_auroc_* for either split, `table.attrs["split"]` says which), plus the recovery ratio
    (method - AN) / (full - AN) on mAP when `reference` names the full-label and AN variants and both have
    finished runs among the rows (a selection with --only may leave them out). `reference["full"]` may list
    several full-label variants (e.g. with and without weak augmentation): the best mean mAP among them is
    the reference, so recovery is measured against the strongest full-label model of the grid; its name is
    in `table.attrs["full_reference"]`."""
    metrics = SPLIT_METRICS[split]
    done = frame.loc[frame["status"] == "done", ["variant", *metrics]].rename(columns=dict(zip(metrics, METRICS)))
    table = done.groupby("variant", sort=False)[list(METRICS)].agg(["mean", "std", "count"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table = table.reindex(frame["variant"].drop_duplicates())
    table.attrs["split"] = split
    if reference and {"full", "an"} <= set(reference):
        full, an = best_reference(table, reference["full"]), best_reference(table, reference["an"])
        if full is not None and an is not None:
            full_map, an_map = table.loc[full, "mAP_mean"], table.loc[an, "mAP_mean"]
            table["recovery"] = (table["mAP_mean"] - an_map) / (full_map - an_map)
            table.attrs["full_reference"] = full
    return table.reset_index()


def mean_std_cell(mean: float, std: float) -> str:
    """Table cell: mean ± std, the mean alone when std is undefined (one seed), a dash when nothing finished."""
    if pd.isna(mean):
        return "—"
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def metric_label(split: str, metric: str = "mAP") -> str:
    """How tables name a metric of `split`: "mAP" for the test split (the default), "val mAP" for the others."""
    return metric if split == "test" else f"{split} {metric}"


def markdown(table: pd.DataFrame) -> str:
    """Markdown table with mean +/- std (n seeds); a single seed shows its value alone (no std exists). The
    metric columns name the split when it is not the test split."""
    has_recovery = "recovery" in table
    split = table.attrs.get("split", "test")
    header = f"| variant | {metric_label(split)} | {metric_label(split, 'mean AUROC')} | seeds |" + (" recovery |" if has_recovery else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for _, row in table.iterrows():
        cells = [str(row["variant"])]
        cells += [mean_std_cell(row[f"{metric}_mean"], row[f"{metric}_std"]) for metric in METRICS]
        cells.append(str(int(row["mAP_count"])) if not pd.isna(row["mAP_count"]) else "0")
        if has_recovery:
            cells.append("—" if pd.isna(row["recovery"]) else f"{row['recovery']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_seed_markdown(frame: pd.DataFrame, split: str = "test") -> str:
    """Markdown table of every finished run's mAP: one row per variant, one column per seed ("—": not finished)."""
    metric = SPLIT_METRICS[split][0]
    done = frame[frame["status"] == "done"]
    values = done.pivot_table(index="variant", columns="seed", values=metric, sort=False)
    seeds = sorted(frame["seed"].unique())
    lines = ["| " + " | ".join(["variant", *(f"seed {seed}" for seed in seeds)]) + " |",
             "|" + "---|" * (len(seeds) + 1)]
    for variant in frame["variant"].drop_duplicates():
        cells = [values.loc[variant, seed] if variant in values.index and seed in values.columns else float("nan")
                 for seed in seeds]
        lines.append("| " + " | ".join([str(variant), *("—" if pd.isna(v) else f"{v:.4f}" for v in cells)]) + " |")
    return "\n".join(lines) + "\n"


def competitors(frame: pd.DataFrame, reference: dict[str, list[str]] | None) -> pd.DataFrame:
    """The rows of the variants a method is compared with: all but the full-label references (reference["full"]),
    which are upper bounds, not competitors, and would only widen the Holm family."""
    full = set((reference or {}).get("full", []))
    return frame[~frame["variant"].isin(full)]


def run_grid(runs: list[PlannedRun], train_script: str | Path, extra_overrides: tuple[str, ...] | list[str] = (),
             dry_run: bool = False, processes: int = 1) -> pd.DataFrame | None:
    """Train each run in turn in this process's machine (run_one: one `tools/train.py` subprocess each).

    A progress bar counts the runs (the runs' own output stays in their files). Returns one row per run (variant,
    seed, read_run), or None after a dry run, which only prints the `accelerate launch` commands.
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


def run_one(run: PlannedRun, train_args: list[str], train_script: str | Path, processes: int = 1,
            started: Callable[[subprocess.Popen], None] | None = None) -> str:
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
    """Whether `run` has finished (eval/metrics.json; says "[skip]" unless `quiet`); ConfigError when it finished
    with other train arguments than `train_args`: a shared or reused folder never silently stands for another
    setting."""
    if not (run.run_dir / "eval" / "metrics.json").exists():
        return False
    recorded = run.run_dir / "train_args.json"
    if recorded.exists() and json.loads(recorded.read_text(encoding="utf-8")) != train_args:
        raise ConfigError(f"{run.run_dir}: finished with other train arguments ({recorded}) than "
                          f"{run.variant!r} seed {run.seed} asks for now; use another output folder")
    if not quiet:
        tqdm.write(f"[skip] {run.variant} seed {run.seed}: finished ({run.run_dir})")
    return True


def resumable(run: PlannedRun, train_args: list[str]) -> bool:
    """Whether `run` was interrupted (a checkpoint, no FAILED) while training with `train_args`: it then resumes."""
    recorded = run.run_dir / "train_args.json"
    return ((run.run_dir / "checkpoints" / "latest.json").exists() and not (run.run_dir / "FAILED").exists()
            and recorded.exists() and json.loads(recorded.read_text(encoding="utf-8")) == train_args)


def interrupted_exit(code: int) -> bool:
    """Whether a training's exit code means a stop signal (128 + N after its checkpoint, or killed by one): the run
    resumes next time instead of counting as failed."""
    return code < 0 or code > 128


def train_command(train_script: str | Path, processes: int) -> list[str]:
    """How a run's training starts: `python train.py`, or torchrun with `processes` local processes (one per GPU)."""
    if processes <= 1:
        return [sys.executable, str(train_script)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            str(train_script)]


def ignore_time_warning() -> None:
    """In the training process (before exec): ignore SIGUSR2, Slurm's warning before a time limit or preemption
    (`--signal=USR2@N`, sent to every process of the job). The cluster job catches it and stops the training with
    SIGTERM, which checkpoints; left at its default, SIGUSR2 would end the training without a checkpoint."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def train_run(run: PlannedRun, train_args: list[str], train_script: str | Path, processes: int = 1,
              started: Callable[[subprocess.Popen], None] | None = None) -> str:
    """Train `run` into its folder: `train.py --resume RUN` when it was interrupted with the same arguments
    (resumable), else `train.py <train_args> --overwrite` after writing train_args.json. Its output (stdout and
    stderr) goes to train_output.txt as it runs (appended, one header line per attempt); then seconds.txt (the
    attempts' sum), FAILED (the output's end) or, after a stop signal (interrupted_exit), nothing: the next grid
    resumes it. A stop signal the grid gets is passed on to the training, which stops; the grid then stops too
    (spml.engine.signals.Interrupted). Returns "done", "failed" or "interrupted"."""
    from spml.engine.signals import Interrupted, passing_stop_signals  # (torch: only where a grid runs)

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
        log.write(f"=== {'resume' if resume else 'start'} on {platform.node()} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
                  " ===\n")
        log.flush()
        proc = subprocess.Popen([*train_command(train_script, processes), *args], stdout=log,
                                stderr=subprocess.STDOUT, text=True,
                                preexec_fn=ignore_time_warning)  # noqa: PLW1509 (one signal call, no locks)
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


def run_counts(frame: pd.DataFrame) -> str:
    """"N runs: X finished, Y failed, Z not run" (", W of them interrupted" when some stopped after a checkpoint)
    for the rows of run_grid / grid_rows; FileNotFoundError when none has finished (there is nothing to tabulate)."""
    done, failed, stopped = (int((frame["status"] == status).sum()) for status in ("done", "failed", "interrupted"))
    not_run = len(frame) - done - failed
    if not done:
        folders = sorted({str(Path(path).parent.parent) for path in frame["run_dir"]})
        raise FileNotFoundError(f"none of the {len(frame)} selected runs has finished ({failed} failed, {not_run} not "
                                f"run; looked for <run>/eval/metrics.json under {', '.join(folders)}); no results "
                                "written")
    interrupted = f" ({stopped} of them interrupted: start the grid again to resume them)" if stopped else ""
    return f"{len(frame)} runs: {done} finished, {failed} failed, {not_run} not run{interrupted}"


def write_run_result(run: PlannedRun) -> None:
    """`<run>/result.csv` (RUN_RESULT): the run's row (variant, seed, read_run) as its training attempt left it,
    written by the process that trained it, so results gathered from many nodes need no launcher's memory."""
    with atomic_path(run.run_dir / RUN_RESULT) as temporary:
        pd.DataFrame([{"variant": run.variant, "seed": run.seed, **read_run(run.run_dir)}]).to_csv(temporary,
                                                                                                    index=False)


def gather_results(frame: pd.DataFrame, folders: list[Path]) -> pd.DataFrame:
    """A grid's rows (its results.csv, which a launcher wrote from the runs it knew) brought up to date with the run
    results (RUN_RESULT files) under `folders` and in the rows' own run folders: a run's file replaces its row (it
    is as new as the run), and runs missing from `frame` (results.csv written by one node while another trained
    other seeds or variants) are added. Order: `frame`'s variants first, each variant's seeds in order."""
    files = {path.resolve() for folder in folders for path in Path(folder).rglob(RUN_RESULT)}
    files |= {(Path(run_dir) / RUN_RESULT).resolve() for run_dir in frame.get("run_dir", [])
              if (Path(run_dir) / RUN_RESULT).exists()}
    if not files:
        return frame
    runs = pd.concat([pd.read_csv(path) for path in sorted(files)], ignore_index=True)
    merged = pd.concat([runs, frame], ignore_index=True).drop_duplicates(["variant", "seed"], keep="first")
    order = {variant: i for i, variant in enumerate(pd.concat([frame["variant"], runs["variant"]]).drop_duplicates())}
    rank = merged["variant"].map(order) * (merged["seed"].max() + 1) + merged["seed"]
    return merged.iloc[rank.argsort(kind="stable")].reset_index(drop=True)


def grid_rows(runs: list[PlannedRun]) -> pd.DataFrame:
    """One row per planned run as its folder is now (variant, seed, read_run: status done, failed or missing)."""
    return pd.DataFrame([{"variant": r.variant, "seed": r.seed, **read_run(r.run_dir)} for r in runs])


def score_with_tta(runs: list[PlannedRun], evaluate_script: str | Path) -> pd.DataFrame:
    """Score each finished run with test-time augmentation (`python <evaluate_script> RUN --tta` -> eval-tta/,
    skipped when it exists; output in tta_output.txt). Returns rows like run_grid's, variant "<name> + TTA"."""
    from spml.engine.signals import Interrupted, run_child

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


def report_sections(frame: pd.DataFrame, reference: dict[str, list[str]] | None = None, compare: str = "",
                    split: str = "test") -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    """The Markdown of a grid's results (mean +/- std table with recovery, the per-seed table, and with `compare`
    the paired differences of that variant to every competitor, spml.reporting.stats) -> (text, aggregate table, paired
    table or None). What results.md holds and what tools/results_doc.py renders into docs/results.md."""
    from spml.reporting.stats import paired_differences, paired_markdown

    metric = SPLIT_METRICS[split][0]
    label = metric_label(split)
    table = aggregate(frame, reference, split)
    text = markdown(table)
    if table.attrs.get("full_reference"):
        text += f"\nRecovery = (method − AN) / (full − AN) on mean {label}, against the best full-label variant: " \
                f"{table.attrs['full_reference']}.\n"
    text += f"\nPer seed ({label}):\n\n" + per_seed_markdown(frame, split)
    paired = None
    if compare:
        paired = paired_differences(competitors(frame, reference), compare, metric)
        text += (f"\nPaired differences {compare} − variant ({label}, same seed; 95% t interval; Holm over the "
                 f"{len(paired)} comparisons of this table; full-label references left out):\n\n"
                 + paired_markdown(paired, compare))
    return text, table, paired


def run_budget(frame: pd.DataFrame) -> str:
    """One line on what a run of the grid trained: backbone and weights, image size, data, epochs, batch, optimizer
    (from the first finished run's config.yaml; "" when no finished run folder is there)."""
    from spml.config import load_config

    folders = [Path(folder) for folder in frame.get("run_dir", pd.Series(dtype=str))[frame["status"] == "done"]
               if (Path(folder) / "config.yaml").exists()]
    if not folders:
        return ""
    config = load_config(run_dir=folders[0])
    model, data = config.model, config.data
    weights = f"pretrained {model.pretrained}" if model.pretrained else "random init"
    images = f", {data.synthetic.num_images} images" if data.dataset == "synthetic" else ""
    return (f"{model.backbone} ({weights}), {data.size} px, {data.dataset}{images}, {config.train.epochs} epochs, "
            f"batch {data.batch_size}, {config.optim.name} lr {config.optim.lr:g}")


def machine() -> str:
    """The CPU model, its core count, the threads per run (OMP_NUM_THREADS of this process, which the runs
    inherit) and the GPU if one is visible."""
    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} cores, {os.environ.get('OMP_NUM_THREADS', 'all')} thread(s) per run, {gpu}"


def write_results(frame: pd.DataFrame, out: Path, name: str, reference: dict[str, list[str]] | None = None,
                  compare: str = "", split: str = "test", command: str = "") -> str:
    """results.csv (one row per run), results.json (what the tables need besides the CSV: name, command, reference,
    compare, split, budget, machine, training minutes; tools/results_doc.py reads both), results.md
    (report_sections) and results.png (mAP bars) into `out`; with `compare`, also paired.csv and paired.png
    (forest plot of the paired differences). Returns the Markdown text."""
    from spml.reporting.plots import plot_bars, plot_intervals
    from spml.reporting.run_report import write_grid_report

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.csv") as temporary:
        frame.to_csv(temporary, index=False)
    meta = {"name": name, "command": command, "reference": reference or {}, "compare": compare, "split": split,
            "seeds": sorted(int(seed) for seed in frame["seed"].unique()), "budget": run_budget(frame),
            "machine": machine(), "train_minutes": round(float(frame.get("seconds", pd.Series(dtype=float)).sum())
                                                         / 60, 1)}
    write_text_atomic(out / "results.json", json.dumps(meta, indent=1))
    text, table, paired = report_sections(frame, reference, compare, split)
    label = metric_label(split)
    if paired is not None:
        paired.to_csv(out / "paired.csv", index=False)
        plot_intervals(paired, out / "paired.png", title=f"{name}: {compare} − variant, {label} (95% t interval)",
                       metric=label)
    text = f"# {name}\n\n" + text
    write_text_atomic(out / "results.md", text)
    plot_bars(table, x="variant", y="mAP_mean", yerr="mAP_std", out_path=out / "results.png",
              title=f"{name}: {label} (mean ± std over seeds)")
    write_grid_report(out, name, frame, table, paired)
    return text
