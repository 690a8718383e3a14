"""File-system helpers shared by every layer: atomic writes and run-folder locks."""
