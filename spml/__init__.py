"""spml: single-positive and supervised multi-label chest X-ray classification."""

__version__ = "0.1.0"
