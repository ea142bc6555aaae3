"""Where the MLflow store is and whether it can work: URI resolution, fail-fast checks, the client.

The default store is MLflow's own default (``sqlite:///mlflow.db`` in the working
directory) so a bare ``mlflow ui`` there shows every run. A store that cannot work (an
unknown scheme, a server that refuses the connection, an unusable SQLite file) is one
line naming ``tracking.uri`` before any work, not MLflow's minutes of retries.
"""

from __future__ import annotations

import fcntl
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from workbench import store_retry
from workbench.errors import ConfigError, did_you_mean
from workbench.urls import redacted

DEFAULT_URI = "sqlite:///mlflow.db"
URI_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")
# MLflow's experiment-kind tag: with it the UI opens an experiment on its runs table, not the GenAI
# "Overview" (traces, token usage) that MLflow 3 shows an untagged experiment
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
CONNECT_TIMEOUT_S = 5.0  # a tracking server that does not answer this fast is reported, not retried for minutes
_READY: set[str] = set()  # URIs whose store client() has checked and created (a check alone creates nothing)
SQLITE_HEADER = b"SQLite format 3\x00"


def resolve_uri(uri: str = "") -> str:
    """Explicit URI > $MLFLOW_TRACKING_URI > sqlite:///mlflow.db in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def client(uri: str = "") -> MlflowClient:
    """An MlflowClient on the store; an unknown URI scheme or an unusable SQLite file is a one-line error."""
    resolved = resolve_uri(uri)
    if resolved not in _READY:
        check_store(resolved)
        _create_sqlite_store_once(resolved)
        _READY.add(resolved)
    try:
        return store_retry.client(resolved)  # a store locked by another process is waited for
    except mlflow.exceptions.MlflowException:
        raise ConfigError(_bad_scheme(resolved)) from None


def _create_sqlite_store_once(uri: str) -> None:
    """Create (or migrate) a SQLite store under an exclusive lock on its directory.

    MLflow creates the tables of a new SQLite store without a lock, so processes that
    start at the same moment on a fresh store (two terminals, two benchmark processes)
    race through the same migrations and all but one fail ("table metrics already
    exists", "duplicate column name: step"). The first process here makes the store
    while the others wait; they then find it complete.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    path.absolute().parent.mkdir(parents=True, exist_ok=True)  # as MLflow would
    directory = os.open(path.absolute().parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        store_retry.client(uri).search_experiments(max_results=1)
    finally:
        os.close(directory)  # releases the lock


def _bad_scheme(uri: str) -> str:
    scheme = uri.split("://", 1)[0] if "://" in uri else uri.split(":", 1)[0]
    hint = did_you_mean(scheme, URI_SCHEMES)
    return (
        f"tracking.uri: {redacted(uri)!r} has no MLflow store scheme '{scheme}' (known: {', '.join(URI_SCHEMES)}){hint}"
    )


def check_store(uri: str = "") -> str:
    """Fail fast on a store that cannot work: an unknown scheme, or a tracking server that
    refuses the connection (MLflow itself would retry that for minutes). Creates nothing
    (an MlflowClient would create a SQLite store at once). Returns the URI."""
    resolved = resolve_uri(uri)
    url = urllib.parse.urlsplit(resolved)
    if url.scheme and url.scheme.split("+")[0] not in URI_SCHEMES:  # postgresql+psycopg2 is postgresql
        raise ConfigError(_bad_scheme(resolved))
    if url.scheme in ("http", "https"):
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname or "localhost", port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as err:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise ConfigError(
                f"tracking.uri: cannot reach the MLflow server {redacted(resolved)!r} ({reason}); "
                "start it (mlflow server) or fix --tracking-uri / tracking.uri"
            ) from None
    if url.scheme == "sqlite":
        _check_sqlite(resolved)
    return resolved


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for an in-memory store)."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/") or rest == "/" or rest.startswith("/:memory:"):
        return None
    return Path(rest[1:])


def _check_sqlite(uri: str) -> None:
    """An SQLite store MLflow can open: a database file (or a place one can be created).
    MLflow itself retries an unusable file for ~100 s and then raises a long traceback."""
    path = sqlite_path(uri)
    if path is None:
        return

    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"tracking.uri: cannot use the SQLite store {str(path)!r}: {why}; fix --tracking-uri / tracking.uri"
        )

    if path.exists():
        if path.is_dir():
            raise bad("it is a directory, not a database file")
        try:
            with open(path, "rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as err:
            raise bad(err.strerror or type(err).__name__) from None
        if header and header != SQLITE_HEADER:
            raise bad("the file is not an SQLite database")
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise bad("it is read-only")
        return
    existing = path.absolute().parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise bad(f"{existing} is a file, not a directory")
    probe = existing / f".workbench-probe-{os.getpid()}"
    try:  # os.access says yes to root everywhere (also in /proc): try creating a file
        probe.touch(exist_ok=False)
    except OSError as err:
        raise bad(f"cannot create a database in {existing} ({err.strerror or type(err).__name__})") from None
    finally:
        probe.unlink(missing_ok=True)


def artifact_location(uri: str = "") -> str | None:
    """For a SQLite store, artifacts live beside the database (`<db dir>/mlruns`), not in
    whatever directory the process happens to run in; other stores use their own default."""
    resolved = resolve_uri(uri)
    if not resolved.startswith("sqlite:///"):
        return None
    database = Path(resolved.removeprefix("sqlite:///"))
    return (database.resolve().parent / "mlruns").as_uri()


def experiment_id(name: str, uri: str = "") -> str:
    """Get or create an experiment by name, tagged a model-training experiment (EXPERIMENT_KIND_TAG,
    also set on an existing experiment without it); a store we cannot reach is a one-line error."""
    mlflow_client = client(uri)
    try:
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            if EXPERIMENT_KIND_TAG not in found.tags:
                mlflow_client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id
        return mlflow_client.create_experiment(
            name, artifact_location=artifact_location(uri), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    except mlflow.exceptions.MlflowException as err:
        if "already exists" in str(err):  # a concurrent process created it first
            return mlflow_client.get_experiment_by_name(name).experiment_id
        raise ConfigError(f"tracking.uri: cannot use MLflow store {redacted(resolve_uri(uri))!r}: {err}") from None
    except Exception as err:  # connection refused, unreadable path, ...
        raise ConfigError(f"tracking.uri: cannot reach MLflow store {redacted(resolve_uri(uri))!r}: {err}") from None


def get_run_or_refuse(mlflow_client: MlflowClient, run_id: str, uri: str, option: str = "") -> Any:
    """The run `run_id`; ConfigError (naming `option`) if there is none or it is deleted."""
    prefix = f"{option}: " if option else ""
    try:
        run = mlflow_client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"{prefix}no MLflow run {run_id!r} in {redacted(resolve_uri(uri))}") from None
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"{prefix}MLflow run {run_id!r} is deleted; restore it first (mlflow runs restore --run-id {run_id}) "
            "or pick another run"
        )
    return run
