"""Experiment grids: expand an ablation YAML into runs, train them, collect run folders into tables and plots."""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from spml.config import ConfigError, read_yaml
from spml.io import atomic_path, write_text_atomic
from spml.lock import GRID_LOCK_FILE, RunFolderLocked, RunLock, in_use

METRICS = ("mAP", "mean_auroc")  # test split (eval/metrics.json)
VAL_METRICS = ("val_mAP", "val_mean_auroc")  # the last validation of the run (log.csv), for choosing settings
SPLIT_METRICS = {"test": METRICS, "val": VAL_METRICS}


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
    compare: str = ""  # variant whose per-seed differences to every other variant are tested (spml.stats)
    split: str = "test"  # the split the tables report: test, or val when the grid chooses settings (SPLIT_METRICS)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


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
    (VAL_METRICS), or its failure status."""
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
             dry_run: bool = False) -> pd.DataFrame | None:
    """Train each run in turn (`python <train_script> <run args> <extra_overrides>`, one subprocess each).

    An unfinished run (failed or interrupted) starts over (--overwrite); a run whose eval/metrics.json exists
    is skipped, unless its train_args.json records other arguments (then ConfigError: a shared or reused folder
    never silently stands for another setting), and so is one that another grid is on (spml.lock's grid lock,
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
    then train_output.txt, and seconds.txt or FAILED (the end of its stderr). A stop signal is passed on to the
    training, which stops (spml.engine.signals.run_child); the grid then stops too (Interrupted)."""
    tqdm.write(f"[run ] {run.variant} seed {run.seed} -> {run.run_dir}")
    (run.run_dir / "FAILED").unlink(missing_ok=True)
    write_text_atomic(run.run_dir / "train_args.json", json.dumps(train_args))
    from spml.engine.signals import Interrupted, run_child  # (torch: only where a grid runs)

    start = time.perf_counter()
    proc, stopped_by = run_child([sys.executable, str(train_script), *train_args, "--overwrite"])
    (run.run_dir / "train_output.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if stopped_by:  # passed on to the training, which has stopped: the grid stops too
        write_text_atomic(run.run_dir / "FAILED", proc.stderr[-4000:] or f"exit {proc.returncode}")
        raise Interrupted(stopped_by)
    if proc.returncode != 0:
        write_text_atomic(run.run_dir / "FAILED", proc.stderr[-4000:] or f"exit {proc.returncode}")
        tqdm.write(f"[fail] {run.variant} seed {run.seed}: exit {proc.returncode}, see {run.run_dir}/FAILED")
    else:
        write_text_atomic(run.run_dir / "seconds.txt", f"{time.perf_counter() - start:.1f}\n")


def run_counts(frame: pd.DataFrame) -> str:
    """"N runs: X finished, Y failed, Z not run" for the rows of run_grid / grid_rows; FileNotFoundError when none
    has finished (there is nothing to tabulate)."""
    done, failed = (int((frame["status"] == status).sum()) for status in ("done", "failed"))
    not_run = len(frame) - done - failed
    if not done:
        folders = sorted({str(Path(path).parent.parent) for path in frame["run_dir"]})
        raise FileNotFoundError(f"none of the {len(frame)} selected runs has finished ({failed} failed, {not_run} not "
                                f"run; looked for <run>/eval/metrics.json under {', '.join(folders)}); no results "
                                "written")
    return f"{len(frame)} runs: {done} finished, {failed} failed, {not_run} not run"


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
    the paired differences of that variant to every competitor, spml.stats) -> (text, aggregate table, paired
    table or None). What results.md holds and what tools/results_doc.py renders into docs/results.md."""
    from spml.stats import paired_differences, paired_markdown

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
    from spml.plots import plot_bars, plot_intervals
    from spml.report import write_grid_report

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
