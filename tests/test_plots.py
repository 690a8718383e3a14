"""Plots write real, non-empty PNG files without a display."""
import numpy as np
import pandas as pd
import pytest

from spml.plots import plot_bars, plot_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


def test_plot_curves_writes_roc_and_pr(tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 4)) < 0.3).astype(float)
    targets[:, 3] = 0  # not scorable: drawn without a curve, not an error
    scores = rng.random((200, 4)) + targets
    known = rng.random((200, 4)) < 0.9
    paths = plot_curves(scores, targets, known, ["a", "b", "c", "none"], tmp_path / "eval")
    assert [p.name for p in paths] == ["roc.png", "pr.png"]
    for path in paths:
        assert_png(path)


def test_plot_bars_writes_png_and_tolerates_missing_errors(tmp_path):
    table = pd.DataFrame({"variant": ["full", "an", "mpc"], "mAP_mean": [0.95, 0.80, 0.86],
                          "mAP_std": [0.01, np.nan, 0.02]})
    path = plot_bars(table, x="variant", y="mAP_mean", yerr="mAP_std", out_path=tmp_path / "grid" / "results.png",
                     title="test mAP")
    assert path == tmp_path / "grid" / "results.png"
    assert_png(path)
    with pytest.raises(KeyError, match="mAP_sd"):
        plot_bars(table, x="variant", y="mAP_mean", yerr="mAP_sd", out_path=tmp_path / "x.png")
