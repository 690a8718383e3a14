"""Shared command-line error handling: user errors become one-line messages and exit code 2."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from spml.config import ConfigError


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (config, data files, checkpoints), a diverged run or a run folder in use,
    not a bug."""
    # here, not at the top: a tool's --help and argument errors need no torch (the engine imports it)
    from spml.data.table import DataError  # noqa: PLC0415
    from spml.engine.trainer import NonFiniteLossError  # noqa: PLC0415
    from spml.utils.lock import RunFolderLocked  # noqa: PLC0415

    return ConfigError, DataError, FileNotFoundError, KeyError, ValueError, NonFiniteLossError, RunFolderLocked


def run_cli(body: Callable[[], int], parser: argparse.ArgumentParser) -> int:
    """Run `body`; a user error prints `prog: error: message` and returns 2 instead of a traceback."""
    try:
        return body()
    except user_errors() as err:
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        print(f"{parser.prog}: error: {worker_message(message)}", file=sys.stderr)
        return 2


def worker_message(message: str) -> str:
    """The original one-line message of an error that torch re-raised from a DataLoader worker process
    ("Caught X in DataLoader worker process N. Original Traceback ... module.X: message")."""
    if not message.startswith("Caught ") or "Original Traceback" not in message:
        return message
    worker = message.split(".", 1)[0].removeprefix("Caught ")
    last = message.rstrip().splitlines()[-1]
    return f"{last.split(': ', 1)[-1]} ({worker})"
