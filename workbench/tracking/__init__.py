"""Everything MLflow, as the rest of workbench uses it: ``from workbench import tracking``.

- `store`: where the store is (`resolve_uri`), whether it can work (`check_store`), the client
  and experiments;
- `run`: a workbench run's MLflow run: `start_run`, the `RunTracker` that ends it exactly once,
  resume checks, runs a dying process leaves (`end_open_runs`);
- `metrics`: step metrics sent in batches from a background thread;
- `artifacts`: its config.yaml, data set and checkpoint (stored once, read in place).
"""

from workbench.tracking.artifacts import (
    CHECKPOINT_ARTIFACT,
    REFERENCE_SUFFIX,
    download_checkpoint,
    local_artifact_path,
    log_dataset,
    read_run_config,
    refuse_if_pruned,
    store_checkpoint,
)
from workbench.tracking.run import (
    NAME_MAX,
    OPEN_RUNS,
    SHORT_ID,
    RunTracker,
    check_resumable,
    closed,
    default_run_name,
    end_open_runs,
    git_commit,
    last_logged_step,
    opened,
    package_versions,
    run_tags,
    run_url,
    start_run,
)
from workbench.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    check_store,
    client,
    experiment_id,
    get_run_or_refuse,
    resolve_uri,
)

__all__ = [
    "CHECKPOINT_ARTIFACT",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "NAME_MAX",
    "OPEN_RUNS",
    "REFERENCE_SUFFIX",
    "SHORT_ID",
    "RunTracker",
    "check_resumable",
    "check_store",
    "client",
    "closed",
    "default_run_name",
    "download_checkpoint",
    "end_open_runs",
    "experiment_id",
    "get_run_or_refuse",
    "git_commit",
    "last_logged_step",
    "local_artifact_path",
    "log_dataset",
    "opened",
    "package_versions",
    "read_run_config",
    "refuse_if_pruned",
    "resolve_uri",
    "run_tags",
    "run_url",
    "start_run",
    "store_checkpoint",
]
