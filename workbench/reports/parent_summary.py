"""The sweep's MLflow parent run carries its summary, so the MLflow UI compares variants
without the report: per-variant mean/std metrics, the table (`mlflow.log_table`), the
report files as artifacts, and a tag with the report page's local path.

Metric keys: `summary/<task>/<metric>/<variant>/{mean,std}` (MLflow keys allow letters,
digits, `_ - . / ` and space; other characters of a variant name become `_`, and where two
names would then share a key each changed one gets a short hash of itself, `tags.key_parts`). Child
runs' keys (`eval/...`) are never repeated on the parent.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Metric

from workbench import report_paths, tags
from workbench.reports.stats import AblationTable

TABLE_ARTIFACT = f"{report_paths.ARTIFACT_DIR}/ablation_table.json"
SUMMARY_PREFIX = "summary/"
REPORT_TAG = tags.REPORT  # local path of the sweep's report page


def metric_key(metric: str, variant_part: str, stat: str) -> str:
    """`variant_part`: the variant's name as `tags.key_parts` spells it among the sweep's variants."""
    return f"{SUMMARY_PREFIX}{metric.removeprefix('eval/')}/{variant_part}/{stat}"


def summary_metrics(table: AblationTable) -> dict[str, float]:
    """Per variant and metric: mean and std over seeds (std only with 2+ seeds)."""
    out = {}
    parts = tags.key_parts(table.variants)
    for metric in table.metrics:
        for variant in table.variants:
            for stat in ("mean", "std"):
                value = float(table.cell(variant, metric, stat))
                if not math.isnan(value):
                    out[metric_key(metric, parts[variant], stat)] = value
    return out


def table_frame(table: AblationTable) -> pd.DataFrame:
    """The ablation table as rows for `log_table`: variant, device_hours, flag, `<metric> <stat>`."""
    rows = []
    for variant in table.variants:
        row = {
            "variant": variant,
            "baseline": variant == table.baseline,
            "device_hours": table.device_hours.get(variant, math.nan),
            "flag": table.flags.get(variant, ""),
        }
        for metric in table.metrics:
            for stat in ("mean", "std", "n", "delta", "ci_low", "ci_high", "p_holm", "seeds_needed"):
                row[f"{metric} {stat}"] = float(table.cell(variant, metric, stat))
            ref = table.references.get(metric)
            row[f"{metric} reference"] = f"{ref.kind} {ref.mean:.4g}" if ref else ""
        if table.verdict_metric:  # the verdict on the objective, as the sweep's tags say it
            found = table.verdicts.get(variant)
            row["verdict"] = "baseline" if variant == table.baseline else (found.verdict if found else "")
        rows.append(row)
    return pd.DataFrame(rows)


def log_table(client: mlflow.MlflowClient, run_id: str, frame: pd.DataFrame) -> None:
    """`log_table` the first time; a report run again replaces the table (log_table would append
    the rows to the existing artifact, repeating every variant)."""
    folder, _, name = TABLE_ARTIFACT.rpartition("/")
    if any(info.path == TABLE_ARTIFACT for info in client.list_artifacts(run_id, folder)):
        client.log_text(run_id, frame.to_json(orient="split", index=False), TABLE_ARTIFACT)
    else:
        client.log_table(run_id, data=frame, artifact_file=TABLE_ARTIFACT)


def log_summary(parent_run_id: str, table: AblationTable, files: list[Path], page: Path | None) -> None:
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in summary_metrics(table).items()]
    for start in range(0, len(metrics), 1000):
        client.log_batch(parent_run_id, metrics=metrics[start : start + 1000])
    log_table(client, parent_run_id, table_frame(table))
    for path in files:
        client.log_artifact(parent_run_id, str(path), report_paths.ARTIFACT_DIR)
    if page is not None:
        client.set_tag(parent_run_id, REPORT_TAG, str(page.resolve()))
