"""tools/ablate.py end to end on a tiny grid, resume skipping, failure recording; tools/summarize.py."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from spml.experiments.grid import load_grid
from spml.reporting.grid_results import aggregate, markdown
from spml.utils.lock import GRID_LOCK_FILE, LOCK_FILE
from tests.browser import image_states, rendered_dom
from tests.conftest import REPO, TINY


def write_grid(
    tmp_path, variants: str, reference: str = "{full: full, an: AN}", extra: str = "", seeds: str = "[0]"
) -> str:
    grid = tmp_path / "grid.yaml"
    overrides = ", ".join(f'"{o}"' for o in [*TINY, "train.epochs=1"])
    grid.write_text(
        f"name: tiny\noverrides: [{overrides}]\nseeds: {seeds}\nreference: {reference}\n{extra}variants:\n{variants}"
    )
    return str(grid)


def ablate(grid: str, out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools/ablate.py"), grid, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_tiny_grid_writes_tables_plot_and_resumes(tmp_path):
    grid = write_grid(
        tmp_path,
        "  - {name: full, overrides: [mode=supervised]}\n"
        "  - {name: AN, overrides: [spml.objective=loss, loss.name=an]}\n"
        "  - {name: broken, overrides: [loss.name=nonexistent, mode=supervised]}\n",
    )
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
    assert image_states(dom) == ["loaded"] and 'src="data:image/png;base64,' in report.read_text()
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
    summary = subprocess.run(
        [sys.executable, str(REPO / "tools/summarize.py"), str(out)], capture_output=True, text=True
    )
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
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nout: {tmp_path}/{name}\nruns: {tmp_path}/shared\n"
            f"seeds: [0, 1]\nvariants:\n  - {{name: AN, overrides: [loss.name=an]}}\n"
            f"  - {{name: only {name}}}\n"
        )
    a, b = load_grid(tmp_path / "a.yaml"), load_grid(tmp_path / "b.yaml")
    assert a.out != b.out
    assert (
        [r.run_dir for r in a.runs[:2]]
        == [r.run_dir for r in b.runs[:2]]
        == [tmp_path / "shared/an/seed0", tmp_path / "shared/an/seed1"]
    )
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
    frame = pd.DataFrame(
        {
            "variant": ["one seed", "two seeds", "two seeds"],
            "status": "done",
            "mAP": [0.5, 0.6, 0.8],
            "mean_auroc": [0.7, 0.8, 0.9],
        }
    )
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
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from spml.utils.lock import RunLock\n"
            f"with RunLock({str(run_dir)!r}, lock_file={held!r}):\n"
            "    print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        proc = ablate(grid, tmp_path / "grid")
    finally:
        holder.kill()
        holder.wait()
    assert "[busy] AN seed 0" in proc.stdout and f"pid {holder.pid}" in proc.stdout, proc.stdout
    assert "[run" not in proc.stdout and sorted(p.name for p in run_dir.iterdir()) == sorted({held, GRID_LOCK_FILE})
    assert proc.returncode == 2 and "none of the 1 selected runs has finished (0 failed, 1 not run" in proc.stderr


def concurrent_ablate(grid: str, out, *extra: str) -> list[subprocess.CompletedProcess]:
    """Two tools/ablate.py processes on one grid folder, started at the same moment."""
    command = [sys.executable, str(REPO / "tools/ablate.py"), grid, "--out", str(out), *extra]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


def attempts(run_dir) -> list[str]:
    """The attempt headers of a run's train_output.txt: "start" (a training from scratch) or "resume"."""
    return [
        line.split()[1] for line in (run_dir / "train_output.txt").read_text().splitlines() if line.startswith("=== ")
    ]


def test_two_launchers_on_one_folder_train_every_run_once(tmp_path):
    """Two grids started together on one folder (two nodes sharing it; submitit's local executor runs each job as a
    process of its own): each run is one job per launcher and trains once, the launcher whose job found a run busy
    waits for it, and both write every run's results. (Two local grids: test_a_run_another_process_holds_...)"""
    grid = write_grid(
        tmp_path, "  - {name: AN, overrides: [spml.objective=loss, loss.name=an]}\n", reference="{}", seeds="[0, 1]"
    )
    out = tmp_path / "grid"
    procs = concurrent_ablate(grid, out, "--launcher", "submitit-local")
    runs = [out / "an" / f"seed{seed}" for seed in (0, 1)]
    assert [attempts(run) for run in runs] == [["start"], ["start"]]  # one training per run, none started over
    assert all((run / "eval" / "metrics.json").exists() for run in runs)
    assert [p.returncode for p in procs] == [0, 0], [p.stderr[-2000:] for p in procs]
    outcomes = [line.rsplit(": ", 1)[1] for p in procs for line in p.stdout.splitlines() if line.startswith("[done]")]
    # 4 jobs for 2 runs: each run trained by one of them; its twin found it taken (or, started late, finished)
    assert len(outcomes) == 4 and outcomes.count("done") == 2 and set(outcomes) <= {"done", "busy", "finished"}
    assert all(p.stdout.count("2 runs: 2 finished") == 1 for p in procs)
    jobs = {
        job: run
        for path in (out / "jobs").glob("submitted-*.json")  # one file per launcher
        for job, run in json.loads(path.read_text()).items()
    }
    assert len(jobs) == 4 and sorted(set(jobs.values())) == [str(run) for run in runs]
    for run in runs:  # the job that trained the run says so in the run folder, its log is where it points
        record = json.loads((run / "job.json").read_text())
        assert record["cluster"] == "local" and jobs[record["job_id"]] == str(run)
        assert f"[run ] AN seed {run.name[-1]}" in Path(record["stdout"]).read_text()


def test_debug_launcher_job_is_checkpointed_requeued_and_resumes(tmp_path):
    """submitit's debug executor runs the grid's jobs in this process; a job told to checkpoint (what submitit does
    on preemption or time-out) stops its training with SIGTERM, and the job it returns resumes the run."""
    import submitit

    from spml.experiments.grid import grid_rows
    from spml.experiments.launch import RunJob

    grid = load_grid(
        write_grid(tmp_path, "  - {name: AN, overrides: [spml.objective=loss, loss.name=an]}\n", reference="{}"),
        tmp_path / "grid",
    )
    (run,) = grid.runs
    args = [*run.train_args(), "train.epochs=4", "train.checkpoint_every=1"]
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="debug")
    job = executor.submit(RunJob(run, args, str(REPO / "tools/train.py")))
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(first=job.result()))
    worker.start()
    deadline = time.monotonic() + 300
    while not (run.run_dir / "checkpoints" / "latest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    requeued = job.submission().function.checkpoint()
    worker.join(timeout=300)
    assert outcome == {"first": "interrupted"} and grid_rows([run])["status"].tolist() == ["interrupted"]
    assert executor.submit(requeued.function).result() == "done"  # the requeued job
    assert attempts(run.run_dir) == ["start", "resume"] and (run.run_dir / "resumes.jsonl").exists()
    assert grid_rows([run])["status"].tolist() == ["done"]


def test_dry_run_lists_jobs_with_gpu_hours_and_the_sbatch_script(tmp_path):
    from spml.config import load_config
    from spml.factories.data import read_split

    grid = write_grid(
        tmp_path,
        "  - {name: full, overrides: [mode=supervised]}\n  - {name: MPC, overrides: []}\n",
        reference="{}",
        extra="cluster: {partition: short, gpus: 2, cpus: 6, mem_gb: 40, time_min: 90, account: lab,\n"
        "          sbatch: {qos: low}, setup: [module load cuda]}\n",
    )
    bench = tmp_path / "bench.json"  # the shape of tools/benchmark.py --json
    bench.write_text(
        json.dumps(
            {
                "setup": {"backbone": "resnet50"},
                "step": {"supervised": {"images_per_s": 100.0}, "mpc": {"images_per_s": 40.0}},
                "eval": {"images_per_s": 1000.0},
            }
        )
    )
    proc = ablate(
        grid,
        tmp_path / "grid",
        "--dry-run",
        "--launcher",
        "slurm",
        "--partition",
        "long",
        "--sbatch",
        "qos=high",
        "--throughput",
        str(bench),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "grid").exists()  # nothing submitted, nothing written
    config = load_config([], [*TINY, "train.epochs=1"])
    _, split = read_split(config.data)
    train, val, test = ((split == name).sum() for name in ("train", "val", "test"))
    hours = {rate: (train / rate + (val + test) / 1000.0) / 3600 for rate in (100.0, 40.0)}
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("full ", "MPC "))]
    assert [(row[0], float(row[-1])) for row in rows] == [
        ("full", round(hours[100.0], 2)),
        ("MPC", round(hours[40.0], 2)),
    ]
    assert f"2 jobs, {hours[100.0] + hours[40.0]:.1f} GPU-hours in all" in proc.stdout
    assert f"measured: {bench} (backbone resnet50)" in proc.stdout
    script = proc.stdout.split("sbatch script of the job array")[1]
    for line in (
        "#SBATCH --partition=long",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --mem=40GB",
        "#SBATCH --time=90",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --array=0-1%2",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --nodes=1",
        "\nmodule load cuda\n",
        f"#SBATCH --output={tmp_path / 'grid' / 'jobs'}/%A_%a_0_log.out",
    ):
        assert line in script, line
    assert "--partition=short" not in script and "--qos=low" not in script  # the command line wins
    bad = ablate(grid, tmp_path / "grid", "--dry-run", "--launcher", "slurm", "--sbatch", "qos")
    assert bad.returncode == 2 and "--sbatch 'qos': write OPTION=VALUE" in bad.stderr


def test_a_submitit_launcher_waits_for_a_run_another_launcher_holds(tmp_path):
    """The job of a second launcher finds the run taken (another launcher's job holds its grid lock): the job leaves
    it, and the launcher waits until the holder lets go before it collects the results."""
    grid = write_grid(tmp_path, "  - {name: AN, overrides: [spml.objective=loss, loss.name=an]}\n", reference="{}")
    run_dir = tmp_path / "grid" / "an" / "seed0"
    script = (
        "import time; from spml.utils.lock import RunLock\n"
        f"with RunLock({str(run_dir)!r}, lock_file={GRID_LOCK_FILE!r}):\n"
        "    print('held', flush=True); time.sleep(5)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline() == "held\n"
        proc = ablate(grid, tmp_path / "grid", "--launcher", "submitit-debug")
        assert holder.poll() is not None  # the launcher returned only after the holder had ended
    finally:
        holder.kill()
        holder.wait()
    assert "AN seed 0: busy" in proc.stdout and "[wait] AN seed 0: another process is training it" in proc.stdout
    assert "[run" not in proc.stdout and proc.returncode == 2  # the holder trained nothing: no result to write
