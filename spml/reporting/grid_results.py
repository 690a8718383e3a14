"""A grid's results: read its run folders, aggregate them (mean +/- std, recovery against the full-label reference,
paired differences), and write results.csv, results.json, results.md, results.png and the grid's report.html.
spml.experiments.grid plans and trains the runs; tools/results_doc.py renders these tables into docs/results.md."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pandas as pd
import torch

from spml.reporting.plots import plot_bars, plot_intervals
from spml.reporting.run_report import metric_label, write_grid_report
from spml.reporting.stats import paired_differences, paired_markdown
from spml.utils.io import atomic_path, write_text_atomic

METRICS = ("mAP", "mean_auroc")  # test split (eval/metrics.json)
VAL_METRICS = ("val_mAP", "val_mean_auroc")  # the last validation of the run (log.csv), for choosing settings
SPLIT_METRICS = {"test": METRICS, "val": VAL_METRICS}
RUN_RESULT = "result.csv"  # <run>/result.csv: the run's row of its grid's table, written where (on the node) it trained


def last_validation(log_csv: Path) -> dict[str, float]:
    """The metrics of the last validation in a run's log.csv (long format: step, name, value).

    Args:
        log_csv: the run's log.csv.

    Returns:
        {"val_mAP", "val_mean_auroc"}; empty when the run logged none (or has no log).
    """
    if not log_csv.exists():
        return {}
    log = pd.read_csv(log_csv)
    last = log[log["name"].isin(["val/mAP", "val/mean_auroc"])].groupby("name")["value"].last()
    return {f"val_{name.removeprefix('val/')}": float(value) for name, value in last.items()}


def read_run(run_dir: Path, eval_name: str = "eval") -> dict:
    """One row of a grid's table, read from the run folder.

    The run folder's final test metrics (plus per-class AP columns) and its last validation metrics (VAL_METRICS),
    status "done"; or its status "failed", "interrupted" (a checkpoint, no evaluation) or "missing". Everything comes
    from the run folder itself, so runs trained on many nodes are collected alike.

    Args:
        run_dir: the run folder.
        eval_name: the evaluation folder inside it.

    Returns:
        The row: run_dir, status and, when done, the metrics (and seconds when recorded); when failed, the error.
    """
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
    """The candidate variant with the highest mean mAP among those with finished runs.

    Args:
        table: the aggregate table, indexed by variant.
        candidates: the variant names to choose from.

    Returns:
        The variant's name, or None if none finished.
    """
    finished = [name for name in candidates if name in table.index and not pd.isna(table.loc[name, "mAP_mean"])]
    return max(finished, key=lambda name: table.loc[name, "mAP_mean"]) if finished else None


def aggregate(frame: pd.DataFrame, reference: dict[str, list[str]] | None = None, split: str = "test") -> pd.DataFrame:
    """Mean and std over seeds per variant (finished runs only) of `split`'s metrics, plus the recovery ratio.

    The metrics are SPLIT_METRICS[split]; the columns are named mAP_* and mean_auroc_* for either split,
    `table.attrs["split"]` says which. The recovery ratio (method - AN) / (full - AN) on mAP is added when
    `reference` names the full-label and AN variants and both have finished runs among the rows (a selection with
    --only may leave them out). `reference["full"]` may list several full-label variants (e.g. with and without weak
    augmentation): the best mean mAP among them is the reference, so recovery is measured against the strongest
    full-label model of the grid; its name is in `table.attrs["full_reference"]`.

    Args:
        frame: one row per run (variant, seed, status, metrics).
        reference: {"full": [...], "an": [...]} variant names (None: no recovery).
        split: "test" | "val".

    Returns:
        One row per variant: variant, <metric>_mean, <metric>_std, <metric>_count (and recovery).
    """
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
    """Table cell: mean ± std, the mean alone when std is undefined (one seed), a dash when nothing finished.

    Args:
        mean: the mean.
        std: the standard deviation (NaN: one seed).

    Returns:
        The cell's text.
    """
    if pd.isna(mean):
        return "—"
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def markdown(table: pd.DataFrame) -> str:
    """Markdown table with mean +/- std (n seeds); a single seed shows its value alone (no std exists).

    The metric columns name the split when it is not the test split.

    Args:
        table: the aggregate table.

    Returns:
        The Markdown text.
    """
    has_recovery = "recovery" in table
    split = table.attrs.get("split", "test")
    header = f"| variant | {metric_label(split)} | {metric_label(split, 'mean AUROC')} | seeds |" + (
        " recovery |" if has_recovery else ""
    )
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
    """Markdown table of every finished run's mAP: one row per variant, one column per seed ("—": not finished).

    Args:
        frame: one row per run.
        split: "test" | "val".

    Returns:
        The Markdown text.
    """
    metric = SPLIT_METRICS[split][0]
    done = frame[frame["status"] == "done"]
    values = done.pivot_table(index="variant", columns="seed", values=metric, sort=False)
    seeds = sorted(frame["seed"].unique())
    lines = [
        "| " + " | ".join(["variant", *(f"seed {seed}" for seed in seeds)]) + " |",
        "|" + "---|" * (len(seeds) + 1),
    ]
    for variant in frame["variant"].drop_duplicates():
        cells = [
            values.loc[variant, seed] if variant in values.index and seed in values.columns else float("nan")
            for seed in seeds
        ]
        lines.append("| " + " | ".join([str(variant), *("—" if pd.isna(v) else f"{v:.4f}" for v in cells)]) + " |")
    return "\n".join(lines) + "\n"


def competitors(frame: pd.DataFrame, reference: dict[str, list[str]] | None) -> pd.DataFrame:
    """The rows of the variants a method is compared with.

    All but the full-label references (reference["full"]), which are upper bounds, not competitors, and would only
    widen the Holm family.

    Args:
        frame: one row per run.
        reference: {"full": [...], ...} (None: keep every row).

    Returns:
        The rows kept.
    """
    full = set((reference or {}).get("full", []))
    return frame[~frame["variant"].isin(full)]


def run_counts(frame: pd.DataFrame) -> str:
    """ "N runs: X finished, Y failed, Z not run" for the rows of run_grid / grid_rows.

    ", W of them interrupted" is added when some stopped after a checkpoint; FileNotFoundError when none has
    finished (there is nothing to tabulate).

    Args:
        frame: one row per run (status, run_dir).

    Returns:
        The line.
    """
    done, failed, stopped = (int((frame["status"] == status).sum()) for status in ("done", "failed", "interrupted"))
    not_run = len(frame) - done - failed
    if not done:
        folders = sorted({str(Path(path).parent.parent) for path in frame["run_dir"]})
        raise FileNotFoundError(
            f"none of the {len(frame)} selected runs has finished ({failed} failed, {not_run} not "
            f"run; looked for <run>/eval/metrics.json under {', '.join(folders)}); no results "
            "written"
        )
    interrupted = f" ({stopped} of them interrupted: start the grid again to resume them)" if stopped else ""
    return f"{len(frame)} runs: {done} finished, {failed} failed, {not_run} not run{interrupted}"


def gather_results(frame: pd.DataFrame, folders: list[Path]) -> pd.DataFrame:
    """A grid's rows brought up to date with the run results under `folders` and in the rows' own run folders.

    `frame` is the grid's results.csv, which a launcher wrote from the runs it knew. A run's RUN_RESULT file replaces
    its row (it is as new as the run), and runs missing from `frame` (results.csv written by one node while another
    trained other seeds or variants) are added. Order: `frame`'s variants first, each variant's seeds in order.

    Args:
        frame: the grid's rows.
        folders: folders searched for RUN_RESULT files.

    Returns:
        The rows, one per (variant, seed).
    """
    files = {path.resolve() for folder in folders for path in Path(folder).rglob(RUN_RESULT)}
    files |= {
        (Path(run_dir) / RUN_RESULT).resolve()
        for run_dir in frame.get("run_dir", [])
        if (Path(run_dir) / RUN_RESULT).exists()
    }
    if not files:
        return frame
    runs = pd.concat([pd.read_csv(path) for path in sorted(files)], ignore_index=True)
    merged = pd.concat([runs, frame], ignore_index=True).drop_duplicates(["variant", "seed"], keep="first")
    order = {variant: i for i, variant in enumerate(pd.concat([frame["variant"], runs["variant"]]).drop_duplicates())}
    rank = merged["variant"].map(order) * (merged["seed"].max() + 1) + merged["seed"]
    return merged.iloc[rank.argsort(kind="stable")].reset_index(drop=True)


def report_sections(
    frame: pd.DataFrame, reference: dict[str, list[str]] | None = None, compare: str = "", split: str = "test"
) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    """The Markdown of a grid's results.

    The mean +/- std table with recovery, the per-seed table, and with `compare` the paired differences of that
    variant to every competitor (spml.reporting.stats). What results.md holds and what tools/results_doc.py renders
    into docs/results.md.

    Args:
        frame: one row per run.
        reference: {"full": [...], "an": [...]} variant names (None: no recovery).
        compare: the variant compared with the others ("": no paired differences).
        split: "test" | "val".

    Returns:
        (text, aggregate table, paired table or None).
    """
    metric = SPLIT_METRICS[split][0]
    label = metric_label(split)
    table = aggregate(frame, reference, split)
    text = markdown(table)
    if table.attrs.get("full_reference"):
        text += (
            f"\nRecovery = (method − AN) / (full − AN) on mean {label}, against the best full-label variant: "
            f"{table.attrs['full_reference']}.\n"
        )
    text += f"\nPer seed ({label}):\n\n" + per_seed_markdown(frame, split)
    paired = None
    if compare:
        paired = paired_differences(competitors(frame, reference), compare, metric)
        text += (
            f"\nPaired differences {compare} − variant ({label}, same seed; 95% t interval; Holm over the "
            f"{len(paired)} comparisons of this table; full-label references left out):\n\n"
            + paired_markdown(paired, compare)
        )
    return text, table, paired


def machine() -> str:
    """The machine the runs trained on, in one line.

    Returns:
        The CPU model, its core count, the threads per run (OMP_NUM_THREADS of this process, which the runs
        inherit) and the GPU if one is visible.
    """
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} cores, {os.environ.get('OMP_NUM_THREADS', 'all')} thread(s) per run, {gpu}"


def write_results(
    frame: pd.DataFrame,
    out: Path,
    name: str,
    reference: dict[str, list[str]] | None = None,
    compare: str = "",
    split: str = "test",
    command: str = "",
    budget: str = "",
) -> str:
    """Write a grid's results into `out`.

    results.csv (one row per run), results.json (what the tables need besides the CSV: name, command, reference,
    compare, split, budget, machine, training minutes; tools/results_doc.py reads both), results.md (report_sections),
    results.png (mAP bars) and the grid's report.html; with `compare`, also paired.csv and paired.png (forest plot of
    the paired differences).

    Args:
        frame: one row per run.
        out: the output folder.
        name: the grid's name.
        reference: {"full": [...], "an": [...]} variant names.
        compare: the variant compared with the others ("": none).
        split: "test" | "val".
        command: the command that ran the grid.
        budget: one line on what a run trained (spml.experiments.grid.run_budget).

    Returns:
        The Markdown text.
    """
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.csv") as temporary:
        frame.to_csv(temporary, index=False)
    meta = {
        "name": name,
        "command": command,
        "reference": reference or {},
        "compare": compare,
        "split": split,
        "seeds": sorted(int(seed) for seed in frame["seed"].unique()),
        "budget": budget,
        "machine": machine(),
        "train_minutes": round(float(frame.get("seconds", pd.Series(dtype=float)).sum()) / 60, 1),
    }
    write_text_atomic(out / "results.json", json.dumps(meta, indent=1))
    text, table, paired = report_sections(frame, reference, compare, split)
    label = metric_label(split)
    if paired is not None:
        paired.to_csv(out / "paired.csv", index=False)
        plot_intervals(
            paired, out / "paired.png", title=f"{name}: {compare} − variant, {label} (95% t interval)", metric=label
        )
    text = f"# {name}\n\n" + text
    write_text_atomic(out / "results.md", text)
    plot_bars(
        table,
        x="variant",
        y="mAP_mean",
        yerr="mAP_std",
        out_path=out / "results.png",
        title=f"{name}: {label} (mean ± std over seeds)",
    )
    write_grid_report(out, name, frame, table, paired)
    return text
