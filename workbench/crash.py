"""The last resort for an error nobody expected: one line, a log file, no RUNNING run.

`cli.friendly` turns the errors we know (bad config, bad data, a failed run, what
the system refused) into one line. Anything else is a bug or a case we missed; the
person still gets one line naming the command and the error type, and the path
of a log file that holds the full traceback (`--debug` prints it instead). Every
MLflow run this process opened and did not end is marked FAILED (KILLED after a
signal), so a crash never leaves a run RUNNING.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path

from workbench import tracking
from workbench.strict_yaml import brief

LOG_DIR_ENV = "WORKBENCH_LOG_DIR"


def log_dir() -> Path:
    """$WORKBENCH_LOG_DIR, else <temp dir>/workbench-logs (never the working directory)."""
    return Path(os.environ.get(LOG_DIR_ENV) or Path(tempfile.gettempdir()) / "workbench-logs")


def write_log(command: str, err: BaseException) -> Path | None:
    """The full traceback of `err` in a new log file; None if no log could be written."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{command.replace(' ', '-') or 'workbench'}-{stamp}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(err))
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(f"workbench {command}: unexpected {type(err).__name__}\n\n{text}")
        return path
    except OSError:
        return None


def unexpected(command: str, err: BaseException) -> str:
    """The one line for an unexpected error (after writing its log and ending open runs)."""
    ended = tracking.end_open_runs("FAILED")
    log = write_log(command, err)
    detail = " ".join(brief(str(err)).strip("'\"").split()) if str(err) else ""
    what = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
    runs = f"; MLflow run {', '.join(ended)} marked FAILED" if ended else ""
    where = f"full traceback in {log}" if log else "no log could be written"
    return f"error: workbench {command} failed unexpectedly ({what}){runs}; {where} (--debug shows it here)"
