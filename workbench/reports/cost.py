"""What an ablation row cost: device-hours summed over its seeds' runs.

A run's cost is its wall time (MLflow start to end) times the devices it held
(tag `workbench.devices`, written by training = the number of ranks; 1 when absent,
e.g. runs from before the tag existed). Failed runs count too: they were paid for.
Runs still RUNNING have no end time and are left out.
"""

from __future__ import annotations

import pandas as pd

from workbench import tags

DEVICES_TAG = tags.DEVICES
DEVICE_KIND_TAG = tags.DEVICE_KIND


def run_device_hours(runs: pd.DataFrame) -> pd.Series:
    """Per run (aligned with `runs`): hours x devices; NaN without an end time."""
    if "end_time" not in runs or "start_time" not in runs:
        return pd.Series(float("nan"), index=runs.index)
    hours = (pd.to_datetime(runs["end_time"]) - pd.to_datetime(runs["start_time"])).dt.total_seconds() / 3600.0
    devices = pd.to_numeric(runs.get(f"tags.{DEVICES_TAG}", pd.Series(index=runs.index, dtype=object)), errors="coerce")
    return hours * devices.fillna(1.0).clip(lower=1.0)


def device_hours(runs: pd.DataFrame, variants: list[str]) -> dict[str, float]:
    """variant -> device-hours over its runs (0.0 for a variant without an ended run)."""
    per_run = run_device_hours(runs)
    summed = per_run.groupby(runs["variant"]).sum(min_count=1) if len(runs) else pd.Series(dtype=float)
    return {v: float(summed.get(v, 0.0)) if pd.notna(summed.get(v, 0.0)) else 0.0 for v in variants}


def device_kind(runs: pd.DataFrame) -> str:
    """'GPU', 'CPU' or 'device' for the column header: what the runs ran on."""
    kinds = set(runs.get(f"tags.{DEVICE_KIND_TAG}", pd.Series(dtype=object)).dropna().astype(str).str.lower())
    if kinds and kinds <= {"cuda"}:
        return "GPU"
    if kinds and kinds <= {"cpu"}:
        return "CPU"
    return "device"
