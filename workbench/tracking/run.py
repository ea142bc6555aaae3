"""One MLflow run of a workbench run: opening (or reopening) it, its name and tags, recording
it, and ending it exactly once -- never left RUNNING by a process that is gone."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from workbench import store_retry
from workbench import tags as tag
from workbench.config import RunConfig, flatten, to_yaml
from workbench.errors import ConfigError
from workbench.tracking.artifacts import refuse_if_pruned
from workbench.tracking.metrics import MetricLogger
from workbench.tracking.store import client, experiment_id, get_run_or_refuse, resolve_uri
from workbench.urls import redacted

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
        return f"{redacted(resolved).rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page} (after `workbench ui`)"


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
        self.finish(ending(exc))

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
        run_id, all_tags = resume_run_id, {}
    else:
        run_id, all_tags = _create_run(mlflow_client, cfg, parent_run_id, tags)
    opened(run_id, cfg.tracking.uri)
    tracker = RunTracker(mlflow_client, run_id)
    try:  # the run is RUNNING now: an error or a signal before it is handed over ends it, never leaves it so
        if resume_run_id and resume_tags:
            mlflow_client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in resume_tags.items()])
        if not resume_run_id:
            _name_and_record_config(mlflow_client, run_id, cfg, all_tags)
        return _watched(tracker, cfg)
    except BaseException as err:
        tracker.finish(ending(err))
        raise


def _create_run(
    mlflow_client: MlflowClient, cfg: RunConfig, parent_run_id: str | None, tags: dict[str, str] | None
) -> tuple[str, dict[str, str]]:
    """A new RUNNING run tagged with the code, the package versions and `tags`: its id and tags."""
    exp_id = experiment_id(cfg.tracking.experiment, cfg.tracking.uri)
    all_tags = {tag.GIT_COMMIT: git_commit(), **(tags or {})}
    all_tags.update({f"{tag.VERSION}{k}": v for k, v in package_versions().items()})
    if parent_run_id:
        all_tags[tag.PARENT_RUN_ID] = parent_run_id
    run = mlflow_client.create_run(exp_id, run_name=cfg.tracking.run_name or None, tags=all_tags)
    return run.info.run_id, all_tags


def _name_and_record_config(mlflow_client: MlflowClient, run_id: str, cfg: RunConfig, tags: dict[str, str]) -> None:
    """A new run's default name, every config value as a param (100 per call), the config as config.yaml."""
    if not cfg.tracking.run_name:
        mlflow_client.update_run(run_id, name=default_run_name(run_id, tags))
    items = [Param(k, v) for k, v in _params(cfg).items()]
    for start in range(0, len(items), 100):
        mlflow_client.log_batch(run_id, params=items[start : start + 100])
    mlflow_client.log_text(run_id, to_yaml(cfg), "config.yaml")


def ending(exc: BaseException | None) -> str:
    """The status a run ends with when `exc` ends it: FINISHED (none), KILLED (Ctrl-C, SIGTERM) or FAILED."""
    return "FINISHED" if exc is None else "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


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
