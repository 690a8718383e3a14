"""What a trained run shows, through the tools as a user calls them, on one tiny run shared by the module
(the README quick start's config, made tiny, launched as `accelerate launch --cpu --num_processes 2`):
the run's first lines, operating points fitted on val, calibration, heatmaps and the pointing game,
TensorBoard, evaluate.py, predict.py, and the HTML report rendered in headless Chromium."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spml.config import load_config
from spml.data.loader import make_eval_loader
from spml.data.synthetic import Phantoms, lesion_masks
from spml.engine import checkpoint as ckpt
from spml.engine.trainer import build_accelerator
from spml.evaluation.calibration import choose_thresholds
from spml.evaluation.calibrators import fit_calibrator
from spml.evaluation.scoring import predict_split
from spml.factories import load_model
from spml.factories.artifact import run_config
from spml.factories.data import build_data, synthetic_spec
from tests.browser import image_states, rendered_dom, screenshot
from tests.conftest import REPO, TINY

pytestmark = pytest.mark.filterwarnings("ignore:class\\(es\\).*no known positive:UserWarning")
SECTIONS = ("summary", "data", "training", "results", "plots", "heatmaps", "config")
SHARED = [
    *TINY,
    "data.size=64",
    "eval.bootstrap=50",
    "eval.heatmaps=2",
    "eval.calibration=platt",
    "eval.pointing_game=true",
    "eval.report=true",
]


def tool(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder, the training process) of the quick start's config, tiny, launched asking for 2 CPU processes
    without a multi-process launcher (accelerate then starts one)."""
    out = tmp_path_factory.mktemp("shared") / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            str(REPO / "tools/train.py"),
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            *SHARED,
            f"train.out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_training_starts_with_its_setup_and_ends_with_the_report(run):
    out, proc = run
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == (
        "world size 1 (single process), device cpu, precision no, effective batch 16 = 16 per "
        "process x 1 processes x 1 accumulation steps"
    )
    assert lines[1].startswith("WARNING: the launcher asked for several processes but this run has 1")
    assert lines[-1] == f"report: {out / 'report.html'}"
    assert "test (image, 10 of 10 classes scored)" in proc.stdout  # the console says how many were scored
    assert (out / "eval-tta" / "metrics.json").exists()  # the quick start evaluates with TTA too
    assert "img/s" in proc.stderr  # validation and test scoring show progress


def test_operating_points_are_fitted_on_the_val_split_and_stored_with_the_run(run):
    out, _ = run
    record = json.loads((out / "thresholds.json").read_text())
    assert record["checkpoint"] == ckpt.read_pointer(out / "checkpoints", "latest").name
    assert record["rule"] == "youden" and record["calibration"]["method"] == "platt" and record["tta"] == []
    # refit from the val split's predictions of the final weights: the stored calibration and thresholds, not the
    # test split's
    config = run_config(out)
    bundle = build_data(config)
    predictions = predict_split(
        load_model(out), make_eval_loader(bundle.val, config.data.eval_batch_size), build_accelerator()
    )
    calibrator = fit_calibrator(
        predictions["probs"], predictions["targets"], predictions["known"], list(bundle.classes), "platt"
    )
    # the run scored val in 2 processes, this refit in one: the logits agree to float rounding, the fits to ~1e-7
    refit, stored_fit = json.loads(json.dumps(calibrator.to_json())), record["calibration"]
    assert {k: v for k, v in refit.items() if k != "maps"} == {k: v for k, v in stored_fit.items() if k != "maps"}
    assert len(refit["maps"]) == len(stored_fit["maps"])
    for mine, stored_map in zip(refit["maps"], stored_fit["maps"]):
        assert mine.keys() == stored_map.keys() and mine["kind"] == stored_map["kind"]
        for key in mine.keys() - {"kind"}:
            assert mine[key] == pytest.approx(stored_map[key], rel=1e-5, abs=1e-7), key
    scaled = calibrator.apply(predictions["probs"])
    expected = choose_thresholds(scaled, predictions["targets"], predictions["known"], "youden")
    stored = np.array([np.nan if t is None else t for t in record["threshold"]])
    assert np.allclose(stored, expected, equal_nan=True)
    points = pd.read_csv(out / "eval" / "operating_points.csv")
    per_class = pd.read_csv(out / "eval" / "per_class.csv")
    assert (points["tp"] + points["fn"]).tolist() == per_class["n_pos"].tolist()  # the same test entries
    scored = points.dropna(subset=["sensitivity_ci_low"])
    assert len(scored) and (scored["sensitivity_ci_low"] <= scored["sensitivity"]).all()
    assert (scored["sensitivity"] <= scored["sensitivity_ci_high"]).all()
    calibration = pd.read_csv(out / "eval" / "calibration.csv")
    assert {"ece_raw", "ece_calibrated", "brier_raw", "brier_calibrated", "map", "fallback"} <= set(calibration.columns)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["ece"] == pytest.approx(calibration["ece_raw"].mean())
    assert metrics["ece_calibrated"] == pytest.approx(calibration["ece_calibrated"].mean())
    assert metrics["calibration"] == "platt" and "known labels" in metrics["probabilities"]
    fell_back = calibration.loc[calibration["fallback"].notna(), "class"].tolist()
    assert sorted(metrics["calibration_fallback"]) == sorted(fell_back)  # listed in both places
    assert metrics["best_metric"] == "val/mAP"


def test_calibrated_test_probabilities_agree_with_the_prevalence(run):
    """The SPML loss leaves the raw probabilities far above the findings' frequencies; the calibrated ones that
    load_model(calibrated=True) (and so predict.py) gives have, per class, a mean on the test split within the
    sampling error of the two prevalences of that tiny run (the calibration is fitted on val, tens of images):
    |mean calibrated probability - test prevalence| <= 3 sqrt(p (1 - p) (1 / n_val + 1 / n_test)), p the pooled
    prevalence. The raw probabilities miss that bound for most classes."""
    out, _ = run
    config = run_config(out)
    bundle = build_data(config)
    model = load_model(out, calibrated=True)
    loader = make_eval_loader(bundle.test, config.data.eval_batch_size)
    test = predict_split(model.model, loader, build_accelerator())
    probs = model.calibrator.apply(test["probs"])
    images = next(iter(loader))["image"]
    assert np.allclose(model(images).numpy(), probs[: len(images)], atol=1e-6)  # the model's output is that map
    known, positive = test["known"], test["targets"] > 0.5
    val_known, val_positive = bundle.val.known.numpy(), bundle.val.targets.numpy() > 0.5
    n_test, n_val = known.sum(0), val_known.sum(0)
    prevalence = (positive & known).sum(0) / n_test
    pooled = ((positive & known).sum(0) + (val_positive & val_known).sum(0)) / (n_test + n_val)
    tolerance = 3 * np.sqrt(pooled * (1 - pooled) * (1 / n_val + 1 / n_test))
    gap = np.abs(np.where(known, probs, 0).sum(0) / n_test - prevalence)
    raw_gap = np.abs(np.where(known, test["probs"], 0).sum(0) / n_test - prevalence)
    assert (gap <= tolerance).all(), (gap, tolerance)
    assert (raw_gap > tolerance).mean() > 0.5, (raw_gap, tolerance)


def test_heatmap_gallery_and_pointing_game_against_the_finding_masks(run):
    out, _ = run
    config = load_config([out / "config.yaml"])
    bundle = build_data(config)
    per_class = pd.read_csv(out / "eval" / "per_class.csv")
    with_positive = per_class.loc[per_class["n_pos"] > 0, "class"].tolist()
    assert sorted(p.stem for p in (out / "eval" / "heatmaps").glob("*.png")) == sorted(with_positive)
    game = pd.read_csv(out / "eval" / "pointing_game.csv")
    assert game["class"].tolist() == with_positive
    assert game["images"].tolist() == per_class.set_index("class").loc[with_positive, "n_pos"].tolist()
    frame = bundle.frames["test"]
    for _, row in game.iterrows():  # the baseline: the mean share of the image the finding covers
        rows = frame.index[frame[row["class"]] == 1]
        masks = lesion_masks(synthetic_spec(config.data), frame.loc[rows], [row["class"]], config.data.size)[:, 0]
        assert row["baseline"] == pytest.approx(masks.mean())
        assert 0 <= row["hits"] <= row["images"] and row["method"] == "gradcam"


def test_tensorboard_gets_the_hyper_parameters_and_test_metrics(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = run
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    session = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"data.size" in session and b"spml.objective" in session
    assert "test/mAP" in events.Tags()["scalars"]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert events.Scalars("test/mAP")[-1].value == pytest.approx(metrics["mAP"], rel=1e-5)


def test_report_renders_in_headless_chromium(run, tmp_path):
    out, _ = run
    report = out / "report.html"
    text = report.read_text()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)  # self-contained
    assert not re.search(r"<script|<link|@import|url\(|https?://", text)  # nothing to fetch at view time
    dom = rendered_dom(report, tmp_path)
    for section in SECTIONS:
        assert f'id="{section}"' in dom, section
    states = image_states(dom)
    assert len(states) == len(sources) >= 6 and set(states) == {"loaded"}, states
    for needed in ("Training curves", "Pointing game", "sensitivity", "Masking: scheme", "random point"):
        assert needed in dom, needed
    assert screenshot(report, tmp_path / "report.png").stat().st_size > 10_000


def test_evaluate_tool_scores_calibrates_and_explains_a_run(run, tmp_path):
    out, _ = run
    proc = tool("evaluate.py", out, "--split", "val", "--heatmaps", "1", "--pointing-game", "--out", tmp_path / "ev")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    scored = f"{len(metrics['classes_used'])} of 10 classes scored"
    assert scored in proc.stdout
    for name, reason in metrics["skipped"].items():  # classes left out are named with the reason
        assert f"{name}: {reason}" in proc.stdout
    assert "fitted on the evaluated split itself: optimistic" in proc.stdout and "img/s" in proc.stderr
    assert json.loads((tmp_path / "ev" / "thresholds.json").read_text())["fitted_on"] == "val"
    for name in ("operating_points.csv", "calibration.csv", "reliability.png", "pointing_game.csv"):
        assert (tmp_path / "ev" / name).exists(), name
    per_class = pd.read_csv(tmp_path / "ev" / "per_class.csv")
    assert len(list((tmp_path / "ev" / "heatmaps").glob("*.png"))) == (per_class["n_pos"] > 0).sum()


def test_predict_writes_decisions_beside_probabilities_and_overlays(run, tmp_path):
    out, _ = run
    images = Phantoms(4, 1.5, 9).render(80)  # files of another size than the run's, decoded as in training
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(tmp_path / f"cxr{i}.png")
    proc = tool(
        "predict.py",
        out,
        *sorted(tmp_path.glob("*.png")),
        "--out",
        tmp_path / "p.csv",
        "--heatmaps",
        tmp_path / "maps",
        "--heatmap-top",
        "2",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "img/s" in proc.stderr and "decisions at the youden thresholds" in proc.stdout
    assert "probabilities: platt calibration per class" in proc.stdout
    frame = pd.read_csv(tmp_path / "p.csv")
    record = json.loads((out / "thresholds.json").read_text())
    from spml.data.images import Intensity, load_gray

    model = load_model(out, calibrated=True)  # predict.py's probabilities are the calibrated model's
    batch = torch.from_numpy(
        np.stack(
            [
                load_gray(p, model.image_size, Intensity.from_settings(model.metadata["data"]))
                for p in sorted(tmp_path.glob("*.png"))
            ]
        )
    )[:, None]
    with torch.no_grad():
        assert np.allclose(frame[list(model.classes)].to_numpy(), model(batch).numpy(), atol=2e-6)
    for name, threshold in zip(record["classes"], record["threshold"]):
        column = list(frame.columns).index(name)
        assert frame.columns[column + 1] == f"{name}_decision"  # beside its probability
        if threshold is None:
            assert frame[f"{name}_decision"].isna().all()
        else:
            clear = (frame[name] - threshold).abs() > 1e-5  # the CSV rounds probabilities to 6 decimals
            assert ((frame[name] >= threshold) == (frame[f"{name}_decision"] == 1))[clear].all()
    assert all(pd.notna(frame["heatmap"])) and all(map(lambda p: open(p, "rb").read(4) == b"\x89PNG", frame["heatmap"]))
    tta = tool("predict.py", out, tmp_path / "cxr0.png", "--tta", "--out", tmp_path / "t.csv")
    assert tta.returncode == 2 and "TTA views none" in tta.stderr  # thresholds belong to their predictions


def test_report_tool_writes_a_page_and_refuses_other_folders(run, tmp_path):
    out, _ = run
    proc = tool("report.py", out, "--eval", "eval-tta", "--out", tmp_path / "tta.html")
    assert proc.returncode == 0 and (tmp_path / "tta.html").stat().st_size > 10_000
    assert "Per-class results (eval-tta)" in (tmp_path / "tta.html").read_text()
    refused = tool("report.py", tmp_path)
    assert refused.returncode == 2 and "not a run folder" in refused.stderr


@pytest.mark.parametrize(
    "override, named",
    [
        ("eval.heatmap_method=lime", "integrated_gradients"),
        ("eval.threshold_rule=accuracy", "youden"),
        ("eval.calibration=beta", "isotonic"),
        ("eval.temperature=per_class", "eval.calibration"),
    ],
)
def test_bad_eval_choices_stop_before_anything_is_written(tmp_path, override, named):
    proc = tool("train.py", override, f"train.out={tmp_path / 'run'}")
    assert proc.returncode == 2 and override.split("=")[0] in proc.stderr and named in proc.stderr
    assert not (tmp_path / "run").exists()
