"""The run folder through tools/train.py: a resume keeps config.yaml and may change only the allowed keys, refusing
the others before anything is written; a moved folder resumes where it is; one training at a time holds it; a
resume refuses data that changed since the run started."""

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from spml.config import RESUME_KEYS
from spml.engine import checkpoint as ckpt
from spml.utils.lock import LOCK_FILE, RunLock
from tests.reliability.conftest import (
    STALLING_TRAIN,
    csv_run_args,
    error_line,
    final_results,
    latest_step,
    launch,
    log_values,
    progress_of,
    reaped,
    tiny_run_args,
    wait_for,
)

STOPPED_AT = 7  # the short first attempt: train.max_steps=7 of the 18 steps


def stopped_run(cli, out: Path) -> Path:
    """A TINY run stopped by train.max_steps after STOPPED_AT steps (a latest checkpoint inside epoch 1)."""
    code, _, err = cli("train", *tiny_run_args(out, f"train.max_steps={STOPPED_AT}"))
    assert code == 0, err
    return out


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and modification time."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_resume_overrides_that_change_the_run_are_refused_before_anything_is_written(cli, reference_run, tmp_path):
    run = stopped_run(cli, tmp_path / "run")
    before = snapshot(run)
    refused = {
        "model.backbone=resnet10t": "model.backbone",
        "data.root=/data/nih_typo": "data.root",
        "data.size=64": "data.size",
        "train.epochs=3": "train.epochs",
        "optim.lr=0.1": "optim.lr",
        f"train.out={tmp_path / 'elsewhere'}": "train.out",
    }
    for override, key in refused.items():
        code, _, err = cli("train", "--resume", str(run), override)
        line = error_line(err)
        assert code == 2 and key in line, line
        assert key == "train.out" or all(allowed in line for allowed in RESUME_KEYS), line  # names the allowed set
        assert snapshot(run) == before, override  # config.yaml, checkpoints, logs: not a byte or a timestamp moved
    assert "schedule" in error_line(cli("train", "--resume", str(run), "train.epochs=3")[2])  # says why
    assert not (tmp_path / "elsewhere").exists()
    code, _, err = cli("train", "--resume", str(run), "--config", str(run / "config.yaml"), "--mode", "supervised")
    assert code == 2 and "mode: 'spml' recorded, 'supervised' asked" in error_line(err)
    code, _, err = cli("train", "--resume", str(run), "--overwrite")
    assert code == 2 and "--overwrite" in err
    # the run is intact: it resumes (with keys that may change) and ends exactly where the uninterrupted run ends
    code, _, err = cli(
        "train", "--resume", str(run), "train.max_steps=0", "train.checkpoint_every=4", "data.num_workers=1"
    )
    assert code == 0, err
    assert final_results(run) == final_results(reference_run)


def test_resume_keeps_config_yaml_and_records_its_changes_in_resumes_jsonl(cli, tmp_path):
    run = stopped_run(cli, tmp_path / "run")
    config = (run / "config.yaml").read_bytes()
    code, _, err = cli("train", "--resume", str(run), "train.max_steps=12", "eval.bootstrap=5")
    assert code == 0, err
    code, _, err = cli("train", "--resume", str(run), "train.max_steps=0")
    assert code == 0, err
    assert (run / "config.yaml").read_bytes() == config
    first, second = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert (first["step"], first["processes"]) == (STOPPED_AT, 1)
    assert first["changes"] == {"train.max_steps": [STOPPED_AT, 12], "eval.bootstrap": [0, 5]}
    assert second["step"] == 12 and second["changes"] == {"train.max_steps": [STOPPED_AT, 0]}


def test_a_moved_run_folder_resumes_in_its_new_place(cli, reference_run, tmp_path):
    old, new = tmp_path / "old" / "run", tmp_path / "new" / "run"
    stopped_run(cli, old)
    new.parent.mkdir()
    shutil.move(old, new)
    code, _, err = cli("train", "--resume", str(new), "train.max_steps=0")
    assert code == 0, err
    assert not old.exists()  # nothing (checkpoint, log, evaluation) went back to the recorded path
    assert latest_step(new / "checkpoints") == latest_step(reference_run / "checkpoints")
    assert final_results(new) == final_results(reference_run)
    # the first attempt stopped at train.max_steps and was evaluated there: its test metrics stay in the log
    first_evaluation = {(STOPPED_AT, name) for name in ("test/mAP", "test/mean_auroc", "test/ece")}
    assert first_evaluation <= set(log_values(new))
    assert {k: v for k, v in log_values(new).items() if k not in first_evaluation} == log_values(reference_run)
    changes = json.loads((new / "resumes.jsonl").read_text())["changes"]
    assert changes["train.out"] == [str(old), str(new)]
    code, out, err = cli("evaluate", str(new))
    assert code == 0 and str(new / "eval") in out, err


def test_one_training_at_a_time_holds_the_run_folder(cli, tmp_path):
    out, progress = tmp_path / "run", tmp_path / "progress"
    args = tiny_run_args(out, "train.epochs=50")  # the holder trains until the test stops it
    with reaped(launch(["--step-delay", "0.2", "--progress", str(progress), *args], STALLING_TRAIN)) as holder:
        wait_for(lambda: progress_of(Path(f"{progress}-0"))["step"] >= 2, holder)
        in_use = f"{out} is in use by a training: pid {holder.pid} on "
        second = launch([*args, "--overwrite"])  # a real second process
        _, err = second.communicate(timeout=240)
        assert second.returncode == 2 and in_use in error_line(err.decode()), err.decode()[-2000:]
        for argv in (args, ["--resume", str(out)]):
            code, _, err = cli("train", *argv)
            assert code == 2 and in_use in error_line(err), (argv, err)
        code, _, err = cli("evaluate", str(out))  # would write eval/, which the training writes at its end
        assert code == 2 and in_use in error_line(err) and "--out" in err
        assert holder.poll() is None  # none of them stopped or disturbed the holder
        holder.send_signal(signal.SIGTERM)  # the holder's own clean stop
        _, err = holder.communicate(timeout=240)
    assert holder.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    assert not (out / ".lock").read_text()  # released, and free for the next holder
    with RunLock(out):
        pass
    step = latest_step(out / "checkpoints")
    assert step >= 2 and max(s for s, _ in log_values(out)) <= step  # one run's log, nothing deleted under it


def test_evaluations_share_the_folder_and_keep_a_training_out_while_they_write(cli, tmp_path):
    run = stopped_run(cli, tmp_path / "run")
    code, _, err = cli("evaluate", str(run))  # no training holds it: evaluations take it shared
    assert code == 0, err
    script = tmp_path / "evaluating.py"  # an evaluation in progress, as tools/evaluate.py holds the folder
    script.write_text(
        "import sys, time\nfrom spml.utils.lock import RunLock\n"
        "with RunLock(sys.argv[1], shared=True):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    with reaped(launch([str(run)], script=script, stdout=subprocess.PIPE)) as evaluation:
        assert evaluation.stdout.readline() == b"held\n"
        code, _, err = cli("train", "--resume", str(run))
        assert code == 2 and "in use: another process holds its lock" in error_line(err)
        evaluation.kill()
        evaluation.wait()
    with RunLock(run):  # free once the evaluation has gone
        pass


def test_a_resumed_attempt_event_file_sorts_after_the_one_of_the_same_second(tmp_path):
    """TensorBoard reads event files in name order (seconds, host, pid): an earlier attempt's file of this very
    second with a larger pid must still be read first, or the resumed attempt's purge would come before its events."""
    import time

    from spml.engine.logger import RunLogger
    from tests.reliability.conftest import tensorboard_steps

    earlier = RunLogger(tmp_path, enabled=True)
    earlier.log(5, {"train/loss": 1.0})
    earlier.log(10, {"train/loss": 0.5})
    earlier.close()
    (old,) = (tmp_path / "tensorboard").iterdir()
    parts = old.name.split(".")
    parts[3], parts[5] = str(int(time.time())), "99999999"  # this second, a pid that sorts after any real one
    old.rename(old.with_name(".".join(parts)))
    resumed = RunLogger(tmp_path, enabled=True)
    resumed.rewind(5)
    resumed.log(10, {"train/loss": 0.25})
    resumed.close()
    names = sorted(path.name for path in (tmp_path / "tensorboard").iterdir())
    assert names[0] == ".".join(parts)
    assert tensorboard_steps(tmp_path) == {"train/loss": [5, 10]}
    assert [
        row[2] for row in map(lambda line: line.split(","), (tmp_path / "log.csv").read_text().splitlines()[1:])
    ] == ["1", "0.25"]


def test_a_resume_refuses_a_label_file_or_image_set_that_changed_since_the_run_started(cli, dataset_dir, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli("train", *csv_run_args(dataset_dir, out, "train.max_steps=3", "train.checkpoint_every=1"))
    assert code == 0, err
    labels = dataset_dir / "labels.csv"
    original = labels.read_text()
    rows = original.splitlines()
    rows[5] = rows[5][:-1] + str(1 - int(rows[5][-1]))  # one label of one image flipped, a same-size file
    labels.write_text("\n".join(rows) + "\n")
    before = snapshot(out)
    code, _, err = cli("train", "--resume", str(out), "train.max_steps=0")
    line = error_line(err)
    assert code == 2 and "labels changed" in line and str(labels) in line and "images changed" not in line, line
    assert {**snapshot(out), ".lock": None} == {**before, ".lock": None}  # only the lock was taken and let go
    labels.write_text(original.replace("img07.png", "img07_copy.png"))  # same labels, another image
    (dataset_dir / "img07_copy.png").write_bytes((dataset_dir / "img07.png").read_bytes())
    line = error_line(cli("train", "--resume", str(out), "train.max_steps=0")[2])
    assert "images changed" in line and "labels changed" not in line, line
    labels.write_text(original)  # restored: the run resumes and finishes
    code, _, err = cli("train", "--resume", str(out), "train.max_steps=0")
    assert code == 0, err
    assert (out / "eval" / "metrics.json").exists()


@pytest.mark.parametrize("name", ["exp #2", "exp: 2", "&exp", "*exp", "#exp", "exp &2", "{exp", "{exp}"])
def test_an_override_value_is_the_text_typed_and_overwrites_no_other_run(cli, tmp_path, monkeypatch, name):
    """Found before: `train.out='runs/exp #2' --overwrite` read `#2` as a YAML comment and overwrote runs/exp.
    A value YAML reads as a {flow: mapping} is refused for a text key, naming the key."""
    monkeypatch.chdir(tmp_path)
    finished = tmp_path / "exp"
    for output in ("checkpoints/latest.json", "eval/metrics.json", "log.csv"):
        (finished / output).parent.mkdir(parents=True, exist_ok=True)
        (finished / output).write_text("{}")
    before = snapshot(finished)
    # the missing label file stops the run after its folder was claimed (where --overwrite deletes)
    code, _, err = cli(
        "train",
        "--mode",
        "supervised",
        "data.dataset=csv",
        f"data.labels={tmp_path / 'none.csv'}",
        f"train.out={name}",
        "--overwrite",
    )
    assert code == 2 and snapshot(finished) == before
    if name == "{exp}":
        assert "train.out: expected a string" in error_line(err)
    else:
        assert "none.csv" in error_line(err) and (tmp_path / name).is_dir()


@pytest.mark.parametrize("pointer", ["absolute", "../..", "empty"])
def test_a_checkpoint_pointer_stays_inside_its_run(cli, reference_run, tmp_path, pointer):
    """Found before: latest.json edited to lead into another run was followed: --resume trained on from the other
    run's checkpoint and deleted this run's own latest step folder; evaluate reported the other run's weights. An
    empty latest.json gave `Expecting value: line 1 column 1 (char 0)`."""
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    other = ckpt.read_pointer(reference_run / "checkpoints")
    latest = run / "checkpoints" / "latest.json"
    latest.write_text(
        {
            "absolute": json.dumps({"dir": str(other), "step": 1}),
            "../..": json.dumps({"dir": f"../../{other.relative_to(reference_run.parent)}", "step": 1}),
            "empty": "",
        }[pointer]
    )
    (run / LOCK_FILE).unlink(missing_ok=True)
    before = snapshot(run)
    for tool, args in (("train", ["--resume", str(run)]), ("evaluate", [str(run), "--out", str(tmp_path / "eval")])):
        code, _, err = cli(tool, *args)
        line = error_line(err)
        assert code == 2 and f"{latest}: not a checkpoint pointer" in line, line
        assert ("empty" in line) == (pointer == "empty")
    after = snapshot(run)
    after.pop(LOCK_FILE, None)  # the tools' lock (taken before the pointer is read; holds no run data)
    assert after == before
