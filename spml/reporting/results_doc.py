"""docs/results.md from a hand-written template and the committed grid results (tools/results_doc.py).

A grid's results live in `<results>/<name>.csv` (one row per run: tools/ablate.py's or
tools/masking_experiment.py's results.csv) and `<name>.json` (its results.json: name, command, reference, compare,
split, seeds, budget, machine, training minutes). The template is Markdown with placeholders:

* `{{grid:NAME}}`: the grid's block: the command, seeds, budget, machine and training time, the mean +/- std table
  with recovery, the per-seed table, the paired differences (spml.experiments.grid.report_sections) and its plot
  (`NAME_paired.png`, the forest plot of the paired differences, or `NAME.png`, mean bars, without `compare`).
* `{{mean:NAME|VARIANT}}`, `{{recovery:NAME|VARIANT}}`: one number of the mean table, for the prose.
* `{{diff:NAME|VARIANT}}`: the compared variant minus VARIANT, "+0.0123 [-0.0040, +0.0286]" (mean, 95% t interval).
* `{{table:NAME}}`: a study that is not a grid of runs (e.g. tools/calibration_study.py): `<results>/NAME.csv` (one
  row per seed and setting) and `NAME.json` (command, seeds, machine, and `views`: [{title, where {column: value},
  rows [columns], metrics [columns]}]): per view, the mean ± std over seeds of each metric per row key.

So every number and table of the document comes from the CSVs, and one command rebuilds it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from spml.reporting.grid_results import SPLIT_METRICS, aggregate, competitors, gather_results, report_sections
from spml.reporting.plots import plot_bars, plot_intervals
from spml.reporting.run_report import metric_label
from spml.reporting.stats import paired_differences

PLACEHOLDER = re.compile(r"\{\{(grid|mean|recovery|diff|table):([^}|]+)(?:\|([^}]+))?\}\}")


@dataclass
class GridResults:
    """One grid's committed results: the per-run CSV and its results.json.

    Attributes:
        name: the grid's name (`<name>.csv`, `<name>.json`).
        frame: one row per run.
        meta: its results.json.
    """

    name: str
    frame: pd.DataFrame
    meta: dict

    @classmethod
    def read(cls, folder: Path, name: str) -> GridResults:
        """Read `<folder>/<name>.csv` and `<name>.json` (a FileNotFoundError naming the file when one is missing).

        Args:
            folder: the committed results folder.
            name: the grid's name.

        Returns:
            The GridResults.
        """
        csv, meta = folder / f"{name}.csv", folder / f"{name}.json"
        for path in (csv, meta):
            if not path.exists():
                raise FileNotFoundError(
                    f"{path}: no results for grid {name!r} (collect them with tools/results_doc.py "
                    f"--collect {name}=<grid folder>)"
                )
        return cls(name, pd.read_csv(csv), json.loads(meta.read_text(encoding="utf-8")))

    @property
    def split(self) -> str:
        return self.meta.get("split", "test")

    def table(self) -> pd.DataFrame:
        return aggregate(self.frame, self.meta.get("reference"), self.split).set_index("variant")

    def paired(self) -> pd.DataFrame:
        compare = self.meta.get("compare", "")
        if not compare:
            raise ValueError(f"grid {self.name!r} compares no variant (its results.json has no 'compare')")
        return paired_differences(
            competitors(self.frame, self.meta.get("reference")), compare, SPLIT_METRICS[self.split][0]
        ).set_index("variant")


@dataclass
class Rendered:
    """A rendered document and the plots it links.

    Attributes:
        text: the Markdown.
        plots: callables that write the linked plots and return their paths (deferred: the text can be checked
            without them).
    """

    text: str
    plots: list[Callable[[], Path]] = field(default_factory=list)  # deferred: the text can be checked without them


def seed_list(seeds: list[int]) -> str:
    """[0, 1, 2, 3, 4] -> '0-4'; other lists comma-separated.

    Args:
        seeds: the seeds.

    Returns:
        The text.
    """
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(seed) for seed in seeds)


def grid_block(grid: GridResults, folder: Path, link_prefix: str) -> Rendered:
    """The Markdown block of `{{grid:NAME}}` and the plot it links (written when the Rendered plots are called).

    Args:
        grid: the grid's results.
        folder: the results folder (the plot is written there).
        link_prefix: prefix of the links to the CSV and the plot.

    Returns:
        The Rendered block.
    """
    meta = grid.meta
    text, table, paired = report_sections(grid.frame, meta.get("reference"), meta.get("compare", ""), grid.split)
    done = int((grid.frame["status"] == "done").sum())
    header = (
        f"Command: `{meta.get('command', '')}`. Seeds: {seed_list(meta.get('seeds', []))} "
        f"({done} finished runs). Budget: {meta.get('budget', '')}. Machine: {meta.get('machine', '')}"
        + (
            f"; {meta['train_minutes']:g} min of training (wall clock per run, summed)"
            if meta.get("train_minutes")
            else ""
        )
        + f". Data: [{grid.name}.csv]({link_prefix}{grid.name}.csv).\n\n"
    )
    label = metric_label(grid.split)
    if paired is not None:
        png = folder / f"{grid.name}_paired.png"
        title = f"{meta.get('name', grid.name)}: {meta['compare']} − variant, {label} (95% t interval)"
        plot = partial(plot_intervals, paired, png, title=title, metric=label)
    else:
        png = folder / f"{grid.name}.png"
        title = f"{meta.get('name', grid.name)}: {label} (mean ± std over seeds)"
        plot = partial(plot_bars, table, x="variant", y="mAP_mean", yerr="mAP_std", out_path=png, title=title)
    return Rendered(header + text + f"\n![{png.stem}]({link_prefix}{png.name})\n", [plot])


def table_block(name: str, folder: Path, link_prefix: str) -> str:
    """The Markdown of `{{table:NAME}}` (see the module docstring).

    Args:
        name: the study's name (`<folder>/<name>.csv|json`).
        folder: the results folder.
        link_prefix: prefix of the link to the CSV.

    Returns:
        The Markdown text.
    """
    csv, meta_path = folder / f"{name}.csv", folder / f"{name}.json"
    for path in (csv, meta_path):
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no results for table {name!r} (collect them with tools/results_doc.py "
                f"--collect {name}=<study folder>)"
            )
    frame, meta = pd.read_csv(csv), json.loads(meta_path.read_text(encoding="utf-8"))
    parts = [
        f"Command: `{meta.get('command', '')}`. Seeds: {seed_list(meta.get('seeds', []))}. Machine: "
        f"{meta.get('machine', '')}. Data: [{name}.csv]({link_prefix}{name}.csv)."
    ]
    for view in meta.get("views", []):
        rows = frame
        for column, value in view.get("where", {}).items():
            rows = rows[rows[column] == value]
        keys, metrics = list(view["rows"]), list(view["metrics"])
        grouped = rows.groupby(keys, sort=False)[metrics]
        mean, std, count = grouped.mean(), grouped.std(), grouped.size()
        lines = [
            f"**{view['title']}**",
            "",
            "| " + " | ".join(keys + metrics + ["seeds"]) + " |",
            "|" + "---|" * len(keys) + "---:|" * (len(metrics) + 1),
        ]
        for key in mean.index:
            values = key if isinstance(key, tuple) else (key,)
            cells = [str(v) for v in values]
            cells += [
                f"{mean.loc[key, m]:.3f}" + ("" if pd.isna(std.loc[key, m]) else f" ± {std.loc[key, m]:.3f}")
                for m in metrics
            ]
            lines.append("| " + " | ".join([*cells, str(int(count.loc[key]))]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def render(template: str, folder: Path, link_prefix: str = "results/") -> Rendered:
    """Fill every placeholder of `template` from the grids in `folder` (see the module docstring).

    Args:
        template: the Markdown template.
        folder: the results folder.
        link_prefix: prefix of the links to the CSVs and plots.

    Returns:
        The Rendered document (an unknown placeholder is a ValueError).
    """
    grids: dict[str, GridResults] = {}
    plots: list[Callable[[], Path]] = []

    def grid(name: str) -> GridResults:
        if name not in grids:
            grids[name] = GridResults.read(folder, name)
        return grids[name]

    def replace(match: re.Match) -> str:
        kind, name, variant = match.group(1), match.group(2).strip(), (match.group(3) or "").strip()
        if kind == "table":
            return table_block(name, folder, link_prefix)
        results = grid(name)
        if kind == "grid":
            block = grid_block(results, folder, link_prefix)
            plots.extend(block.plots)
            return block.text.rstrip("\n")
        if not variant:
            raise ValueError(f"{match.group(0)}: name the variant, e.g. {{{{{kind}:{name}|MPC}}}}")
        source = results.paired() if kind == "diff" else results.table()
        if variant not in source.index:
            raise ValueError(
                f"{match.group(0)}: grid {name!r} has no variant {variant!r} here; it has {list(source.index)}"
            )
        row = source.loc[variant]
        if kind == "mean":
            return f"{row['mAP_mean']:.4f}"
        if kind == "recovery":
            return f"{row['recovery']:.2f}"
        return f"{row['diff_mean']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"

    text = PLACEHOLDER.sub(replace, template)
    unknown = re.search(r"\{\{[^}]*\}\}", text)
    if unknown:
        raise ValueError(
            f"{unknown.group(0)}: not a placeholder (grid:NAME, mean:NAME|VARIANT, recovery:NAME|VARIANT, "
            f"diff:NAME|VARIANT, table:NAME)"
        )
    return Rendered(text, plots)


def collect(name: str, grid_folder: Path, folder: Path) -> tuple[Path, Path]:
    """A grid folder's results to `<folder>/<name>.csv|json` (what render reads).

    results.json as it is, results.csv brought up to date with the run results under the grid folder and in its rows'
    run folders (one result.csv per run, written on the node that trained it; gather_results), so a grid whose runs
    trained on many nodes is collected whole even when each node wrote results.csv from its own runs.

    Args:
        name: the grid's name.
        grid_folder: the grid's output folder (results.csv, results.json).
        folder: the committed results folder.

    Returns:
        (the CSV path, the JSON path).
    """
    folder.mkdir(parents=True, exist_ok=True)
    sources = [grid_folder / f"results.{suffix}" for suffix in ("csv", "json")]
    for source in sources:
        if not source.exists():
            raise FileNotFoundError(f"{source}: run the grid first (tools/ablate.py or tools/masking_experiment.py)")
    csv, meta = folder / f"{name}.csv", folder / f"{name}.json"
    gather_results(pd.read_csv(sources[0]), [grid_folder]).to_csv(csv, index=False)
    meta.write_bytes(sources[1].read_bytes())
    return csv, meta
