"""Step histories of the training losses (`train/loss/<name>`) for many runs at once."""

from __future__ import annotations

from collections.abc import Sequence

import mlflow
import pandas as pd

from workbench.reports import sql_read
from workbench.reports.store import gc_paused

LOSS_PREFIX = "train/loss/"
BULK_RUNS = 100  # run ids per bulk request


def loss_keys(runs: pd.DataFrame) -> list[str]:
    """The raw loss keys the runs logged (`train/loss/total` last)."""
    keys = sorted(c[len("metrics.") :] for c in runs.columns if c.startswith(f"metrics.{LOSS_PREFIX}"))
    keys = [k for k in keys if runs[f"metrics.{k}"].notna().any()]
    return sorted(keys, key=lambda k: (k.endswith("/total"), k))


def _bulk_fetcher():
    """The store's one-query-per-key history reader when it has one (SQL stores), else None.

    `MlflowClient.get_metric_history` costs one round trip per run and key; a
    1,000-run report needs the bulk read to stay in seconds. The store is reached
    through the client because MLflow exposes the bulk call only there.
    """
    store = getattr(getattr(mlflow.MlflowClient(), "_tracking_client", None), "store", None)
    return getattr(store, "get_metric_history_bulk", None)


def loss_histories(run_ids: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
    """Columns run_id, key, step, value (every logged point) of the current tracking store."""
    run_ids = list(run_ids)
    with gc_paused():
        fast = sql_read.read_histories(run_ids, list(keys))  # SQL stores: one query per 500 runs
    if fast is not None:
        return fast
    rows: list[tuple[str, str, int, float]] = []
    bulk = _bulk_fetcher()
    with gc_paused():
        for key in keys:
            if bulk is not None:
                for start in range(0, len(run_ids), BULK_RUNS):
                    chunk = run_ids[start : start + BULK_RUNS]
                    rows += [(m.run_id, key, m.step, m.value) for m in bulk(chunk, key, max_results=10**9)]
            else:
                client = mlflow.MlflowClient()
                for run_id in run_ids:
                    rows += [(run_id, key, m.step, m.value) for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
