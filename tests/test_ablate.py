"""tools/ablate.py end to end on a tiny grid, resume skipping, failure recording; tools/summarize.py."""
import subprocess
import sys

import pandas as pd

from tests.conftest import REPO, TINY


def write_grid(tmp_path, variants: str, reference: str = "{full: full, an: AN}") -> str:
    grid = tmp_path / "grid.yaml"
    overrides = ", ".join(f'"{o}"' for o in [*TINY, "train.epochs=1"])
    grid.write_text(f"name: tiny\noverrides: [{overrides}]\nseeds: [0]\nreference: {reference}\n"
                    f"variants:\n{variants}")
    return str(grid)


def ablate(grid: str, out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools/ablate.py"), grid, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600)


def test_tiny_grid_writes_tables_plot_and_resumes(tmp_path):
    grid = write_grid(tmp_path, "  - {name: full, overrides: [mode=supervised]}\n"
                                "  - {name: AN, overrides: [spml.method=an]}\n"
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
    second = ablate(grid, out)
    assert second.stdout.count("[skip]") == 2 and "[run ] broken" in second.stdout  # finished runs are skipped
    summary = subprocess.run([sys.executable, str(REPO / "tools/summarize.py"), str(out)], capture_output=True,
                             text=True)
    assert summary.returncode == 0 and summary.stdout.count("done") == 2


def test_dry_run_prints_accelerate_commands(tmp_path):
    grid = write_grid(tmp_path, "  - {name: AN, overrides: [spml.method=an]}\n", reference="{}")
    proc = ablate(grid, tmp_path / "grid", "--dry-run")
    assert proc.returncode == 0
    assert proc.stdout.startswith("accelerate launch ") and "spml.method=an" in proc.stdout
    assert not (tmp_path / "grid").exists()
