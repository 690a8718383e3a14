"""Experiment grids: expand an ablation YAML into runs, train them, collect run folders into tables and plots."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from spml.config import ConfigError, load_config, read_yaml
from spml.reporting.grid_results import SPLIT_METRICS, read_run
from spml.utils.io import write_text_atomic
from spml.utils.lock import GRID_LOCK_FILE, RunFolderLocked, RunLock, in_use
from spml.utils.text import slug


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


def load_grid(path: str | Path, out: str | Path | None = None) -> Grid:
    """Read an ablation YAML: configs, overrides, seeds, variants [{name, overrides}], reference, out, runs.

    Seeds set train.seed, data.split_seed and data.synthetic.seed (a seed is a full repetition). Run folders
    are <runs>/<variant>/seed<N> (`runs` defaults to the grid folder): grids that name the same `runs` folder
    share the runs of identically named variants, which run_grid trains once.
    """
    spec = read_yaml(path)
    allowed = {"name", "configs", "overrides", "seeds", "variants", "out", "reference", "runs", "tta", "compare",
               "split"}
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
    return Grid(name, root, runs, reference, tta, compare, split)


def run_grid(runs: list[PlannedRun], train_script: str | Path, extra_overrides: tuple[str, ...] | list[str] = (),
             dry_run: bool = False) -> pd.DataFrame | None:
    """Train each run in turn (`python <train_script> <run args> <extra_overrides>`, one subprocess each).

    An unfinished run (failed or interrupted) starts over (--overwrite); a run whose eval/metrics.json exists
    is skipped, unless its train_args.json records other arguments (then ConfigError: a shared or reused folder
    never silently stands for another setting), and so is one that another grid is on (spml.utils.lock's grid lock,
    held from this check until the run's training has ended: the same grid started twice) or that another
    training holds; a failing run leaves FAILED (the end of its stderr) in its folder and the grid goes on; every
    run's output goes to train_output.txt, its time to seconds.txt.
    A progress bar counts the runs (the runs' own output stays in their files).
    Returns one row per run (variant, seed, read_run), or None after a dry run, which only prints the
    `accelerate launch` commands.
    """
    if dry_run:
        for run in runs:
            print("accelerate launch " + shlex.join([str(train_script), *run.train_args(), *extra_overrides]))
        return None
    bar = tqdm(runs, desc="grid", unit="run", dynamic_ncols=True)
    for run in bar:
        bar.set_postfix_str(f"{run.variant} seed {run.seed}")
        train_args = run.train_args() + list(extra_overrides)
        if finished(run, train_args):  # a finished folder is left untouched, no lock file written into it
            continue
        try:
            with RunLock(run.run_dir, lock_file=GRID_LOCK_FILE):
                if finished(run, train_args):  # by the grid that held the lock until a moment ago
                    continue
                busy = in_use(run.run_dir)  # a training started by hand on the same folder: leave it alone
                if busy:
                    tqdm.write(f"[busy] {run.variant} seed {run.seed}: {busy}")
                    continue
                train_run(run, train_args, train_script)
        except RunFolderLocked as held:
            tqdm.write(f"[busy] {run.variant} seed {run.seed}: {held}")
    bar.close()
    return grid_rows(runs)


def finished(run: PlannedRun, train_args: list[str]) -> bool:
    """Whether `run` has finished (eval/metrics.json; says "[skip]"); ConfigError when it finished with other
    train arguments than `train_args`: a shared or reused folder never silently stands for another setting."""
    if not (run.run_dir / "eval" / "metrics.json").exists():
        return False
    recorded = run.run_dir / "train_args.json"
    if recorded.exists() and json.loads(recorded.read_text(encoding="utf-8")) != train_args:
        raise ConfigError(f"{run.run_dir}: finished with other train arguments ({recorded}) than "
                          f"{run.variant!r} seed {run.seed} asks for now; use another output folder")
    tqdm.write(f"[skip] {run.variant} seed {run.seed}: finished ({run.run_dir})")
    return True


def train_run(run: PlannedRun, train_args: list[str], train_script: str | Path) -> None:
    """Train `run` into its folder (`python <train_script> <train_args> --overwrite`): train_args.json first,
    then train_output.txt, and seconds.txt or FAILED (the end of its stderr)."""
    tqdm.write(f"[run ] {run.variant} seed {run.seed} -> {run.run_dir}")
    (run.run_dir / "FAILED").unlink(missing_ok=True)
    write_text_atomic(run.run_dir / "train_args.json", json.dumps(train_args))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(train_script), *train_args, "--overwrite"],
                          capture_output=True, text=True)
    (run.run_dir / "train_output.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        write_text_atomic(run.run_dir / "FAILED", proc.stderr[-4000:] or f"exit {proc.returncode}")
        tqdm.write(f"[fail] {run.variant} seed {run.seed}: exit {proc.returncode}, see {run.run_dir}/FAILED")
    else:
        write_text_atomic(run.run_dir / "seconds.txt", f"{time.perf_counter() - start:.1f}\n")


def grid_rows(runs: list[PlannedRun]) -> pd.DataFrame:
    """One row per planned run as its folder is now (variant, seed, read_run: status done, failed or missing)."""
    return pd.DataFrame([{"variant": r.variant, "seed": r.seed, **read_run(r.run_dir)} for r in runs])


def score_with_tta(runs: list[PlannedRun], evaluate_script: str | Path) -> pd.DataFrame:
    """Score each finished run with test-time augmentation (`python <evaluate_script> RUN --tta` -> eval-tta/,
    skipped when it exists; output in tta_output.txt). Returns rows like run_grid's, variant "<name> + TTA"."""
    rows = []
    for run in tqdm(runs, desc="TTA scoring", unit="run", dynamic_ncols=True):
        finished = (run.run_dir / "eval" / "metrics.json").exists()
        if finished and not (run.run_dir / "eval-tta" / "metrics.json").exists():
            tqdm.write(f"[tta ] {run.variant} seed {run.seed}")
            proc = subprocess.run([sys.executable, str(evaluate_script), str(run.run_dir), "--tta"],
                                  capture_output=True, text=True)
            (run.run_dir / "tta_output.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
        row = read_run(run.run_dir, "eval-tta")
        if finished and row["status"] == "missing":
            row.update(status="failed", error=f"TTA evaluation failed, see {run.run_dir}/tta_output.txt")
        rows.append({"variant": f"{run.variant} + TTA", "seed": run.seed, **row})
    return pd.DataFrame(rows)


def run_budget(frame: pd.DataFrame) -> str:
    """One line on what a run of the grid trained: backbone and weights, image size, data, epochs, batch, optimizer
    (from the first finished run's config.yaml; "" when no finished run folder is there)."""

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
