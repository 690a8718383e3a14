"""Shared fixtures: tiny configs on the synthetic set, so end-to-end tests take seconds."""
from pathlib import Path

import pytest

from spml.config import load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY = [
    "data.dataset=synthetic", "data.size=32", "data.synthetic.num_images=400", "data.batch_size=16",
    "data.eval_batch_size=32", "data.num_workers=0", "model.backbone=test_efficientnet", "train.epochs=2",
    "train.log_every=5", "eval.bootstrap=0", "optim.warmup_epochs=0",
    "spml.mpc.warmup_epochs=0.5", "spml.mpc.rampup_epochs=0.5", "spml.mpc.memory_size=64",
    "augment.elastic.kernel_size=7", "spml.mpc.bt_dim_feedforward=64",
    # the end-of-run heatmaps, pointing game and HTML report cost seconds per run: tests/test_run_report.py
    # trains with them on, the other tests without
    "eval.heatmaps=0", "eval.pointing_game=false", "eval.report=false",
]


@pytest.fixture
def tiny_config(tmp_path):
    """factory(mode, *overrides) -> a Config of a seconds-long run writing into tmp_path."""

    def make(mode: str = "spml", *overrides: str):
        return load_config([], [*TINY, f"train.out={tmp_path / 'run'}", *overrides], mode=mode)

    return make
