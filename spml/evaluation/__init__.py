"""Evaluation: prediction of a split (with or without TTA), metrics, calibration, operating points, diagnostics,
heatmaps and their localisation scores, and external validation."""
