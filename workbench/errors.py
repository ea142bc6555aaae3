"""User-facing errors: one line on stderr, a meaningful exit code, no traceback.

Exit code 2 = the user's input is wrong (config, data, paths); 1 = something
failed while running (NaN loss, a crashed trial, an OSError the system raised:
disk full, permission denied). ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

# Exit codes of every workbench command and process (a shell, a scheduler or a sweep reads them).
EXIT_OK = 0
EXIT_FAILED = 1  # something failed while running (a NaN loss, a crashed trial, the system refused)
EXIT_USER_ERROR = 2  # the user's input is wrong; Click's own usage errors exit 2 too
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C: the shell's 128 + SIGINT


class ConfigError(ValueError):
    """A user-facing configuration problem; its message is one line. Exit code 2."""


class DataError(ValueError):
    """Bad data on disk: missing file, malformed JSON, unreadable image. Exit code 2."""


class RunError(RuntimeError):
    """A run failed while running (e.g. a NaN loss). Exit code 1."""


USER_ERRORS = (ConfigError, DataError)


def did_you_mean(word: object, options: Iterable[object], cutoff: float = 0.6) -> str:
    """ " — did you mean 'X'?" for the closest of `options` to a mistyped `word`, else ''.
    The one place that spells the suggestion, so every error reads the same."""
    close = difflib.get_close_matches(str(word)[:100], [str(o) for o in options], n=1, cutoff=cutoff)
    return f" — did you mean '{close[0]}'?" if close else ""


RUNTIME_ERRORS = (RunError,)


def exit_code(err: BaseException) -> int:
    return EXIT_USER_ERROR if isinstance(err, USER_ERRORS) else EXIT_FAILED


def one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and not isinstance(err, USER_ERRORS):  # the system refused: say what, where
        where = f": {err.filename}" if err.filename else ""
        what = err.strerror or " ".join(str(err).split()) or type(err).__name__
        return f"error: {what}{where} (--debug shows where it happened)"
    text = worker_message(str(err))
    return f"error: {' '.join(text.split())}"


WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def worker_message(text: str) -> str:
    """An error re-raised from another process (a DataLoader worker) carries that process's
    whole traceback in its message; the person needs its last line: the error itself."""
    if WORKER_TRACEBACK not in text:
        return text
    head = text.split("\n", 1)[0].strip()  # "Caught DataError in DataLoader worker process 0."
    lines = [line for line in text.split(WORKER_TRACEBACK, 1)[1].splitlines() if line.strip()]
    last = lines[-1].strip() if lines else head
    kind, sep, message = last.partition(": ")
    if sep and " " not in kind:  # "workbench.errors.DataError: unreadable image ..."
        last = message
    where = head.removeprefix("Caught ").split(" in ", 1)[-1].rstrip(".") if " in " in head else "another process"
    return f"{last} (in {where})"


def check_writable(folder: Path, key: str) -> None:
    """`folder` is a writable directory or could be created as one (its nearest existing
    ancestor is a writable directory); ConfigError naming `key` otherwise. Creates nothing,
    so a command refused later leaves no empty folders behind."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}: cannot create {folder}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot write to {folder}: {existing} is not writable")
