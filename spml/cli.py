"""Shared command-line error handling: user errors become one-line messages and exit code 2."""

from __future__ import annotations

import argparse
import errno
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from spml.config import ConfigError


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (config, data files, checkpoints), a diverged run or a run folder in use.

    Not bugs, so no traceback.

    Returns:
        The exception classes `run_cli` turns into one-line messages.
    """
    # here, not at the top: a tool's --help and argument errors need no torch (the engine imports it)
    from spml.data.table import DataError  # noqa: PLC0415
    from spml.engine.trainer import NonFiniteLossError  # noqa: PLC0415
    from spml.utils.lock import RunFolderLocked  # noqa: PLC0415

    return ConfigError, DataError, FileNotFoundError, KeyError, ValueError, NonFiniteLossError, RunFolderLocked


def run_cli(body: Callable[[], int], parser: argparse.ArgumentParser) -> int:
    """Run `body`, turning the ways a tool ends on bad input into one line on stderr and an exit code.

    A user error prints `prog: error: message` and returns 2 instead of a traceback; a stop signal that ended the
    tool outside a training loop (spml.engine.signals.Interrupted: a grid that passed it on to its training; Ctrl-C
    before the tool's handlers are installed) prints `prog: stopped by SIGNAL` and returns 128 + the signal; a
    file-system error (OSError) prints the file, the reason and what to do.

    Args:
        body: the tool's work, returning its exit code.
        parser: the tool's argument parser (its `prog` starts the message).

    Returns:
        `body`'s exit code, 2 after a user error or a file-system error, 128 + the signal after a stop.
    """
    try:
        return body()
    except user_errors() as err:
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        print(f"{parser.prog}: error: {worker_message(message)}", file=sys.stderr)
        return 2
    except OSError as err:  # the file system refused (read-only, full, not a folder): the file, why, what to do
        print(f"{parser.prog}: error: {file_system_message(err, parser)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a tool installs its handlers (while importing torch)
        print(f"{parser.prog}: stopped by SIGINT", file=sys.stderr)
        return 130
    except BaseException as err:
        from spml.engine.signals import Interrupted  # noqa: PLC0415 (as user_errors: no torch for --help)

        if not isinstance(err, Interrupted):
            raise
        print(f"{parser.prog}: stopped by {err}", file=sys.stderr)
        return 128 + err.signum


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


def file_system_message(err: OSError, parser: argparse.ArgumentParser) -> str:
    """One line for a file-system error.

    Args:
        err: the OSError.
        parser: the tool's argument parser (whether it has --out).

    Returns:
        The file, the reason, and for a folder that cannot be written the flag that writes elsewhere (where the
        tool has --out).
    """
    where = f"{err.filename}: " if err.filename else ""
    message = f"{where}{err.strerror or worker_message(str(err))}"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        writes_elsewhere = any("--out" in action.option_strings for action in parser._actions)
        message += ": the folder is read-only for this user" + (
            "; write the outputs elsewhere with --out DIR" if writes_elsewhere else ""
        )
    elif err.errno == errno.ENOTDIR:
        message += ": a part of that path is a file, not a folder; choose another path"
    elif err.errno in (errno.ENOSPC, errno.EDQUOT) and err.filename and "free in" not in message:
        folder = Path(err.filename).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        message += f" ({shutil.disk_usage(folder).free / 2**20:.1f} MiB free in {folder})"
    return message
