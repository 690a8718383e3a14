"""tools/ablate.py end to end on a tiny grid, resume skipping, failure recording; tools/summarize.py."""
import subprocess
import sys

import pandas as pd
import pytest

from spml.experiments.grid import load_grid
from spml.reporting.grid_results import aggregate, markdown
from spml.utils.lock import GRID_LOCK_FILE, LOCK_FILE
from tests.browser import image_states, rendered_dom
from tests.conftest import REPO, TINY


def write_grid(tmp_path, variants: str, reference: str = "{full: full, an: AN}", extra: str = "") -> str:
    grid = tmp_path / "grid.yaml"
    overrides = ", ".join(f'"{o}"' for o in [*TINY, "train.epochs=1"])
    grid.write_text(f"name: tiny\noverrides: [{overrides}]\nseeds: [0]\nreference: {reference}\n{extra}"
                    f"variants:\n{variants}")
    return str(grid)


def ablate(grid: str, out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools/ablate.py"), grid, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600)


def test_tiny_grid_writes_tables_plot_and_resumes(tmp_path):
    grid = write_grid(tmp_path, "  - {name: full, overrides: [mode=supervised]}\n"
                                "  - {name: AN, overrides: [spml.objective=loss, loss.name=an]}\n"
                                "  - {name: broken, overrides: [loss.name=nonexistent, mode=supervised]}\n")
    out = tmp_path / "grid"
    first = ablate(grid, out)
    assert first.returncode == 0, first.stderr[-2000:]
    results = pd.read_csv(out / "results.csv")
    assert list(results["status"]) == ["done", "done", "failed"]  # one failing run does not stop the grid
    assert results.loc[results["variant"] == "AN", "mAP"].between(0, 1).all()
    markdown = (out / "results.md").read_text()
    assert "| full |" in markdown and "| AN |" in markdown and "recovery" in markdown
    assert (out / "results.png").stat().st_size > 1000
    assert "grid: 100%" in first.stderr and "3/3" in first.stderr  # a run-level progress bar
    report = out / "report.html"
    dom = rendered_dom(report, tmp_path)  # one page: the table, the plot, a row per run
    assert 'id="summary"' in dom and 'id="runs"' in dom and "broken" in dom and "failed" in dom
    assert image_states(dom) == ["loaded"] and "src=\"data:image/png;base64," in report.read_text()
    second = ablate(grid, out)
    assert second.stdout.count("[skip]") == 2 and "[run ] broken" in second.stdout  # finished runs are skipped
    changed = ablate(grid, out, "train.max_steps=1")
    assert changed.returncode == 2 and "finished with other train arguments" in changed.stderr
    only = ablate(grid, out, "--report-only")  # the results as they stand, nothing trained
    assert only.returncode == 0 and "[run" not in only.stdout and "2 finished, 1 failed, 0 not run" in only.stdout
    assert pd.read_csv(out / "results.csv")["status"].tolist() == ["done", "done", "failed"]
    none = ablate(grid, tmp_path / "elsewhere", "--report-only")
    assert none.returncode == 2 and "none of the 3 selected runs has finished" in none.stderr
    assert not (tmp_path / "elsewhere").exists()
    summary = subprocess.run([sys.executable, str(REPO / "tools/summarize.py"), str(out)], capture_output=True,
                             text=True)
    assert summary.returncode == 0 and summary.stdout.count("done") == 2


def test_dry_run_prints_accelerate_commands(tmp_path):
    grid = write_grid(tmp_path, "  - {name: AN, overrides: [spml.objective=loss, loss.name=an]}\n", reference="{}")
    proc = ablate(grid, tmp_path / "grid", "--dry-run")
    assert proc.returncode == 0
    assert proc.stdout.startswith("accelerate launch ") and "spml.objective=loss loss.name=an" in proc.stdout
    typo = ablate(grid, tmp_path / "grid", "--dry-run", "--only", "A N")
    assert typo.returncode == 2 and "no such variant" in typo.stderr
    assert ablate(grid, tmp_path / "grid", "--dry-run", "--seed", "1").stdout == ""  # the grid has seed 0 only
    assert not (tmp_path / "grid").exists()


def test_grids_naming_one_runs_folder_share_identical_variants(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\nout: {tmp_path}/{name}\nruns: {tmp_path}/shared\n"
                                               f"seeds: [0, 1]\nvariants:\n  - {{name: AN, overrides: [loss.name=an]}}\n"
                                               f"  - {{name: only {name}}}\n")
    a, b = load_grid(tmp_path / "a.yaml"), load_grid(tmp_path / "b.yaml")
    assert a.out != b.out
    assert [r.run_dir for r in a.runs[:2]] == [r.run_dir for r in b.runs[:2]] == [
        tmp_path / "shared/an/seed0", tmp_path / "shared/an/seed1"]
    assert a.runs[0].train_args() == b.runs[0].train_args()
    assert load_grid(tmp_path / "a.yaml", out=tmp_path / "x").runs[0].run_dir == tmp_path / "x/an/seed0"


def test_tta_grid_adds_scored_tta_rows(tmp_path):
    grid = write_grid(tmp_path, "  - {name: BCE, overrides: [mode=supervised]}\n", reference="{}", extra="tta: true\n")
    out = tmp_path / "grid"
    proc = ablate(grid, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = pd.read_csv(out / "results.csv")
    assert list(results["variant"]) == ["BCE", "BCE + TTA"] and list(results["status"]) == ["done", "done"]
    assert (out / "bce/seed0/eval-tta/metrics.json").exists() and "| BCE + TTA |" in (out / "results.md").read_text()


def test_markdown_shows_std_only_over_several_seeds():
    frame = pd.DataFrame({"variant": ["one seed", "two seeds", "two seeds"], "status": "done",
                          "mAP": [0.5, 0.6, 0.8], "mean_auroc": [0.7, 0.8, 0.9]})
    lines = markdown(aggregate(frame)).splitlines()
    assert lines[2] == "| one seed | 0.5000 | 0.7000 | 1 |"
    assert lines[3] == "| two seeds | 0.7000 ± 0.1414 | 0.8500 ± 0.0707 | 2 |"


def test_grid_split_and_compare_are_checked(tmp_path):
    from spml.config import ConfigError

    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nseeds: [100]\nsplit: val\ncompare: B\nvariants:\n  - {name: A}\n  - {name: B}\n")
    loaded = load_grid(grid)
    assert loaded.split == "val" and loaded.compare == "B" and [r.seed for r in loaded.runs] == [100, 100]
    grid.write_text("name: g\nsplit: validation\nvariants:\n  - {name: A}\n")
    with pytest.raises(ConfigError, match="split must be one of"):
        load_grid(grid)


@pytest.mark.parametrize("held", [LOCK_FILE, GRID_LOCK_FILE], ids=["a training", "another grid"])
def test_a_run_another_process_holds_is_left_alone(tmp_path, held):
    # GRID_LOCK_FILE alone is the moment a second grid started on the same runs sees: the first has decided to
    # train the run, its training has not yet taken the folder's own lock
    grid = write_grid(tmp_path, "  - {name: AN, overrides: [spml.objective=loss, loss.name=an]}\n", reference="{}")
    run_dir = tmp_path / "grid" / "an" / "seed0"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from spml.utils.lock import RunLock\n"
                               f"with RunLock({str(run_dir)!r}, lock_file={held!r}):\n"
                               "    print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline() == "held\n"
        proc = ablate(grid, tmp_path / "grid")
    finally:
        holder.kill()
        holder.wait()
    assert "[busy] AN seed 0" in proc.stdout and f"pid {holder.pid}" in proc.stdout, proc.stdout
    assert "[run" not in proc.stdout and sorted(p.name for p in run_dir.iterdir()) == sorted({held, GRID_LOCK_FILE})
    assert proc.returncode == 2 and "none of the 1 selected runs has finished (0 failed, 1 not run" in proc.stderr
