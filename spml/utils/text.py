"""Names made from free text."""

from __future__ import annotations

import re


def slug(text: str) -> str:
    """A folder-safe lower-case name: every run of characters other than letters and digits becomes "_".

    Leading and trailing "_" are stripped.

    Args:
        text: free text (a variant's label, ...).

    Returns:
        The slug.

    Example:
        >>> slug("MPC (paper) + EMA")
        'mpc_paper_ema'
    """
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
