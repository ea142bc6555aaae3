"""A fast read of sweep runs from an MLflow SQL store: only the columns reports use.

`mlflow.search_runs` builds an ORM object for every param, tag and metric of every
run (a run has ~130 params) and then a frame of all of them; for 1,000 runs that is
most of a report's time. On SQL stores (sqlite, postgres, mysql) this module asks the
same store, through MLflow's own table models, for the kept tags, params and latest
metrics only, and returns the frame `search_runs` + `store.slim` would (same column
names and types; active runs of active experiments). Any other store, or any error,
returns None and the caller uses `search_runs`; a test checks both give the same frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlflow
import numpy as np
import pandas as pd

ACTIVE = "active"


def _sql_store():
    store = getattr(getattr(mlflow.MlflowClient(), "_tracking_client", None), "store", None)
    try:  # deferred: SQLAlchemy's store costs ~2 s to import; a report on an http:// server never needs it
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    except ImportError:  # pragma: no cover - mlflow without SQL support
        return None
    return store if isinstance(store, SqlAlchemyStore) else None


def _time(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, unit="ms", utc=True)


def read_runs(
    sweep_tag: str, selectors: Sequence[str], tags: Sequence[str], params: Sequence[str], metric_prefixes: Sequence[str]
) -> pd.DataFrame | None:
    """Runs tagged `sweep_tag` (with a value in `selectors`, when given) as a frame with columns
    run_id, status, start_time, end_time, experiment_id, tags.*, params.*, metrics.*; None when
    the store is not an SQL store (or the read fails)."""
    store = _sql_store()
    if store is None:
        return None
    try:
        rows = _query_runs(store, sweep_tag, selectors, tags, params, metric_prefixes)
    except Exception:  # an unexpected schema or driver: the caller falls back to search_runs
        return None
    return _runs_frame(*([tuple(r) for r in found] for found in rows))


def _query_runs(
    store: Any,
    sweep_tag: str,
    selectors: Sequence[str],
    tags: Sequence[str],
    params: Sequence[str],
    metric_prefixes: Sequence[str],
) -> tuple[list, list, list, list]:
    """(runs, tag rows, param rows, latest-metric rows) of the active runs tagged `sweep_tag`."""
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLatestMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import or_, select  # deferred: SQL stores only (see _sql_store)

    with store.ManagedSessionMaker() as session:
        tagged = select(SqlTag.run_uuid).where(SqlTag.key == sweep_tag)
        if selectors:
            tagged = tagged.where(SqlTag.value.in_(list(selectors)))
        runs = session.execute(
            select(SqlRun.run_uuid, SqlRun.status, SqlRun.start_time, SqlRun.end_time, SqlRun.experiment_id)
            .join(SqlExperiment, SqlExperiment.experiment_id == SqlRun.experiment_id)
            .where(
                SqlRun.run_uuid.in_(tagged),
                SqlRun.lifecycle_stage == ACTIVE,
                SqlExperiment.lifecycle_stage == ACTIVE,
            )
        ).all()
        ids = select(SqlRun.run_uuid).where(SqlRun.run_uuid.in_(tagged), SqlRun.lifecycle_stage == ACTIVE)
        tag_rows = session.execute(
            select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).where(
                SqlTag.run_uuid.in_(ids), SqlTag.key.in_(list(tags))
            )
        ).all()
        param_rows = session.execute(
            select(SqlParam.run_uuid, SqlParam.key, SqlParam.value).where(
                SqlParam.run_uuid.in_(ids), SqlParam.key.in_(list(params))
            )
        ).all()
        metric_rows = session.execute(
            select(SqlLatestMetric.run_uuid, SqlLatestMetric.key, SqlLatestMetric.value, SqlLatestMetric.is_nan).where(
                SqlLatestMetric.run_uuid.in_(ids),
                or_(*[SqlLatestMetric.key.like(f"{prefix}%") for prefix in metric_prefixes]),
            )
        ).all()
    return runs, tag_rows, param_rows, metric_rows


def _runs_frame(runs: list, tag_rows: list, param_rows: list, metric_rows: list) -> pd.DataFrame:
    """The rows as `search_runs` would give them: one row per run, newest first."""
    frame = pd.DataFrame(runs, columns=["run_id", "status", "start_time", "end_time", "experiment_id"])
    frame["start_time"], frame["end_time"] = _time(frame["start_time"]), _time(frame["end_time"])
    frame["experiment_id"] = frame["experiment_id"].astype(str)
    frame = frame.set_index("run_id")
    parts = [frame]
    for prefix, rows in (("tags", tag_rows), ("params", param_rows)):
        if rows:
            long = pd.DataFrame(rows, columns=["run_id", "key", "value"])
            wide = long.pivot(index="run_id", columns="key", values="value")
            parts.append(wide.rename(columns=lambda k, p=prefix: f"{p}.{k}"))
    if metric_rows:
        long = pd.DataFrame(metric_rows, columns=["run_id", "key", "value", "is_nan"])
        long["value"] = np.where(long["is_nan"].astype(bool), np.nan, long["value"].astype(float))
        wide = long.pivot(index="run_id", columns="key", values="value")
        parts.append(wide.rename(columns=lambda k: f"metrics.{k}"))
    out = pd.concat(parts, axis=1).reindex(frame.index)
    out = out.sort_values("start_time", ascending=False, kind="stable")  # search_runs' order: newest first
    return out.reset_index().rename(columns={"index": "run_id"})


def read_histories(run_ids: Sequence[str], keys: Sequence[str]) -> pd.DataFrame | None:
    """Every logged point of `keys` for `run_ids`: columns run_id, key, step, value (None when the
    store is not an SQL store or the read fails; the caller then uses MLflow's history API)."""
    store = _sql_store()
    if store is None:
        return None
    try:
        from mlflow.store.tracking.dbmodels.models import SqlMetric
        from sqlalchemy import select  # deferred: SQL stores only (see _sql_store)

        rows = []
        with store.ManagedSessionMaker() as session:
            for start in range(0, len(run_ids), 500):
                chunk = list(run_ids[start : start + 500])
                rows += map(
                    tuple,
                    session.execute(  # plain tuples: pandas probes Row objects field by field
                        select(
                            SqlMetric.run_uuid, SqlMetric.key, SqlMetric.step, SqlMetric.value, SqlMetric.is_nan
                        ).where(SqlMetric.run_uuid.in_(chunk), SqlMetric.key.in_(list(keys)))
                    ).all(),
                )
    except Exception:
        return None
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "is_nan"])
    frame["value"] = np.where(frame["is_nan"].astype(bool), np.nan, frame["value"].astype(float))
    return frame.drop(columns="is_nan").sort_values(["run_id", "key", "step"], kind="stable", ignore_index=True)
