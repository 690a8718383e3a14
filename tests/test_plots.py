"""Plots write real, non-empty PNG files without a display."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from spml.evaluation.metrics import evaluate_predictions
from spml.reporting.plots import curve_figures, plot_bars, plot_curves

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
    classes = ["a", "b", "c", "none"]
    paths = plot_curves(
        scores, targets, known, classes, tmp_path / "eval", evaluate_predictions(scores, targets, known, classes)
    )
    assert [p.name for p in paths] == ["roc.png", "pr.png"]
    for path in paths:
        assert_png(path)


def test_plot_bars_writes_png_and_tolerates_missing_errors(tmp_path):
    table = pd.DataFrame(
        {"variant": ["full", "an", "mpc"], "mAP_mean": [0.95, 0.80, 0.86], "mAP_std": [0.01, np.nan, 0.02]}
    )
    path = plot_bars(
        table, x="variant", y="mAP_mean", yerr="mAP_std", out_path=tmp_path / "grid" / "results.png", title="test mAP"
    )
    assert path == tmp_path / "grid" / "results.png"
    assert_png(path)
    with pytest.raises(KeyError, match="mAP_sd"):
        plot_bars(table, x="variant", y="mAP_mean", yerr="mAP_sd", out_path=tmp_path / "x.png")


def test_curve_figures_keep_titles_and_legends_clear_and_name_left_out_classes():
    rng = np.random.default_rng(0)
    targets = (rng.random((300, 14)) < 0.3).astype(float)
    targets[:, [3, 9]] = 0
    scores = rng.random((300, 14)) + targets
    classes = [f"a long class name {i}" for i in range(14)]
    for fig in curve_figures(scores, targets, None, classes, evaluate_predictions(scores, targets, None, classes)):
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        ax = fig.axes[0]
        box = fig.bbox
        title = ax.title.get_window_extent(renderer)
        assert box.x0 <= title.x0 and title.x1 <= box.x1 and title.y1 <= box.y1  # not clipped
        assert "12 of 14 classes" in ax.get_title()
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.x0 >= ax.get_window_extent(renderer).x1 and legend.x1 <= box.x1  # beside the curves
        named = " ".join(text.get_text() for text in fig.texts)
        assert "a long class name 3 (no positive" in named and "a long class name 9" in named


def test_long_titles_wrap_inside_narrow_figures():
    from matplotlib.figure import Figure

    from spml.reporting.plots import set_title

    fig = Figure(figsize=(4, 4.5))  # plot_bars' width for one or two variants
    ax = fig.subplots()
    title = "masking nih: single_positive seed 1200, clean val, clean test: test mAP (mean ± std over seeds)"
    set_title(ax, title, 10)
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    title = ax.title.get_window_extent(canvas.get_renderer())
    assert fig.bbox.x0 <= title.x0 and title.x1 <= fig.bbox.x1 and title.y1 <= fig.bbox.y1
