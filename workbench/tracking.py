"""Everything MLflow: where the store is, how a run is opened, what it records.

The default store is MLflow's own default (``sqlite:///mlflow.db`` in the working
directory) so a bare ``mlflow ui`` there shows every run. Step metrics are
buffered and sent in batches (``MlflowClient.log_batch``) from a background
thread so tracking stays a small share of step time.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
import platform
import queue
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from workbench import store_retry
from workbench import tags as tag
from workbench.config import RunConfig, flatten, to_yaml
from workbench.errors import ConfigError, RunError, did_you_mean

DEFAULT_URI = "sqlite:///mlflow.db"
SHORT_ID = 6  # run id characters in a default run name
NAME_MAX = 100
# overrides that say where a run reads and writes, not what it is: left out of its name (kept in the tag)
NAME_SKIPS = (
    "data.root=",
    "data.image_root=",
    "data.tokenizer=",
    "tracking.",
    "train.out_dir=",
    "train.device=",
    "train.log_every=",
    "train.checkpoint_every=",
)
URI_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")
# MLflow's experiment-kind tag: with it the UI opens an experiment on its runs table, not the GenAI
# "Overview" (traces, token usage) that MLflow 3 shows an untagged experiment
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
CONNECT_TIMEOUT_S = 5.0  # a tracking server that does not answer this fast is reported, not retried for minutes


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


def redact(uri: str) -> str:
    """The URI without a password, for messages: scheme://user:secret@host -> scheme://***@host."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", uri)


def _bad_scheme(uri: str) -> str:
    scheme = uri.split("://", 1)[0] if "://" in uri else uri.split(":", 1)[0]
    hint = did_you_mean(scheme, URI_SCHEMES)
    return (
        f"tracking.uri: {redact(uri)!r} has no MLflow store scheme '{scheme}' (known: {', '.join(URI_SCHEMES)}){hint}"
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
                f"tracking.uri: cannot reach the MLflow server {redact(resolved)!r} ({reason}); "
                "start it (mlflow server) or fix --tracking-uri / tracking.uri"
            ) from None
    if url.scheme == "sqlite":
        _check_sqlite(resolved)
    _CHECKED.add(resolved)
    return resolved


_CHECKED: set[str] = set()  # URIs this process has checked already (client() is called often)
_READY: set[str] = set()  # URIs whose store client() has checked and created (a check alone creates nothing)
SQLITE_HEADER = b"SQLite format 3\x00"


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
        raise ConfigError(f"tracking.uri: cannot use MLflow store {redact(resolve_uri(uri))!r}: {err}") from None
    except Exception as err:  # connection refused, unreadable path, ...
        raise ConfigError(f"tracking.uri: cannot reach MLflow store {redact(resolve_uri(uri))!r}: {err}") from None


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    names = ["torch", "torchvision", "timm", "transformers", "mlflow", "optuna", "numpy"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


class MetricLogger:
    """Buffers step metrics and sends them with ``log_batch`` from a worker thread.

    ``log`` never blocks on the network/database; ``close`` flushes everything, so a
    metric handed to the logger is never lost when a run ends (also on failure). A batch
    the store refused (locked longer than `store_retry` waits) is kept and sent again
    before the next one; what still cannot be sent at ``close`` is a one-line RunError.
    """

    def __init__(self, mlflow_client: MlflowClient, run_id: str, flush_every: int = 200):
        self._client = mlflow_client
        self._run_id = run_id
        self._flush_every = flush_every
        self._pending: list[Metric] = []
        self._queue: queue.Queue[list[Metric] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._unsent: list[Metric] = []  # refused by the store: sent again with the next batch
        self._thread = threading.Thread(target=self._work, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def log(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._pending += [Metric(key, float(value), now, step) for key, value in metrics.items()]
        if len(self._pending) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._queue.put(self._pending)
            self._pending = []

    def _work(self) -> None:
        while (batch := self._queue.get()) is not None:
            self._send(self._unsent + batch)

    def _send(self, batch: list[Metric]) -> None:
        self._unsent = []
        for start in range(0, len(batch), 1000):  # MLflow's per-call metric limit
            try:
                self._client.log_batch(self._run_id, metrics=batch[start : start + 1000])
            except Exception as err:  # noqa: BLE001 - kept, sent again; reported at close
                self._error, self._unsent = err, batch[start:]
                return
        self._error = None

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join()
        if self._unsent:
            self._send(self._unsent)  # one last try (waits out a lock again)
        if self._unsent:
            raise RunError(
                f"{len(self._unsent)} metric values of run {self._run_id} could not be written to the MLflow "
                f"store: {' '.join(str(self._error).split())[:300]}"
            )


# Runs this process set RUNNING and has not ended yet (run id -> store URI). Whatever ends
# the process -- an error, a signal -- `end_open_runs` leaves each terminal, never RUNNING.
OPEN_RUNS: dict[str, str] = {}


def opened(run_id: str, uri: str) -> None:
    OPEN_RUNS[run_id] = uri


def closed(run_id: str) -> None:
    OPEN_RUNS.pop(run_id, None)


def end_open_runs(status: str) -> list[str]:
    """Mark every run still open in this process `status` (FAILED, KILLED); best effort, never raises."""
    ended = []
    for run_id, uri in list(OPEN_RUNS.items()):
        try:
            store_retry.client(resolve_uri(uri)).set_terminated(run_id, status=status)
            ended.append(run_id)
        except Exception:  # noqa: BLE001 - the store itself may be what failed
            pass
        closed(run_id)
    return ended


def run_url(uri: str, experiment: str, run_id: str) -> str:
    """Where to see a run: the server's page, or the page `workbench ui` serves for a local store."""
    resolved = resolve_uri(uri)
    page = f"#/experiments/{experiment}/runs/{run_id}"
    if resolved.startswith(("http://", "https://")):
        return f"{redact(resolved).rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page} (after `workbench ui`)"


def get_run_or_refuse(mlflow_client: MlflowClient, run_id: str, uri: str, option: str = "") -> Any:
    """The run `run_id`; ConfigError (naming `option`) if there is none or it is deleted."""
    prefix = f"{option}: " if option else ""
    try:
        run = mlflow_client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"{prefix}no MLflow run {run_id!r} in {redact(resolve_uri(uri))}") from None
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"{prefix}MLflow run {run_id!r} is deleted; restore it first (mlflow runs restore --run-id {run_id}) "
            "or pick another run"
        )
    return run


def refuse_if_pruned(run: Any, option: str = "") -> None:
    """One line saying when `workbench runs prune` removed the run's checkpoint (tag
    workbench.checkpoint_pruned), instead of a failed download; its config still runs again."""
    date = run.data.tags.get(tag.CHECKPOINT_PRUNED)
    if date is not None:
        prefix = f"{option}: " if option else ""
        raise ConfigError(
            f"{prefix}run {run.info.run_id}: its checkpoint was pruned on {date} by `workbench runs prune`, so it "
            "cannot "
            f"be resumed, evaluated or drawn; its metrics and config stay — a new run from its config: "
            f"workbench run --from {run.info.run_id}"
        )


def check_resumable(run_id: str, uri: str = "") -> None:
    """--resume continues a KILLED, FAILED or RUNNING run; a FINISHED run is never changed."""
    run = get_run_or_refuse(client(uri), run_id, uri, "--resume")
    refuse_if_pruned(run)  # the caller names --resume
    if run.info.status == "FINISHED":
        raise ConfigError(
            f"--resume: run {run_id} is FINISHED and stays as it is (a finished result is never changed); "
            f"to train longer or differently start a new run from its config: workbench run --from {run_id} --set "
            "train.steps=N"
        )


class RunTracker:
    """One MLflow run: params, tags, artifacts and metrics of a workbench run.

    Used as a context manager it ends the run exactly once, on the way out of the
    `with` block: FINISHED when the block completes, KILLED when a KeyboardInterrupt
    (Ctrl-C, or SIGTERM as `interrupts.Interrupted`) leaves it, FAILED for any other
    error. `leave_running()` keeps a block that completes RUNNING (a resumable stop).
    """

    def __init__(self, mlflow_client: MlflowClient, run_id: str, enabled: bool = True):
        self.client = mlflow_client
        self.run_id = run_id
        self.enabled = enabled
        self.metrics = MetricLogger(mlflow_client, run_id) if enabled else None
        self._keep_running = False
        self._system = None  # MLflow's SystemMetricsMonitor, see `watch_system`

    def watch_system(self, interval_s: float, uri: str) -> None:
        """Sample CPU/GPU utilisation and memory every `interval_s` into `system/...` metrics
        (MLflow's own monitor; a starved GPU shows in the UI). GPU metrics need nvidia-ml-py."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._system = SystemMetricsMonitor(
            self.run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=resolve_uri(uri)
        )
        self._system.start()

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None and self._keep_running:
            try:
                self.close_metrics()
            except BaseException:
                self.finish("FAILED")  # metrics were lost: not a resumable stop
                raise
            closed(self.run_id)  # left RUNNING on purpose: resumable, not a crash to clean up
            return
        self.finish("FINISHED" if exc is None else "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")

    def leave_running(self) -> None:
        """End the session without ending the run: it stays RUNNING, to be resumed."""
        self._keep_running = True

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.metrics is not None:
            self.metrics.log(metrics, step)

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        """Final (e.g. downstream) metrics, sent at once."""
        if self.enabled and metrics:
            self.log_metrics(metrics, step)
            self.metrics.flush()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def close_metrics(self) -> None:
        """Flush and stop the metric threads, leaving the run's status as it is."""
        if self._system is not None:
            system, self._system = self._system, None
            system.finish()
        if self.metrics is not None:
            metrics, self.metrics = self.metrics, None
            metrics.close()

    def finish(self, status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        try:
            self.close_metrics()
        except BaseException:
            status = "FAILED" if status == "FINISHED" else status  # metrics lost: the status says so
            raise
        finally:
            self.client.set_terminated(self.run_id, status=status)
            closed(self.run_id)


def run_tags(experiment: str, overrides: list[str], presets: list[str] | None = None) -> dict[str, str]:
    """Tags naming where a run's config came from: experiment, presets and `--set` overrides."""
    tags = {tag.EXPERIMENT: experiment, tag.OVERRIDES: " ".join(overrides)}
    if presets:
        tags[tag.PRESET] = " ".join(presets)
    return tags


def default_run_name(run_id: str, tags: dict[str, str] | None = None) -> str:
    """Readable and unique: experiment, short run id, the overrides (objectives.* shortened).

    e.g. "base 3fa2c1 scl.mvsc=false"; MLflow's own default draws from a seeded
    generator, so two runs with the same seed got the same name.
    """
    tags = tags or {}
    overrides = [
        o.removeprefix("objectives.") for o in tags.get(tag.OVERRIDES, "").split() if not o.startswith(NAME_SKIPS)
    ]
    presets = tags.get(tag.PRESET, "").split()
    name = " ".join([tags.get(tag.EXPERIMENT) or "run", run_id[:SHORT_ID], *presets, *overrides])
    return name if len(name) <= NAME_MAX else name[: NAME_MAX - 1] + "…"


def _params(cfg: RunConfig) -> dict[str, str]:
    return {key: str(value)[:6000] for key, value in flatten(cfg).items()}


def start_run(
    cfg: RunConfig,
    *,
    resume_run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    resume_tags: dict[str, str] | None = None,
) -> RunTracker:
    """Open (or reopen, for --resume) the MLflow run of one workbench run.

    `tags` are set on a new run; a resumed run keeps those it was created with and
    gets `resume_tags` (e.g. the SLURM job carrying it on after a pre-emption)."""
    if not cfg.tracking.enabled:
        return RunTracker(None, resume_run_id or f"local-{int(time.time() * 1000)}", enabled=False)
    mlflow_client = client(cfg.tracking.uri)
    if resume_run_id:
        check_resumable(resume_run_id, cfg.tracking.uri)
        mlflow_client.update_run(resume_run_id, status="RUNNING")
        opened(resume_run_id, cfg.tracking.uri)
        if resume_tags:
            mlflow_client.log_batch(resume_run_id, tags=[RunTag(k, str(v)) for k, v in resume_tags.items()])
        return _watched(RunTracker(mlflow_client, resume_run_id), cfg)
    exp_id = experiment_id(cfg.tracking.experiment, cfg.tracking.uri)
    all_tags = {tag.GIT_COMMIT: git_commit(), **(tags or {})}
    all_tags.update({f"{tag.VERSION}{k}": v for k, v in package_versions().items()})
    if parent_run_id:
        all_tags[tag.PARENT_RUN_ID] = parent_run_id
    run = mlflow_client.create_run(exp_id, run_name=cfg.tracking.run_name or None, tags=all_tags)
    opened(run.info.run_id, cfg.tracking.uri)
    if not cfg.tracking.run_name:
        mlflow_client.update_run(run.info.run_id, name=default_run_name(run.info.run_id, all_tags))
    tracker = RunTracker(mlflow_client, run.info.run_id)
    items = [Param(k, v) for k, v in _params(cfg).items()]
    for start in range(0, len(items), 100):
        mlflow_client.log_batch(run.info.run_id, params=items[start : start + 100])
    mlflow_client.log_text(run.info.run_id, to_yaml(cfg), "config.yaml")
    return _watched(tracker, cfg)


def _watched(tracker: RunTracker, cfg: RunConfig) -> RunTracker:
    if cfg.tracking.system_metrics:
        tracker.watch_system(cfg.tracking.system_metrics_interval, cfg.tracking.uri)
    return tracker


def last_logged_step(tracker: RunTracker, key: str) -> int:
    """Highest step already logged for `key` (-1 if none): a resumed run logs only later steps."""
    if not tracker.enabled:
        return -1
    history = tracker.client.get_metric_history(tracker.run_id, key)
    return max((m.step for m in history), default=-1)


DUPLICATE_ROW_HINTS = ("unique constraint", "duplicate key", "duplicate entry")  # SQLite, PostgreSQL, MySQL


def log_dataset(tracker: RunTracker, root: Path, manifest: dict[str, Any]) -> None:
    """Record the data set (path + content hash) with MLflow's dataset tracking."""
    if not tracker.enabled:
        return
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local source
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(Path(root).resolve()))
    name = f"{manifest.get('generator', Path(root).name)}-{manifest.get('size', '')}".strip("-")
    dataset = MetaDataset(source=source, name=name, digest=str(manifest.get("data_hash", ""))[:36] or None)
    inputs = [DatasetInput(Dataset(**dataset.to_dict()), tags=[InputTag("mlflow.data.context", "train")])]
    try:
        tracker.client.log_inputs(tracker.run_id, datasets=inputs)
    except mlflow.exceptions.MlflowException as err:
        # two runs starting together (sweep slots, hosts) race to insert the same data set row:
        # the store looks it up, both miss, one insert violates the unique key. Now it exists.
        if not any(hint in str(err).lower() for hint in DUPLICATE_ROW_HINTS):
            raise
        tracker.client.log_inputs(tracker.run_id, datasets=inputs)


def read_run_config(run_id: str, uri: str = "") -> str:
    """The config.yaml artifact of a run."""
    mlflow_client = client(check_store(uri))
    get_run_or_refuse(mlflow_client, run_id, uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(mlflow_client.download_artifacts(run_id, "config.yaml", tmp)).read_text()
    except Exception as err:
        line = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(
            f"run {run_id!r}: cannot read its config.yaml from {redact(resolve_uri(uri))}: {line}"
        ) from None


CHECKPOINT_ARTIFACT = "checkpoints/last.pt"
REFERENCE_SUFFIX = ".ref"  # outputs/<run>/last.pt.ref: where the one stored copy of last.pt is


def store_checkpoint(tracker: RunTracker, local: Path) -> Path:
    """Log a finished run's checkpoint to MLflow and keep one copy: the local file is then
    replaced by `last.pt.ref`, a one-line reference to the artifact (a 62 MB checkpoint
    was stored twice). Without tracking the local file stays. Returns where it lives now:
    the artifact's file in a local store, else the reference."""
    if not tracker.enabled:
        return local
    tracker.log_artifact(local, CHECKPOINT_ARTIFACT.rsplit("/", 1)[0])
    reference = local.with_name(local.name + REFERENCE_SUFFIX)
    uri = f"runs:/{tracker.run_id}/{CHECKPOINT_ARTIFACT}"
    reference.write_text(f"{uri}\n{_artifact_location(tracker)}\n")
    local.unlink()
    return local_artifact_path(tracker.client, tracker.run_id) or reference  # a loadable file when the store is local


def _artifact_location(tracker: RunTracker) -> str:
    root = tracker.client.get_run(tracker.run_id).info.artifact_uri.rstrip("/")
    return f"{root}/{CHECKPOINT_ARTIFACT}"


def local_artifact_path(mlflow_client: MlflowClient, run_id: str, artifact: str = CHECKPOINT_ARTIFACT) -> Path | None:
    """The artifact's file when the run's artifact store is a local directory (no copy needed)."""
    root = mlflow_client.get_run(run_id).info.artifact_uri
    if not root or (("://" in root) and not root.startswith("file:")):
        return None
    path = Path(local_file_uri_to_path(root)) / artifact
    return path if path.is_file() else None


def download_checkpoint(mlflow_client: MlflowClient, run_id: str, dest: Path) -> Path:
    """checkpoints/last.pt of a run: read in place from a local artifact store, else fetched
    from MLflow into `dest` (the caller's scratch directory, not a second stored copy)."""
    refuse_if_pruned(get_run_or_refuse(mlflow_client, run_id, ""))
    try:
        in_place = local_artifact_path(mlflow_client, run_id)
        if in_place is not None:
            return in_place
        dest.mkdir(parents=True, exist_ok=True)
        path = mlflow_client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, str(dest))
    except Exception as err:
        line = (
            " ".join(str(err).replace(str(dest), "").split())[:300] or type(err).__name__
        )  # dest may be a scratch dir
        raise ConfigError(
            f"run {run_id!r}: no checkpoint in train.out_dir nor as its MLflow artifact {CHECKPOINT_ARTIFACT} ({line})"
        ) from None
    return Path(path)
