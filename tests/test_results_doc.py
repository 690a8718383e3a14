"""tools/results_doc.py: docs/results.md rebuilt from a template and the committed grid CSVs, by one command."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from spml.reporting.results_doc import render, seed_list
from tests.conftest import REPO


def tool():
    spec = importlib.util.spec_from_file_location("results_doc_tool", REPO / "tools/results_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_grid(folder, name="core"):
    maps = {"full": [0.80, 0.82, 0.78], "AN": [0.50, 0.55, 0.47], "EM": [0.66, 0.69, 0.62], "MPC": [0.68, 0.70, 0.65]}
    frame = pd.DataFrame(
        [
            {"variant": v, "seed": s, "run_dir": f"runs/{v}/seed{s}", "status": "done", "mAP": m, "mean_auroc": 0.9}
            for v, values in maps.items()
            for s, m in enumerate(values)
        ]
    )
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{name}.csv", index=False)
    meta = {
        "name": "core grid",
        "command": "python tools/ablate.py configs/ablations/core.yaml",
        "seeds": [0, 1, 2],
        "reference": {"full": ["full"], "an": ["AN"]},
        "compare": "MPC",
        "split": "test",
        "budget": "resnet10t (random init), 64 px",
        "machine": "AMD EPYC, 2 cores",
        "train_minutes": 12.5,
    }
    (folder / f"{name}.json").write_text(json.dumps(meta))
    return maps


def test_placeholders_are_filled_from_the_csv(tmp_path):
    maps = write_grid(tmp_path / "results")
    template = (
        "# Results\n\n{{grid:core}}\n\nMPC: {{mean:core|MPC}}, recovery {{recovery:core|MPC}}, "
        "MPC − EM {{diff:core|EM}}.\n"
    )
    rendered = render(template, tmp_path / "results")
    text = rendered.text
    assert "Command: `python tools/ablate.py configs/ablations/core.yaml`. Seeds: 0-2 (12 finished runs)" in text
    assert "Budget: resnet10t (random init), 64 px. Machine: AMD EPYC, 2 cores; 12.5 min of training" in text
    mpc, an, full = (np.mean(maps[v]) for v in ("MPC", "AN", "full"))
    assert f"MPC: {mpc:.4f}, recovery {(mpc - an) / (full - an):.2f}" in text
    diffs = np.array(maps["MPC"]) - np.array(maps["EM"])
    assert f"MPC − EM {diffs.mean():+.4f} [" in text
    assert "| MPC | 0.6800 | 0.7000 | 0.6500 |" in text  # per-seed table
    assert "| full |" not in text.split("Paired differences")[1]  # the full-label reference is no competitor
    assert "![core_paired](results/core_paired.png)" in text
    assert not (tmp_path / "results" / "core_paired.png").exists()  # plots are written on demand
    for plot in rendered.plots:
        plot()
    assert (tmp_path / "results" / "core_paired.png").stat().st_size > 1000


def test_a_study_table_gives_mean_and_std_over_seeds_per_view(tmp_path):
    frame = pd.DataFrame(
        [
            {"scheme": scheme, "protocol": protocol, "seed": seed, "ece": ece + seed / 100}
            for scheme in ("uniform", "biased")
            for protocol, ece in (("oracle", 0.02), ("AN", 0.3))
            for seed in range(3)
        ]
    )
    frame.to_csv(tmp_path / "study.csv", index=False)
    (tmp_path / "study.json").write_text(
        json.dumps(
            {
                "command": "python tools/calibration_study.py",
                "seeds": [0, 1, 2],
                "machine": "2 cores",
                "views": [
                    {
                        "title": "uniform masking",
                        "where": {"scheme": "uniform"},
                        "rows": ["protocol"],
                        "metrics": ["ece"],
                    }
                ],
            }
        )
    )
    text = render("{{table:study}}", tmp_path).text
    assert "Command: `python tools/calibration_study.py`. Seeds: 0-2. Machine: 2 cores." in text
    assert "| protocol | ece | seeds |" in text and "**uniform masking**" in text
    assert f"| oracle | 0.030 ± {np.std([0.02, 0.03, 0.04], ddof=1):.3f} | 3 |" in text
    assert "| AN | 0.310 ± 0.010 | 3 |" in text and text.count("| oracle |") == 1  # only the view's rows


def test_unknown_variant_or_grid_is_a_clear_error(tmp_path):
    write_grid(tmp_path)
    with pytest.raises(ValueError, match="has no variant 'ROLE'"):
        render("{{mean:core|ROLE}}", tmp_path)
    with pytest.raises(FileNotFoundError, match="no results for grid 'other'"):
        render("{{grid:other}}", tmp_path)
    with pytest.raises(ValueError, match="not a placeholder"):
        render("{{grid:core}} and {{findings}}", tmp_path)
    assert seed_list([100, 101]) == "100, 101" and seed_list([0, 1, 2, 3, 4]) == "0-4"


def test_tool_collects_builds_and_checks(tmp_path, capsys):
    grid_folder = tmp_path / "grid"
    write_grid(grid_folder)
    for suffix in ("csv", "json"):
        (grid_folder / f"core.{suffix}").rename(grid_folder / f"results.{suffix}")
    docs = tmp_path / "docs"
    (docs / "results").mkdir(parents=True)
    (docs / "results" / "template.md").write_text("{{grid:core}}\n")
    argv = [
        "--template",
        str(docs / "results/template.md"),
        "--results",
        str(docs / "results"),
        "--out",
        str(docs / "results.md"),
    ]
    main = tool().main
    assert main([*argv, "--check"]) == 2  # nothing collected yet: a one-line error
    assert "no results for grid 'core'" in capsys.readouterr().err
    assert main([*argv, "--collect", f"core={grid_folder}"]) == 0
    assert (docs / "results/core.csv").exists() and (docs / "results/core_paired.png").exists()
    assert "(results/core.csv)" in (docs / "results.md").read_text()
    assert main([*argv, "--check"]) == 0
    (docs / "results.md").write_text("edited by hand\n")
    assert main([*argv, "--check"]) == 1


def test_the_committed_results_document_is_up_to_date():
    assert tool().main(["--check"]) == 0, (
        "docs/results.md differs from its template + CSVs: python tools/results_doc.py"
    )


def test_collect_gathers_the_runs_of_many_nodes(tmp_path):
    """Node A trained seed 0 and node B seed 1 of one grid folder, each writing results.csv from its own runs (B last,
    A's seed-1 run still missing then); every run wrote its result.csv where it trained: the collected table has each
    run once, as its folder says, in the grid's order."""
    from spml.experiments.grid import PlannedRun, write_run_result
    from spml.reporting.results_doc import collect

    grid = tmp_path / "grid"
    maps = {("full", 0): 0.8, ("AN", 0): 0.5, ("full", 1): 0.82, ("AN", 1): 0.55}
    for (variant, seed), value in maps.items():
        run = PlannedRun(variant, seed, grid / variant.lower() / f"seed{seed}", (), ())
        (run.run_dir / "eval").mkdir(parents=True)
        (run.run_dir / "eval" / "metrics.json").write_text(json.dumps({"mAP": value, "mean_auroc": 0.9}))
        write_run_result(run)
    written_by_b = pd.DataFrame(
        [
            {
                "variant": "full",
                "seed": 1,
                "run_dir": str(grid / "full/seed1"),
                "status": "done",
                "mAP": 0.82,
                "mean_auroc": 0.9,
            },
            {"variant": "AN", "seed": 1, "run_dir": str(grid / "an/seed1"), "status": "missing"},
        ]
    )
    written_by_b.to_csv(grid / "results.csv", index=False)
    (grid / "results.json").write_text(json.dumps({"name": "g", "reference": {"full": ["full"], "an": ["AN"]}}))
    csv, _ = collect("g", grid, tmp_path / "docs")
    table = pd.read_csv(csv)
    assert list(zip(table["variant"], table["seed"])) == [("full", 0), ("full", 1), ("AN", 0), ("AN", 1)]
    assert (table["status"] == "done").all() and table["mAP"].tolist() == [0.8, 0.82, 0.5, 0.55]
