"""Shared command-line error handling: user errors become one-line messages and exit code 2."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from spml.config import ConfigError


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (config, data files, checkpoints), a diverged run or a run folder in use.

    Not bugs, so no traceback.

    Returns:
        The exception classes `run_cli` turns into one-line messages.
    """
    from spml.data.table import DataError
    from spml.engine.trainer import NonFiniteLossError
    from spml.utils.lock import RunFolderLocked

    return ConfigError, DataError, FileNotFoundError, KeyError, ValueError, NonFiniteLossError, RunFolderLocked


def run_cli(body: Callable[[], int], parser: argparse.ArgumentParser) -> int:
    """Run `body`; a user error prints `prog: error: message` to stderr and returns 2 instead of a traceback.

    Args:
        body: the tool's work, returning its exit code.
        parser: the tool's argument parser (its `prog` starts the message).

    Returns:
        `body`'s exit code, or 2 after a user error (see `user_errors`).
    """
    try:
        return body()
    except user_errors() as err:
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        print(f"{parser.prog}: error: {worker_message(message)}", file=sys.stderr)
        return 2


def worker_message(message: str) -> str:
    """The original one-line message of an error that torch re-raised from a DataLoader worker process.

    Args:
        message: an error message; torch's is "Caught X in DataLoader worker process N. Original Traceback ...
            module.X: message".

    Returns:
        "message (X in DataLoader worker process N)" for such a message, any other message unchanged.

    Example:
        >>> worker_message("Caught DataError in DataLoader worker process 1.\\nOriginal Traceback (most recent "
        ...                "call last):\\n  ...\\nspml.data.table.DataError: labels.csv row 7: no image")
        'labels.csv row 7: no image (DataError in DataLoader worker process 1)'
        >>> worker_message("labels.csv row 7: no image")
        'labels.csv row 7: no image'
    """
    if not message.startswith("Caught ") or "Original Traceback" not in message:
        return message
    worker = message.split(".", 1)[0].removeprefix("Caught ")
    last = message.rstrip().splitlines()[-1]
    return f"{last.split(': ', 1)[-1]} ({worker})"
