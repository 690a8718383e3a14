"""One self-contained HTML page per run (or experiment grid), built from the files the run wrote.

Images are embedded as base64 data URIs and the style sheet is inline: the page needs no network, no
other file and no script to be read, mailed or archived. Every section says plainly when its files are
missing (an interrupted run, an evaluation not run yet) instead of leaving a hole.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from spml.reporting.plots import plot_training
from spml.utils.io import write_text_atomic
from spml.utils.text import describe_weights

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1300px;
padding:0 18px 40px;color:#1d2330;line-height:1.45}
h1{font-size:1.5em;margin:22px 0 4px}h2{font-size:1.2em;border-bottom:2px solid #d8dde6;padding-bottom:3px;
margin-top:30px}h3{font-size:1em;margin:18px 0 6px}nav{font-size:.9em;margin:8px 0 14px}nav a{margin-right:12px}
table{border-collapse:collapse;font-size:.8em;margin:6px 0 12px}th,td{border:1px solid #d8dde6;padding:3px 6px;
text-align:right}th{background:#eef1f6}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f8f9fb}img{max-width:100%;height:auto;border:1px solid #e3e6ec;margin:4px 0}
.muted{color:#6b7385}.warn{background:#fff4e0;border-left:4px solid #e8a33d;padding:6px 10px;margin:6px 0}
.note{background:#eef4ff;border-left:4px solid #5b8def;padding:6px 10px;margin:6px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #d8dde6;border-radius:6px;padding:8px 12px;
min-width:150px}.card b{display:block;font-size:1.25em}pre{background:#f6f7f9;padding:10px;overflow:auto;
font-size:.8em;max-height:520px}.gallery img{max-width:49%}td .muted{white-space:nowrap;font-size:.9em}
.scroll{overflow-x:auto;max-width:100%}
"""
SECTIONS = (
    ("summary", "Summary"),
    ("data", "Data and masking"),
    ("training", "Training curves"),
    ("results", "Per-class results"),
    ("plots", "ROC, precision-recall and calibration"),
    ("heatmaps", "Heatmaps"),
    ("config", "Resolved configuration"),
)


def metric_label(split: str, metric: str = "mAP") -> str:
    """How tables name a metric of `split`: "mAP" for the test split (the default), "val mAP" for the others.

    Args:
        split: the split's name.
        metric: the metric's name.

    Returns:
        The label.
    """
    return metric if split == "test" else f"{split} {metric}"


def esc(value: Any) -> str:
    """HTML-escape `value`'s text (quotes included).

    Args:
        value: anything with a str().

    Returns:
        The escaped text.
    """
    return html.escape(str(value), quote=True)


def image(path: Path, alt: str) -> str:
    """An <img> with the PNG embedded as a data URI (a note when the file is missing).

    Args:
        path: the PNG file.
        alt: the alternative text.

    Returns:
        The HTML fragment.
    """
    if not path.exists():
        return note(f"{alt}: not written ({path.name} missing)")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def note(text: str, kind: str = "note") -> str:
    """A paragraph of escaped text with the CSS class `kind`.

    Args:
        text: the text.
        kind: "note" | "warn".

    Returns:
        The HTML fragment.
    """
    return f'<p class="{kind}">{esc(text)}</p>'


def number(value: Any, digits: int = 3) -> str:
    """A number for a table cell: floats with `digits` decimals, a dash for None / NaN.

    Args:
        value: the value.
        digits: decimals of a float.

    Returns:
        The text.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def with_interval(row: pd.Series | dict, key: str, digits: int = 3) -> str:
    """ "0.912 [0.884, 0.937]" from row[key], row[key_ci_low], row[key_ci_high] (the value alone without them).

    Args:
        row: a table row.
        key: the metric's column.
        digits: decimals.

    Returns:
        The HTML fragment.
    """
    text = number(row.get(key), digits)
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if text != "—" and low is not None and not pd.isna(low):
        text += f'<br><span class="muted">[{low:.{digits}f}, {high:.{digits}f}]</span>'
    return text


def table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """An HTML table; cells are trusted HTML fragments (escape text with esc).

    Args:
        headers: the column headers (escaped here).
        rows: the rows of cells.

    Returns:
        The HTML fragment.
    """
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def read_json(path: Path) -> dict | None:
    """A JSON file's content, None when it does not exist.

    Args:
        path: the file.

    Returns:
        The parsed JSON, or None.
    """
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV file as a DataFrame, None when it does not exist.

    Args:
        path: the file.

    Returns:
        The table, or None.
    """
    return pd.read_csv(path) if path.exists() else None


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: a header, the navigation and the sections.

    Args:
        title: the page's title.
        subtitle: the line under it.
        sections: (id, heading, body HTML) per section.

    Returns:
        The HTML page.
    """
    nav = "".join(f'<a href="#{sid}">{esc(heading)}</a>' for sid, heading, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{esc(heading)}</h2>{content}</section>' for sid, heading, content in sections
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width, initial-scale=1"><title>{esc(title)}</title><style>{STYLE}</style>'
        f'</head><body><header><h1>{esc(title)}</h1><p class="muted">{esc(subtitle)} · written {stamp} by '
        f"spml</p></header><nav>{nav}</nav>{body}</body></html>"
    )


# ------------------------------------------------------------------------------------------------ run report
def summary_section(run: Path, folder: Path, metrics: dict | None, config: str) -> str:
    """The summary: headline metrics with their intervals, classes scored, probabilities and operating points.

    A warning when the run has no test evaluation.

    Args:
        run: the run folder.
        folder: the evaluation folder.
        metrics: its metrics.json (None: missing).
        config: one line describing the run.

    Returns:
        The HTML fragment.
    """
    if metrics is None:
        return note(
            "no test evaluation (eval/metrics.json missing): the run did not finish, or evaluate it "
            f"with tools/evaluate.py {run}",
            "warn",
        )
    cards = [
        ("test mAP", metrics.get("mAP"), metrics.get("mAP_ci_low"), metrics.get("mAP_ci_high")),
        ("mean AUROC", metrics.get("mean_auroc"), metrics.get("mean_auroc_ci_low"), metrics.get("mean_auroc_ci_high")),
        ("ECE raw, mean over classes", metrics.get("ece"), None, None),
    ]
    if "ece_calibrated" in metrics:
        cards.append((f"ECE calibrated ({metrics.get('calibration')})", metrics["ece_calibrated"], None, None))
    if metrics.get("pointing_game") is not None:
        cards.append(("pointing game, mean over findings", metrics["pointing_game"], None, None))
    html_cards = []
    for label, value, low, high in cards:
        interval = f'<span class="muted">95% CI [{low:.3f}, {high:.3f}]</span>' if low is not None else ""
        extra = (
            f'<span class="muted">random point {metrics["pointing_baseline"]:.3f}</span>'
            if label.startswith("pointing")
            else interval
        )
        html_cards.append(f'<div class="card">{esc(label)}<b>{number(value, 4)}</b>{extra}</div>')
    used, skipped = metrics.get("classes_used", []), metrics.get("skipped", {})
    lines = [
        f'<div class="cards">{"".join(html_cards)}</div>',
        f"<p>{len(used)} of {metrics.get('n_classes', len(used))} classes scored over "
        f"{metrics.get('n_images')} test rows ({esc(metrics.get('level', 'image'))} level); macro means over "
        f"the scored classes; intervals: {metrics.get('bootstrap', 0)} bootstrap resamples of the images.</p>",
    ]
    if skipped:
        lines.append(note("left out of the macro means: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()), "warn"))
    lines += probabilities_lines(metrics)
    if metrics.get("temperatures_at_bound"):
        lines.append(
            note(
                f"{metrics['temperatures_at_bound']} fitted temperatures reached the end of their range: "
                "those probabilities carry a bias temperature scaling cannot remove (e.g. all above 0.5); "
                "eval.calibration=platt removes it",
                "warn",
            )
        )
    if metrics.get("threshold_rule"):
        stored = folder / "thresholds.json" if (folder / "thresholds.json").exists() else run / "thresholds.json"
        lines.append(
            f"<p>Operating points: rule <b>{esc(metrics['threshold_rule'])}</b>, fitted on the validation "
            f"split for {metrics.get('classes_with_threshold')} classes; stored in "
            f"<code>{esc(stored)}</code>.</p>"
        )
    return "".join(lines) + f"<p class='muted'>{esc(config)}</p>"


def probabilities_lines(metrics: dict) -> list[str]:
    """What the probabilities of the run's outputs are (issue 24).

    Calibrated how, on which labels, with the classes that fell back and the class priors of a single-positive val
    split.

    Args:
        metrics: the evaluation's metrics.json.

    Returns:
        HTML fragments ([] when the metrics say nothing about the probabilities).
    """
    if "probabilities" not in metrics:
        return []
    lines = [
        f"<p>Probabilities (predict.py, thresholds, the calibrated reliability curves): "
        f"<b>{esc(metrics['probabilities'])}</b>. Test ECE {number(metrics.get('ece'))} raw, "
        f"{number(metrics.get('ece_calibrated'))} calibrated; Brier score {number(metrics.get('brier'))} raw, "
        f"{number(metrics.get('brier_calibrated'))} calibrated (means over classes). AUROC and AP are those of "
        "the model's raw scores.</p>"
    ]
    if metrics.get("calibration") == "none":
        lines.append(
            note(
                "eval.calibration=none: the probabilities are the model's raw outputs; a single-positive "
                "loss leaves them far from the findings' frequencies (read the reliability diagram)",
                "warn",
            )
        )
    if metrics.get("calibration_fallback"):
        lines.append(
            note(
                f"classes without enough val positives for their own calibration (pooled fit or raw "
                f"probabilities, see calibration.csv): {', '.join(metrics['calibration_fallback'])}",
                "warn",
            )
        )
    priors = metrics.get("class_priors")
    if priors:
        values = ", ".join(f"{name} {value:.3f}" for name, value in priors["values"].items())
        lines.append(
            note(
                f"single-positive val split (data.mask_val): calibration and thresholds from the observed "
                f"positives and class priors ({priors['how']}): {values}. Assumes the observed positives are "
                "a random sample of each class's positives (uniform masking)"
            )
        )
    if metrics.get("best_metric"):
        lines.append(
            f"<p class='muted'>best checkpoint chosen by {esc(metrics['best_metric'])} (the final weights "
            "are the ones evaluated here).</p>"
        )
    return lines


def data_section(run: Path) -> str:
    """Data and masking: per-class counts from data_stats.json and masking_manifest.json, and bad-image skips.

    Args:
        run: the run folder.

    Returns:
        The HTML fragment.
    """
    stats, manifest = read_json(run / "data_stats.json"), read_json(run / "masking_manifest.json")
    parts = []
    if stats is None:
        parts.append(note("data_stats.json missing", "warn"))
    else:
        for warning in stats.get("warnings", []):
            parts.append(note(f"{warning.get('split', '')}: {warning.get('message', warning)}", "warn"))
        hidden = (manifest or {}).get("hidden_positives", {})
        observed = (manifest or {}).get("observed_positives", {})
        rows = []
        for k, name in enumerate(stats["classes"]):
            row = [esc(name), number(stats["pos_counts"][k], 0), f"{100 * stats['class_prior'][k]:.1f}%"]
            if manifest:
                row += [number(observed.get(name), 0), number(hidden.get(name), 0)]
            rows.append(row)
        headers = ["class", "train positives (observed in SPML mode)", "val prevalence"]
        if manifest:
            headers += ["observed positives (manifest)", "hidden positives (manifest)"]
        parts.append(
            f"<p>{stats['num_images']} training images, {stats['expected_positives']:.2f} positives per "
            "image expected.</p>" + table(headers, rows)
        )
    if manifest:
        parts.append(
            f"<p>Masking: scheme <b>{esc(manifest['scheme'])}</b> {esc(manifest.get('scheme_params', {}))}, "
            f"seed {esc(manifest['seed'])}, rows in {manifest['rows_in']}, kept {manifest['rows_kept']}, "
            f"dropped {manifest['rows_dropped']} (rows without a positive: {esc(manifest['no_positive'])})."
            "</p>"
        )
    elif stats is not None:
        parts.append("<p class='muted'>No masking manifest: trained on full labels.</p>")
    skipped = read_csv(run / "skipped_images.csv")
    if skipped is not None and len(skipped):
        parts.append(note(f"{len(skipped)} bad-image skips recorded in skipped_images.csv", "warn"))
    return "".join(parts)


def training_section(run: Path) -> str:
    """The training curves of log.csv (written to <run>/training.png and embedded).

    Args:
        run: the run folder.

    Returns:
        The HTML fragment.
    """
    log = read_csv(run / "log.csv")
    if log is None or log.empty:
        return note("log.csv missing or empty")
    path = plot_training(log, run / "training.png")
    return image(path, "training curves") if path else note("log.csv holds no training values")


def results_section(folder: Path) -> str:
    """The per-class table: AUROC and AP, with calibration, operating points and pointing game when written.

    Args:
        folder: the evaluation folder.

    Returns:
        The HTML fragment.
    """
    per_class = read_csv(folder / "per_class.csv")
    if per_class is None:
        return note(f"{folder.name}/per_class.csv missing")
    points = read_csv(folder / "operating_points.csv")
    calibration = read_csv(folder / "calibration.csv")
    pointing = read_csv(folder / "pointing_game.csv")
    headers = ["class", "positives", "negatives", "AUROC", "AP"]
    if calibration is not None:
        headers += ["ECE raw", "ECE calibrated"]
    if points is not None:
        headers += ["threshold", "sensitivity", "specificity", "PPV", "F1"]
    if pointing is not None:
        headers += ["pointing game", "random point"]
    rows = []
    for _, row in per_class.iterrows():
        name = row["class"]
        cells = [
            esc(name)
            + (
                f' <span class="muted">({esc(row["skipped"])})</span>'
                if isinstance(row["skipped"], str) and row["skipped"]
                else ""
            ),
            number(row["n_pos"], 0),
            number(row["n_neg"], 0),
            with_interval(row, "auroc"),
            with_interval(row, "ap"),
        ]
        if calibration is not None:
            c = calibration[calibration["class"] == name]
            cells += (
                [number(c["ece_raw"].iloc[0]), number(c["ece_calibrated"].iloc[0]) if "ece_calibrated" in c else "—"]
                if len(c)
                else ["—", "—"]
            )
        if points is not None:
            p = points[points["class"] == name]
            p = p.iloc[0] if len(p) else {}
            cells += [number(p.get("threshold"))] + [
                with_interval(p, key) for key in ("sensitivity", "specificity", "ppv", "f1")
            ]
        if pointing is not None:
            g = pointing[pointing["class"] == name]
            cells += (
                [
                    f"{with_interval(g.iloc[0], 'hit_rate')} <span class='muted'>n={g['images'].iloc[0]}</span>",
                    number(g["baseline"].iloc[0]),
                ]
                if len(g)
                else ["—", "—"]
            )
        rows.append(cells)
    text = table(headers, rows)
    if points is not None:
        text += (
            "<p class='muted'>Sensitivity, specificity, PPV and F1 at each class's threshold (calling a finding "
            "present when its calibrated probability reaches it), with 95% bootstrap intervals.</p>"
        )
    return text


def plots_section(folder: Path) -> str:
    """The ROC, precision-recall and reliability plots of the evaluation folder.

    Args:
        folder: the evaluation folder.

    Returns:
        The HTML fragment.
    """
    return "".join(
        image(folder / name, alt)
        for name, alt in (
            ("roc.png", "ROC curves"),
            ("pr.png", "PR curves"),
            ("reliability.png", "reliability diagrams"),
        )
    )


def heatmap_section(folder: Path) -> str:
    """The pointing game table and the heatmap gallery of the evaluation folder.

    Args:
        folder: the evaluation folder.

    Returns:
        The HTML fragment.
    """
    gallery = sorted((folder / "heatmaps").glob("*.png"))
    parts = []
    pointing = read_csv(folder / "pointing_game.csv")
    if pointing is not None:
        method, tolerance = (pointing["method"].iloc[0], pointing["tolerance"].iloc[0]) if len(pointing) else ("", 0)
        parts.append(
            f"<p>Pointing game ({esc(method)}, tolerance {tolerance} px): a hit when the heatmap's "
            "maximum lies inside the finding's region; the random point's hit rate is the region's share "
            "of the image. Classes with a large region (global findings) make the check weak: compare "
            "each hit rate with its baseline.</p>"
        )
        parts.append(
            table(
                ["class", "images", "hit rate [95% Wilson]", "random point", "flat maps"],
                [
                    [
                        esc(r["class"]),
                        number(r["images"], 0),
                        with_interval(r, "hit_rate"),
                        number(r["baseline"]),
                        number(r["flat_maps"], 0),
                    ]
                    for _, r in pointing.rename(
                        columns={"ci_low": "hit_rate_ci_low", "ci_high": "hit_rate_ci_high"}
                    ).iterrows()
                ],
            )
        )
    if not gallery:
        parts.append(note("no heatmap gallery (eval.heatmaps=0, or tools/evaluate.py RUN --heatmaps N)"))
    else:
        parts.append(
            "<p class='muted'>Each class's first known-positive test images in split order (not chosen by "
            "score); top row the image, bottom row its heatmap.</p>"
        )
        parts.append('<div class="gallery">' + "".join(image(p, f"heatmaps {p.stem}") for p in gallery) + "</div>")
    return "".join(parts)


def describe_method(config: dict) -> str:
    """What a run trained, from its config.yaml.

    The loss (the mode's default when loss.name is empty) and, in spml mode, the objective (MPC with that base loss,
    or the loss alone).

    Args:
        config: the parsed config.yaml.

    Returns:
        The description.
    """
    supervised = config.get("mode") == "supervised"
    loss = config.get("loss", {}).get("name") or ("bce" if supervised else "em")
    if supervised:
        return f"loss {loss}"
    return f"MPC, base loss {loss}" if config.get("spml", {}).get("objective", "mpc") == "mpc" else f"loss {loss}"


def write_run_report(run_dir: str | Path, out: str | Path | None = None, eval_name: str = "eval") -> Path:
    """<run>/report.html (or `out`) from the run folder.

    Built from config.yaml, data_stats.json, masking_manifest.json, log.csv and the `eval_name` evaluation folder
    (metrics, per-class table, operating points, calibration, plots, heatmaps, pointing game).

    Args:
        run_dir: the run folder.
        out: the page to write (default <run>/report.html).
        eval_name: the evaluation folder inside the run.

    Returns:
        The path written.
    """
    run = Path(run_dir)
    if not (run / "config.yaml").exists():
        raise FileNotFoundError(f"{run} is not a run folder (no config.yaml)")
    folder = run / eval_name
    metrics = read_json(folder / "metrics.json")
    config_text = (run / "config.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(config_text)
    method = describe_method(config)
    model, augment = config.get("model", {}), config.get("augment", {})
    record = model.get("pretrained_record") or {}
    weights = describe_weights(record, model.get("pretrained", ""))
    described = (
        f"mode {config.get('mode')}, {method}, dataset {config.get('data', {}).get('dataset')}, "
        f"{model.get('backbone')} at {config.get('data', {}).get('size')} px; {weights}; input normalisation "
        f"mean {augment.get('mean')}, std {augment.get('std')}"
    )
    sections = [
        ("summary", "Summary", summary_section(run, folder, metrics, described)),
        ("data", "Data and masking", data_section(run)),
        ("training", "Training curves", training_section(run)),
        ("results", f"Per-class results ({eval_name})", results_section(folder)),
        ("plots", "ROC, precision-recall and calibration", plots_section(folder)),
        ("heatmaps", "Heatmaps", heatmap_section(folder)),
        ("config", "Resolved configuration", f"<pre>{esc(config_text)}</pre>"),
    ]
    path = Path(out) if out else run / "report.html"
    write_text_atomic(path, page(f"Run report: {run.name}", str(run), sections))
    return path


# ----------------------------------------------------------------------------------------------- grid report
def write_grid_report(
    out: str | Path, name: str, runs: pd.DataFrame, table_rows: pd.DataFrame, paired: pd.DataFrame | None = None
) -> Path:
    """<out>/report.html for an experiment grid.

    The mean ± std table (spml.reporting.grid_results.aggregate), the paired differences (spml.reporting.stats) when
    present, results.png / paired.png from `out`, and one row per run with a link to its own report.

    Args:
        out: the grid's output folder.
        name: the grid's name.
        runs: one row per run.
        table_rows: the aggregate table.
        paired: the paired differences (None: none).

    Returns:
        The path written.
    """
    out = Path(out)
    split = table_rows.attrs.get("split", "test")  # the runs' columns stay the test split's
    metric_columns = [c for c in ("mAP", "mean_auroc") if f"{c}_mean" in table_rows]
    headers = ["variant", *[metric_label(split, c) for c in metric_columns], "seeds"]
    headers += ["recovery"] if "recovery" in table_rows else []
    rows = []
    for _, row in table_rows.iterrows():
        cells = [esc(row["variant"])]
        for metric in metric_columns:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            cells.append(number(mean, 4) + ("" if pd.isna(std) else f" ± {std:.4f}"))
        cells.append(number(row.get("mAP_count"), 0) if not pd.isna(row.get("mAP_count")) else "0")
        if "recovery" in table_rows:
            cells.append(number(row["recovery"], 2))
        rows.append(cells)
    reference = table_rows.attrs.get("full_reference")
    recovery = (
        f"<p>Recovery = (method − AN) / (full − AN) on mAP, against the best full-label variant: {esc(reference)}.</p>"
        if reference
        else ""
    )
    sections = [
        (
            "summary",
            "Results",
            table(headers, rows) + recovery + image(out / "results.png", f"{metric_label(split)} per variant"),
        )
    ]
    if paired is not None and len(paired):
        paired_rows = [
            [
                esc(r["variant"]),
                number(r["n"], 0),
                f"{r['diff_mean']:+.4f}",
                "—" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                number(r["p"]),
                number(r["p_holm"]),
                "yes" if r["significant"] else "no",
            ]
            for _, r in paired.iterrows()
        ]
        sections.append(
            (
                "paired",
                f"Paired differences over seeds ({metric_label(split)})",
                table(
                    ["variant", "seeds", "mean difference", "95% t interval", "p", "Holm p", "significant"], paired_rows
                )
                + image(out / "paired.png", "paired differences"),
            )
        )
    run_rows = []
    for _, row in runs.iterrows():
        report = Path(str(row.get("run_dir", ""))) / "report.html"
        link = (
            f'<a href="{esc(os.path.relpath(report, out))}">report</a>'
            if pd.notna(row.get("run_dir")) and report.exists()
            else "—"
        )
        run_rows.append(
            [
                esc(row["variant"]),
                esc(row["seed"]),
                esc(row["status"]),
                number(row.get("mAP"), 4),
                number(row.get("mean_auroc"), 4),
                link,
            ]
        )
    sections.append(("runs", "Runs", table(["variant", "seed", "status", "mAP", "mean AUROC", "run report"], run_rows)))
    path = out / "report.html"
    write_text_atomic(path, page(f"Experiment report: {name}", str(out), sections))
    return path
