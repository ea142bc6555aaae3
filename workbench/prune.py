"""`workbench runs prune`: delete the checkpoints of old runs, keep everything else.

A run's metrics, params, config and report artifacts stay; only its checkpoint goes
(the MLflow artifact `checkpoints/` and the local `<train.out_dir>/<run_id>/`), and
the run is tagged `workbench.checkpoint_pruned` with the date -- before anything is
deleted, so `--resume`, `workbench eval` and the attention report can say that the
checkpoint was pruned and when (`tracking.refuse_if_pruned`) instead of failing to
download it. RUNNING runs are never touched (checked again just before deleting).

`--keep N` keeps the newest N runs of each (MLflow experiment, config) that still have
a checkpoint; a config is the run's `-e` experiment and sweep variant. Runs without a
checkpoint of their own -- made by `workbench eval` (`workbench.evaluated_from`), a
sweep's parent -- do not count. Every number must be finite and >= 0 (`nan` compares
false with everything: `--older-than nan` would have pruned a run seconds old).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from workbench import tags, tracking
from workbench.errors import ConfigError

DAY_S = 86400


@dataclass
class PrunePlan:
    runs: list[dict] = field(default_factory=list)  # {"run_id", "name", "experiment", "age_days", "bytes", "where"}

    @property
    def bytes(self) -> int:
        return sum(run["bytes"] for run in self.runs)

    def table(self) -> str:
        if not self.runs:
            return "no checkpoints to prune"
        rows = [
            f"{r['run_id'][:12]}  {r['age_days']:5.0f} d  {_size(r['bytes']):>8}  {r['experiment']}/{r['name']}"
            for r in self.runs
        ]
        return "\n".join(rows + [f"{len(self.runs)} run(s), {_size(self.bytes)}"])


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def plan_prune(
    tracking_uri: str = "",
    *,
    older_than_days: float = 30.0,
    keep: int = 0,
    out_dir: str = "outputs",
    experiments: list[str] | None = None,
    now: float | None = None,
) -> PrunePlan:
    """Ended runs older than `older_than_days` whose checkpoint is still stored, except the
    `keep` newest ended runs with a checkpoint of each (experiment, config)."""
    if not math.isfinite(older_than_days) or older_than_days < 0:
        raise ConfigError(f"--older-than {older_than_days}: must be a finite number of days >= 0 (e.g. 30)")
    if keep < 0:
        raise ConfigError(f"--keep {keep}: must be >= 0")
    client = tracking.client(tracking.check_store(tracking_uri))
    now = time.time() if now is None else now
    found = client.search_experiments()
    if experiments:
        names = {e.name for e in found}
        unknown = [name for name in experiments if name not in names]
        if unknown:
            raise ConfigError(
                f"--experiment {unknown[0]!r}: no such MLflow experiment (known: {', '.join(sorted(names))})"
            )
        found = [e for e in found if e.name in experiments]
    plan = PrunePlan()
    for experiment in found:
        runs = client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=50000
        )
        kept: dict[tuple[str, str], int] = {}  # config -> runs with a checkpoint kept so far (newest first)
        for run in runs:
            if run.info.status == "RUNNING" or not _owns_checkpoint(run):
                continue
            where, size = _stored(client, run, Path(out_dir))
            if not where:
                continue
            config = _config(run)
            if kept.get(config, 0) < keep:
                kept[config] = kept.get(config, 0) + 1
                continue
            age_days = (now - (run.info.end_time or run.info.start_time) / 1000) / DAY_S
            if age_days >= older_than_days:
                plan.runs.append(
                    {
                        "run_id": run.info.run_id,
                        "name": run.info.run_name or "",
                        "age_days": age_days,
                        "experiment": experiment.name,
                        "bytes": size,
                        "where": where,
                    }
                )
    return plan


def _owns_checkpoint(run) -> bool:
    """False for runs that never save one: `workbench eval` runs, a sweep's parent, pruned runs."""
    found = run.data.tags
    return tags.EVALUATED_FROM not in found and found.get(tags.ROLE) != "sweep" and tags.CHECKPOINT_PRUNED not in found


def _config(run) -> tuple[str, str]:
    """What a run trained, for --keep: its `-e` experiment and its sweep variant."""
    return run.data.tags.get(tags.EXPERIMENT, ""), run.data.tags.get(tags.VARIANT, "")


def _stored(client, run, out_dir: Path) -> tuple[list[str], int]:
    """Where a run's checkpoint is stored: its local folder and/or its artifact; their size."""
    where, size = [], 0
    local = out_dir / run.info.run_id
    if local.is_dir():
        where.append(str(local))
        size += _dir_bytes(local)
    artifact = tracking.local_artifact_path(client, run.info.run_id)
    if artifact is not None:
        where.append("artifact")
        size += artifact.stat().st_size
    elif any(a.path == "checkpoints" for a in client.list_artifacts(run.info.run_id)):
        where.append("artifact")
    return where, size


def prune(plan: PrunePlan, tracking_uri: str = "") -> int:
    """Delete what `plan` lists; returns the number of runs pruned."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = tracking.client(tracking_uri)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    pruned = 0
    for run in plan.runs:
        if client.get_run(run["run_id"]).info.status == "RUNNING":  # resumed since the plan was made
            continue
        client.set_tag(run["run_id"], tags.CHECKPOINT_PRUNED, stamp)  # first: a reader then knows why it is gone
        pruned += 1
        for place in run["where"]:
            if place == "artifact":
                root = client.get_run(run["run_id"]).info.artifact_uri
                get_artifact_repository(root).delete_artifacts("checkpoints")
            else:
                shutil.rmtree(place, ignore_errors=True)
    return pruned
