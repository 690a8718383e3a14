"""Figures for evaluation reports and result tables, drawn on Agg canvases (no pyplot, no display)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from spml.metrics import evaluate_predictions


def plot_curves(scores: Any, targets: Any, known: Any | None, classes: list[str] | tuple[str, ...],
                out_dir: str | Path) -> list[Path]:
    """Write roc.png and pr.png into out_dir: one curve per scorable class over its known entries, the
    legend giving each class's AUROC / AP, the title the macro mean over those classes.

    scores (N, C), targets (N, C) {0, 1}, known (N, C) bool or None -> [roc.png, pr.png] paths.
    """
    result = evaluate_predictions(scores, targets, known, classes)
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets) > 0.5
    known = np.ones(scores.shape, bool) if known is None else np.asarray(known, dtype=bool)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roc_fig, pr_fig = Figure(figsize=(7, 6)), Figure(figsize=(7, 6))
    roc_ax, pr_ax = roc_fig.subplots(), pr_fig.subplots()
    colors = _class_colors(len(classes))
    for c, row in result.per_class.iterrows():
        if row["skipped"]:
            continue
        y, s = targets[known[:, c], c], scores[known[:, c], c]
        fpr, tpr, _ = roc_curve(y, s)
        precision, recall, _ = precision_recall_curve(y, s)
        roc_ax.plot(fpr, tpr, color=colors[c], lw=1.2, label=f"{row['class']} ({row['auroc']:.3f})")
        pr_ax.step(recall, precision, where="post", color=colors[c], lw=1.2,
                   label=f"{row['class']} ({row['ap']:.3f})")
    roc_ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    _finish(roc_ax, "false positive rate", "true positive rate",
            f"ROC: mean AUROC {result.summary['mean_auroc']:.4f}", "AUROC", "lower right")
    _finish(pr_ax, "recall", "precision", f"Precision-recall: mAP {result.summary['mAP']:.4f}", "AP", "lower left")
    paths = [out_dir / "roc.png", out_dir / "pr.png"]
    for fig, path in zip((roc_fig, pr_fig), paths):
        fig.savefig(path, dpi=120)
    return paths


def plot_bars(df: pd.DataFrame, x: str, y: str, yerr: str | None, out_path: str | Path,
              title: str = "") -> Path:
    """Bar chart of df[y] per df[x] (bars from zero, values printed on top) with optional error bars
    df[yerr] (a missing error, e.g. the std of a single seed, is drawn as none) -> out_path."""
    for column in (x, y) + ((yerr,) if yerr else ()):
        if column not in df:
            raise KeyError(f"plot_bars: column {column!r} not in the table; columns are {list(df.columns)}")
    labels = df[x].astype(str).tolist()
    values = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=np.float64)
    errors = pd.to_numeric(df[yerr], errors="coerce").fillna(0.0).to_numpy() if yerr else None
    fig = Figure(figsize=(max(4.0, 0.6 * len(labels) + 2), 4.5))
    ax = fig.subplots()
    positions = np.arange(len(labels))
    ax.bar(positions, values, yerr=errors, capsize=3, color="tab:blue", alpha=0.85)
    tops = values + (errors if errors is not None else 0.0)
    for position, value, top in zip(positions, values, tops):
        if np.isfinite(value):
            ax.annotate(f"{value:.3f}", (position, top), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(positions, labels, rotation=30, ha="right")
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    return out_path


def plot_intervals(table: pd.DataFrame, out_path: str | Path, title: str = "", metric: str = "test mAP") -> Path:
    """Forest plot of paired differences (spml.stats.paired_differences rows) in `metric`: each variant's per-seed
    differences as dots, their mean as a bar with its t interval, a zero line; significant rows (Holm) in
    colour -> out_path."""
    fig = Figure(figsize=(7.5, max(2.5, 0.45 * len(table) + 1.5)))
    ax = fig.subplots()
    rows = np.arange(len(table))[::-1]
    for y, (_, row) in zip(rows, table.iterrows()):
        color = "tab:green" if row["significant"] and row["diff_mean"] > 0 else (
            "tab:red" if row["significant"] else "0.35")
        ax.scatter(row["diffs"], [y] * len(row["diffs"]), s=12, color=color, alpha=0.45, zorder=2)
        if not pd.isna(row["ci_low"]):
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, lw=2.2, zorder=3)
        ax.plot([row["diff_mean"]], [y], marker="D", color=color, ms=6, zorder=4)
    ax.axvline(0.0, color="0.5", lw=0.9, ls="--")
    ax.set_yticks(rows, table["variant"].astype(str).tolist())
    ax.set_xlabel(f"difference in {metric} (dots: seeds; bar: 95% t interval of the mean)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    return out_path


def _class_colors(n: int) -> list:
    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def _finish(ax, xlabel: str, ylabel: str, title: str, metric: str, loc: str) -> None:
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=f"class ({metric})", fontsize=7, title_fontsize=8, loc=loc)
    ax.figure.tight_layout()
