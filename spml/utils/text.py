"""Text made for people: folder-safe names, the one-line description of a run's starting weights."""

from __future__ import annotations

import re
from typing import Any


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


def describe_weights(record: dict[str, Any], pretrained: str | bool = "") -> str:
    """One line for banners and reports: which weights a run started from.

    Args:
        record: the run's model.pretrained_record (`weights_record`).
        pretrained: its model.pretrained name (all a run recorded before spml kept the record has).

    Returns:
        The line.

    Example:
        >>> describe_weights({}, "")
        'weights: random init (model.pretrained empty)'
    """
    if not record:
        if pretrained:
            return f"weights: {pretrained} (recorded before spml kept the weights' file and hash)"
        return "weights: random init (model.pretrained empty)"
    return (
        f"weights: {record['name']} ({record['source']} {record['tag']}), file {record['file']}, "
        f"sha256 {record['sha256'][:16]}"
    )
