"""User-facing errors: one line on stderr, a meaningful exit code, no traceback.

Exit code 2 = the user's input is wrong (config, data, paths); 1 = something
failed while running (NaN loss, a crashed trial). ``--debug`` shows tracebacks.
"""

from __future__ import annotations

from workbench.config import ConfigError


class DataError(ValueError):
    """Bad data on disk: missing file, malformed JSON, unreadable image. Exit code 2."""


class RunError(RuntimeError):
    """A run failed while running (e.g. a NaN loss). Exit code 1."""


USER_ERRORS = (ConfigError, DataError)
RUNTIME_ERRORS = (RunError,)


def exit_code(err: BaseException) -> int:
    return 2 if isinstance(err, USER_ERRORS) else 1


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"error: {text}"
