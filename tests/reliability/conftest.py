"""Reliability fixtures: real PNG folders with a CSV label file, the command-line tools called in-process, and
training subprocesses to kill or signal."""

import csv
import gzip
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spml.engine import checkpoint as ckpt
from tests.conftest import REPO, SHARED_DATA, TINY

NIH_IMAGES = SHARED_DATA / "nih1000" / "images"
NUM_IMAGES = 40  # random split 0.2/0.2 -> 24 train (6 batches of 4), 8 val, 8 test
CLASSES = ("A", "B")
# a seconds-long run on a folder of a few dozen images (size 32, tiny backbone, no bootstrap)
SMALL_RUN = [
    "data.size=32",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "data.num_workers=0",
    "model.backbone=test_efficientnet",
    "train.epochs=1",
    "train.log_every=2",
    "eval.bootstrap=0",
    "optim.warmup_epochs=0",
    "data.val_fraction=0.2",
    "data.test_fraction=0.2",
]
CSV_RUN = ["--mode", "supervised", "data.dataset=csv", "data.csv.label_columns=[A,B]", *SMALL_RUN]


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"spml_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tools():
    """tools.train.main, tools.evaluate.main, ... (argv list -> exit code)."""
    names = ("train", "evaluate", "mask_labels", "predict", "prepare_data")
    return type("Tools", (), {name: load_tool(name) for name in names})


@pytest.fixture
def cli(tools, capsys):
    """cli(tool, *argv) -> (exit code, stdout, stderr): tools/<tool>.py main() in this process; an argparse
    usage error (SystemExit) becomes its exit code."""

    def call(tool: str, *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = getattr(tools, tool).main(list(argv))
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


def labels_for(i: int) -> tuple[int, int]:
    """Labels of image i: both classes have positives and negatives in every split."""
    return i % 2, (i // 2) % 2


@pytest.fixture(scope="session")
def png_folder(tmp_path_factory) -> Path:
    """NUM_IMAGES real NIH chest films, shrunk to 64 x 64 8-bit PNGs (decoding stays fast): img00.png..."""
    sources = sorted(NIH_IMAGES.glob("*.png"))[:8]
    if len(sources) < 8:
        pytest.skip("the NIH sample images are not available")
    folder = tmp_path_factory.mktemp("pngs")
    for i in range(NUM_IMAGES):
        with Image.open(sources[i % len(sources)]) as image:
            image.convert("L").resize((64, 64), Image.Resampling.BOX).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture
def dataset_dir(png_folder, tmp_path) -> Path:
    """A fresh copy of the PNG folder with labels.csv (path,A,B) in tmp_path/data."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = ["path,A,B"]
    for i in range(NUM_IMAGES):
        name = f"img{i:02d}.png"
        (folder / name).write_bytes((png_folder / name).read_bytes())
        rows.append("{},{},{}".format(name, *labels_for(i)))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def csv_run_args(dataset_dir: Path, out: Path, *extra: str) -> list[str]:
    """tools/train.py arguments for the CSV folder's seconds-long run into `out`."""
    return [*CSV_RUN, f"data.labels={dataset_dir / 'labels.csv'}", f"train.out={out}", *extra]


NIH_LABELS = SHARED_DATA / "nih" / "Data_Entry_2017_v2020.csv.gz"
NIH_SAMPLE = 60  # real films (with their real label rows) in the nih_sample folder


@pytest.fixture(scope="session")
def nih_sample(tmp_path_factory) -> tuple[Path, list[str]]:
    """(folder with images/ holding NIH_SAMPLE real NIH sample films, the real Data_Entry_2017_v2020.csv lines of
    those films, header first, verbatim)."""
    sources = sorted(NIH_IMAGES.glob("*.png"))[:NIH_SAMPLE]
    if len(sources) < NIH_SAMPLE or not NIH_LABELS.exists():
        pytest.skip("the NIH sample images or label file are not available")
    root = tmp_path_factory.mktemp("nih")
    (root / "images").mkdir()
    for source in sources:
        (root / "images" / source.name).write_bytes(source.read_bytes())
    names = {source.name for source in sources}
    with gzip.open(NIH_LABELS, "rt", encoding="utf-8") as handle:
        header, *rows = handle.read().splitlines()
    lines = [header, *(row for row in rows if row.split(",", 1)[0] in names)]
    assert len(lines) == NIH_SAMPLE + 1
    return root, lines


def tiny_run_args(out: Path, *extra: str) -> list[str]:
    """tools/train.py arguments for a seconds-long MPC run on the synthetic set (tests/conftest.py TINY)."""
    return ["--mode", "spml", *TINY, f"train.out={out}", *extra]


def error_line(err: str) -> str:
    """The one `prog: error: message` line of a failed command's stderr (besides progress bars), no traceback."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


KILL_RUN = ("train.checkpoint_every=1",)  # a checkpoint after every step: kill anywhere, lose nothing


@pytest.fixture(scope="session")
def reference_run(tools, tmp_path_factory) -> Path:
    """The uninterrupted TINY MPC run (2 epochs, checkpoint every step) that faulted runs must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert tools.train.main(tiny_run_args(out, *KILL_RUN)) == 0
    return out


def final_results(run: Path) -> tuple[dict, str]:
    """(eval/metrics.json, eval/per_class.csv text) of a finished run."""
    return json.loads((run / "eval" / "metrics.json").read_text()), (run / "eval" / "per_class.csv").read_text()


TIMING = {"train/images_per_s"}  # log values that measure the machine, not the run
STALLING_TRAIN = REPO / "tests" / "reliability" / "stalling_train.py"


def log_values(run: Path) -> dict[tuple[int, str], str]:
    """log.csv as {(step, name): value}, timing rows left out; a (step, name) logged twice fails."""
    with open(run / "log.csv", newline="", encoding="utf-8") as handle:
        rows = [(int(row["step"]), row["name"], row["value"]) for row in csv.DictReader(handle)]
    twice = [key for key, n in Counter((step, name) for step, name, _ in rows).items() if n > 1]
    assert not twice, f"{run / 'log.csv'} logs these (step, name) more than once: {twice[:5]}"
    return {(step, name): value for step, name, value in rows if name not in TIMING}


def tensorboard_steps(run: Path) -> dict[str, list[int]]:
    """{tag: the steps TensorBoard shows}, after its purge of events a resumed writer hid (purge_step)."""
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [event.step for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_same_log(run: Path, reference: Path) -> None:
    """log.csv and TensorBoard of an interrupted and resumed run equal the uninterrupted run's (but for timing)."""
    assert log_values(run) == log_values(reference)
    assert tensorboard_steps(run) == tensorboard_steps(reference)


def launch(args: list[str], script: Path = REPO / "tools" / "train.py", **popen) -> subprocess.Popen:
    """`python script args` in the repository, stderr captured, in a process group of its own (`reaped`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "start_new_session": True, **popen}
    return subprocess.Popen([sys.executable, str(script), *args], env=env, cwd=REPO, **popen)


@contextmanager
def reaped(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Kill the process group of a launched process that is still running when the block ends (a failed test)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(condition, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def latest_step(root: Path) -> int:
    try:
        return int(ckpt.read_pointer(root).name.split("-")[1])
    except (FileNotFoundError, ValueError):  # not yet written (atomic: never half written)
        return -1


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def progress_of(path: Path) -> dict:
    """What stalling_train.py --progress last wrote ({"pid", "step"}; step -1 before the first step)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):  # not yet written, or caught while being written
        return {"pid": None, "step": -1}
