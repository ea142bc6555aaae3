"""A tracking store that is busy is waited for, not reported as a crash.

SQLite allows one writer: another process holding the database (a long query in
`mlflow ui`, a backup, `sqlite3` with an open transaction) makes every other write
fail with "database is locked" after SQLite's own 5 s wait. Without a retry a run
lost the metrics of the batch that failed and ended with a status that did not
match what happened. `call` retries such a call with exponential backoff for up
to `retry_s()` seconds (`$WORKBENCH_STORE_RETRY_S`, default 120) and then raises
`StoreLocked`, one line naming the store; `RetryingClient` does this for every
method of an `MlflowClient`. Other errors pass through at once.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from workbench.errors import RunError

RETRY_ENV = "WORKBENCH_STORE_RETRY_S"
DEFAULT_RETRY_S = 120.0
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0
LOCKED_HINTS = ("database is locked", "database table is locked", "database schema is locked")

T = TypeVar("T")


class StoreLocked(RunError):
    """The store stayed locked longer than the retry budget (exit code 1)."""


def retry_s() -> float:
    try:
        return max(0.0, float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_S)))
    except ValueError:
        return DEFAULT_RETRY_S


def is_locked(err: BaseException) -> bool:
    """An error that says the database was busy (SQLite's OperationalError, or MLflow's wrapping of it)."""
    text = str(err).lower()
    return any(hint in text for hint in LOCKED_HINTS)


def call(fn: Callable[..., T], *args: Any, what: str = "", **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, retried with backoff while the store reports it is locked."""
    deadline = time.monotonic() + retry_s()
    delay = FIRST_DELAY_S
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if not is_locked(err):
                raise
            if time.monotonic() + delay > deadline:
                name = what or getattr(fn, "__name__", "a call")
                raise StoreLocked(
                    f"database locked: the MLflow store stayed locked by another process for more than "
                    f"{retry_s():.0f} s ({name}); close the other writer (an open sqlite3 shell, a backup) and "
                    f"resume the run, or raise ${RETRY_ENV}"
                ) from None
        time.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)


class RetryingClient:
    """An MlflowClient whose every method call goes through `call` (the store may be locked for a while)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @property
    def wrapped(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        @functools.wraps(attr)
        def retried(*args: Any, **kwargs: Any) -> Any:
            return call(attr, *args, what=f"MlflowClient.{name}", **kwargs)

        return retried


class _QuietWhenLocked(logging.Filter):
    """MLflow logs every failed store call with its whole SQLAlchemy traceback before raising;
    a lock is retried here (and reported in one line if it lasts), so that log is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not ((exc is not None and is_locked(exc)) or is_locked(Exception(record.getMessage())))


_QUIET = _QuietWhenLocked()


def client(tracking_uri: str) -> RetryingClient:
    """A retrying MlflowClient on `tracking_uri` (creating it reads the store too, so it is retried)."""
    from mlflow.tracking import (
        MlflowClient,  # imported here: this module is also used where mlflow is not
    )

    logger = logging.getLogger("mlflow.store.db.utils")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
    return RetryingClient(call(MlflowClient, tracking_uri=tracking_uri, what="opening the store"))
