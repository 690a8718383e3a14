"""Data layer: label readers, label policies, splits, masking, images, cache and datasets."""
