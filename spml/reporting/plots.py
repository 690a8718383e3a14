"""Figures for evaluation reports and result tables, drawn on Agg canvases (no pyplot, no display)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve


def plot_curves(
    scores: Any, targets: Any, known: Any | None, classes: list[str] | tuple[str, ...], out_dir: str | Path, result: Any
) -> list[Path]:
    """Write roc.png and pr.png (curve_figures) into out_dir.

    Args:
        scores: (N, C) probabilities. targets: (N, C) {0, 1}. known: (N, C) bool or None (all known).
        classes: the C names. out_dir: the folder.
        result: their spml.evaluation.metrics.EvalResult (per-class AUROC/AP for the legends and titles).

    Returns:
        [roc.png, pr.png] paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "roc.png", out_dir / "pr.png"]
    for fig, path in zip(curve_figures(scores, targets, known, classes, result), paths):
        fig.savefig(path, dpi=120)
    return paths


def curve_figures(
    scores: Any, targets: Any, known: Any | None, classes: list[str] | tuple[str, ...], result: Any
) -> tuple[Figure, Figure]:
    """ROC and precision-recall figures of one set of predictions.

    One curve per scorable class over its known entries, the legend (outside the axes) giving each class's AUROC /
    AP, the title the macro mean and how many classes it covers, the classes left out (no positive or no negative)
    named under the axes.

    Args:
        scores: the predicted scores.
        targets: the labels (> 0.5: positive).
        known: which entries are labelled (None: all).
        classes: the class names.
        result: the EvalResult of these predictions (spml.evaluation.metrics.evaluate_predictions).

    Returns:
        (ROC figure, precision-recall figure).

    Shape:
        - scores, targets, known: (N, C).
    """
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets) > 0.5
    known = np.ones(scores.shape, bool) if known is None else np.asarray(known, dtype=bool)
    roc_fig, pr_fig = Figure(figsize=(9, 6)), Figure(figsize=(9, 6))
    roc_ax, pr_ax = roc_fig.subplots(), pr_fig.subplots()
    colors = _class_colors(len(classes))
    for c, row in result.per_class.iterrows():
        if row["skipped"]:
            continue
        y, s = targets[known[:, c], c], scores[known[:, c], c]
        fpr, tpr, _ = roc_curve(y, s)
        precision, recall, _ = precision_recall_curve(y, s)
        roc_ax.plot(fpr, tpr, color=colors[c], lw=1.2, label=f"{row['class']} ({row['auroc']:.3f})")
        pr_ax.step(recall, precision, where="post", color=colors[c], lw=1.2, label=f"{row['class']} ({row['ap']:.3f})")
    roc_ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    scored = f"{len(result.summary['classes_used'])} of {len(classes)} classes"
    _finish(
        roc_ax,
        "false positive rate",
        "true positive rate",
        f"ROC: mean AUROC {result.summary['mean_auroc']:.4f} ({scored})",
        "AUROC",
        result.skipped,
    )
    _finish(
        pr_ax,
        "recall",
        "precision",
        f"Precision-recall: mAP {result.summary['mAP']:.4f} ({scored})",
        "AP",
        result.skipped,
    )
    return roc_fig, pr_fig


def plot_bars(df: pd.DataFrame, x: str, y: str, yerr: str | None, out_path: str | Path, title: str = "") -> Path:
    """Bar chart of df[y] per df[x] (bars from zero, values printed on top) with optional error bars df[yerr].

    A missing error (e.g. the std of a single seed) is drawn as none.

    Args:
        df: the table.
        x: column of the bar labels.
        y: column of the bar heights.
        yerr: column of the error bars (None: none).
        out_path: the PNG written.
        title: figure title.

    Returns:
        `out_path`; a KeyError naming the columns when x, y or yerr is not one.
    """
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
            ax.annotate(
                f"{value:.3f}",
                (position, top),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(positions, labels, rotation=30, ha="right")
    ax.set_ylabel(y)
    set_title(ax, title, 10)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out_path)


def plot_intervals(table: pd.DataFrame, out_path: str | Path, title: str = "", metric: str = "test mAP") -> Path:
    """Forest plot of paired differences in `metric`, one row per variant.

    Each variant's per-seed differences are dots, their mean a marker with its t interval as a bar, and a zero line
    is drawn; significant rows (Holm) are in colour (green better, red worse).

    Args:
        table: spml.reporting.stats.paired_differences rows.
        out_path: the PNG written.
        title: figure title.
        metric: the metric's name for the axis label.

    Returns:
        `out_path`.
    """
    fig = Figure(figsize=(7.5, max(2.5, 0.45 * len(table) + 1.5)))
    ax = fig.subplots()
    rows = np.arange(len(table))[::-1]
    for y, (_, row) in zip(rows, table.iterrows()):
        color = (
            "tab:green"
            if row["significant"] and row["diff_mean"] > 0
            else ("tab:red" if row["significant"] else "0.35")
        )
        ax.scatter(row["diffs"], [y] * len(row["diffs"]), s=12, color=color, alpha=0.45, zorder=2)
        if not pd.isna(row["ci_low"]):
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, lw=2.2, zorder=3)
        ax.plot([row["diff_mean"]], [y], marker="D", color=color, ms=6, zorder=4)
    ax.axvline(0.0, color="0.5", lw=0.9, ls="--")
    ax.set_yticks(rows, table["variant"].astype(str).tolist())
    ax.set_xlabel(f"difference in {metric} (dots: seeds; bar: 95% t interval of the mean)")
    set_title(ax, title, 9)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out_path)


def save_figure(fig: Figure, out_path: str | Path) -> Path:
    """Lay out `fig` (nothing clipped) and write it as a 120 dpi PNG, creating the folder.

    Args:
        fig: the figure.
        out_path: the PNG written.

    Returns:
        `out_path` as a Path.
    """
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    return out_path


def _class_colors(n: int) -> list:
    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def _finish(ax, xlabel: str, ylabel: str, title: str, metric: str, skipped: dict[str, str]) -> None:
    """Axes labels and title; the legend outside the axes (right), so it never hides a curve; the classes
    left out (no positive or no negative) named under the axes."""
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel)
    set_title(ax, title, 10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(
            title=f"class ({metric})",
            fontsize=7,
            title_fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
        )
    if skipped:
        ax.figure.text(
            0.01,
            0.01,
            _wrap("not scored: " + "; ".join(f"{name} ({reason})" for name, reason in skipped.items()), 120),
            fontsize=7,
            color="tab:red",
            va="bottom",
        )
    ax.figure.tight_layout(rect=(0, 0.05 if skipped else 0, 1, 1))


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def set_title(ax, title: str, fontsize: float) -> None:
    """A title wrapped to the figure's width (about 0.6 em per character).

    So tight_layout can keep all of it inside the figure instead of clipping a long grid or class name.

    Args:
        ax: matplotlib axes.
        title: the text.
        fontsize: in points.
    """
    chars = int(ax.figure.get_figwidth() * 72 / (0.6 * fontsize))
    ax.set_title(_wrap(title, chars), fontsize=fontsize)


def plot_reliability(
    bins: pd.DataFrame,
    ece: pd.DataFrame,
    out_path: str | Path,
    scaled: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    title: str = "",
    scaled_label: str = "calibrated",
) -> Path:
    """Per-class reliability diagrams (spml.evaluation.calibration.reliability tables).

    Observed positive rate against mean probability per bin (marker area ~ entries in the bin), the diagonal of
    perfect calibration, the class's ECE in its title; with `scaled`, the calibrated probabilities beside the raw
    ones.

    Args:
        bins: per class and bin: class, confidence, frequency, count.
        ece: per class: class, ece.
        out_path: the PNG written (100 dpi).
        scaled: (bins, ece) of the calibrated probabilities (None: raw only).
        title: figure title ("": a default heading).
        scaled_label: the legend name of the `scaled` probabilities.

    Returns:
        `out_path` as a Path.
    """
    classes = ece["class"].tolist()
    columns = min(5, max(len(classes), 1))
    rows = -(-len(classes) // columns)
    fig = Figure(figsize=(2.6 * columns, 2.6 * rows + 0.8))
    axes = fig.subplots(rows, columns, squeeze=False)
    series = [("raw", "tab:blue", bins, ece)] + ([(scaled_label, "tab:orange", *scaled)] if scaled else [])
    for k, ax in enumerate(axes.flat):
        if k >= len(classes):
            ax.set_axis_off()
            continue
        name = classes[k]
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        parts = []
        for label, color, table, per_class in series:
            rows_c = table[(table["class"] == name) & (table["count"] > 0)]
            size = 8 + 60 * rows_c["count"] / max(rows_c["count"].max(), 1) if len(rows_c) else 8
            ax.plot(rows_c["confidence"], rows_c["frequency"], color=color, lw=1, label=label)
            ax.scatter(rows_c["confidence"], rows_c["frequency"], s=size, color=color, zorder=3)
            parts.append(f"{per_class.loc[per_class['class'] == name, 'ece'].iloc[0]:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.set_title(f"{name}\nECE {' / '.join(parts)}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    heading = title or "Reliability: observed positive rate against mean predicted probability per bin"
    fig.suptitle(heading, fontsize=10)
    fig.supxlabel("mean predicted probability", fontsize=8)
    fig.supylabel("observed positive rate", fontsize=8)
    if len(series) > 1:
        fig.legend(handles[: len(series)], labels[: len(series)], loc="lower right", fontsize=7, ncol=len(series))
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    return out_path


NOT_LOSSES = {"train/lr", "train/images_per_s", "train/epoch"}


def training_panels(names: set[str]) -> list[tuple[str, list[str]]]:
    """(title, log names) of the training-curve panels that have values among `names`.

    Args:
        names: the log names a run wrote (train/..., val/..., pseudo/...).

    Returns:
        The panels in drawing order (losses, validation, MPC pseudo-labels, learning rate), empty ones left out.

    Example:
        >>> training_panels({"train/loss", "train/lr", "val/mAP", "train/epoch"})
        [('training loss and components', ['train/loss']), ('validation', ['val/mAP']), ('learning rate', ['train/lr'])]
    """
    rates = sorted(n for n in names if n.startswith("train/") and n.endswith("_rate"))  # MPC's pseudo-label shares
    losses = sorted(n for n in names if n.startswith("train/") and n not in NOT_LOSSES and n not in rates)
    panels = [
        ("training loss and components", losses),
        ("validation", [n for n in ("val/mAP", "val/mean_auroc") if n in names]),
        (
            "MPC pseudo-labels (precision/recall against the hidden truth)",
            [n for n in ("pseudo/precision", "pseudo/recall") if n in names] + rates,
        ),
        ("learning rate", [n for n in ("train/lr",) if n in names]),
    ]
    return [(title, chosen) for title, chosen in panels if chosen]


def plot_training(log: pd.DataFrame, out_path: str | Path, title: str = "") -> Path | None:
    """Training curves from a run's log.csv: one panel each for what was logged.

    Panels: losses, validation metrics, pseudo-label precision/recall (MPC) and the learning rate. A step logged
    twice (a resumed run repeats the steps after its checkpoint) keeps its last value.

    Args:
        log: the log table, columns step, name, value.
        out_path: the PNG written (100 dpi).
        title: figure title.

    Returns:
        `out_path`, or None when no panel has values (nothing is written).
    """
    log = log.drop_duplicates(["step", "name"], keep="last")
    panels = training_panels(set(log["name"]))
    if not panels:
        return None
    fig = Figure(figsize=(11, 3.2 * -(-len(panels) // 2) + 0.4))
    axes = fig.subplots(-(-len(panels) // 2), 2, squeeze=False)
    for ax, (panel_title, chosen) in zip(axes.flat, panels):
        for name in chosen:
            rows = log[log["name"] == name].sort_values("step")
            ax.plot(
                rows["step"],
                rows["value"],
                lw=1.2,
                marker="o" if len(rows) < 30 else None,
                ms=3,
                label=name.split("/", 1)[1],
            )
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    return out_path
