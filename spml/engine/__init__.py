"""The accelerate training loop, checkpoints, optimizers, logging and evaluation helpers."""
