"""Experiments: ablation grids and label-masking experiments, the runs they launch and their result tables."""
