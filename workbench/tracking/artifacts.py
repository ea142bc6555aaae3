"""What a run stores besides metrics: its config.yaml, its data set, its checkpoint.

A finished run's checkpoint is kept once, as the MLflow artifact ``checkpoints/last.pt``;
``train.out_dir`` keeps only a one-line reference to it. Reading it back uses the file in
place when the artifact store is local and downloads it only from a remote one.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from workbench import tags as tag
from workbench.errors import ConfigError
from workbench.tracking.store import check_store, client, get_run_or_refuse, resolve_uri
from workbench.urls import redacted

if TYPE_CHECKING:
    from workbench.tracking.run import RunTracker

CHECKPOINT_ARTIFACT = "checkpoints/last.pt"
REFERENCE_SUFFIX = ".ref"  # outputs/<run>/last.pt.ref: where the one stored copy of last.pt is
DUPLICATE_ROW_HINTS = ("unique constraint", "duplicate key", "duplicate entry")  # SQLite, PostgreSQL, MySQL


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
            f"run {run_id!r}: cannot read its config.yaml from {redacted(resolve_uri(uri))}: {line}"
        ) from None


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
