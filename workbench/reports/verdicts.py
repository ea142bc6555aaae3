"""The verdict of every variant vs the baseline on the sweep's objective, as the sweep decided it.

The same rule the sweep ran (`workbench.sequential.decide`), applied to the finished runs in
MLflow: paired differences (variant − baseline) over the seeds both finished, in the sweep's
seed order. An adaptive sweep (`sequential` in its sweep.yaml) uses its group-sequential design;
a fixed one a single look at all its seeds: the paired t-test, Holm-corrected. So the report
shows what the sweep's tags `workbench.verdict.<variant>` say, also for a sweep still running
(`open`) or read again later.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workbench.reports.store import SweepSpec
from workbench.sequential import Comparison, Design, decide


def design_of(spec: SweepSpec, pairs: int) -> Design | None:
    """The sweep's design: its sequential one, else one look at the most pairs any variant has."""
    seq = spec.sequential
    if seq.get("min_seeds") and seq.get("max_seeds"):
        return Design(
            int(seq["min_seeds"]),
            int(seq["max_seeds"]),
            float(seq.get("alpha", 0.05)),
            str(seq.get("spending", "obrien-fleming")),
        )
    return Design(pairs, pairs) if pairs >= 2 else None


def objective_of(spec: SweepSpec, metrics: list[str]) -> str | None:
    """The metric the verdicts judge: the sweep's objective when the table shows it, else none."""
    metric = spec.objective or (spec.metrics[0] if spec.metrics else "")
    return metric if metric in metrics else None


def table_verdicts(spec: SweepSpec, values: pd.DataFrame) -> tuple[dict[str, Comparison], Design | None]:
    """`values`: the objective per seed (index) and variant (columns), NaN = no finished run."""
    if spec.baseline not in values.columns or len(values.columns) < 2:
        return {}, None
    order = [s for s in spec.seeds if s in values.index] + [s for s in values.index if s not in spec.seeds]
    frame = values.reindex(order)
    base = frame[spec.baseline].to_numpy(dtype=float)
    diffs = {}
    for variant in frame.columns:
        if variant == spec.baseline:
            continue
        d = frame[variant].to_numpy(dtype=float) - base
        diffs[variant] = d[~np.isnan(d)].tolist()
    design = design_of(spec, max((len(d) for d in diffs.values()), default=0))
    if design is None:
        return {}, None
    if not design.sequential:  # a fixed sweep whose seeds all finished is one look at all of them
        diffs = {v: d[: design.max_seeds] for v, d in diffs.items()}
    maximize = spec.direction != "minimize"
    return decide(diffs, design, delta=objective_delta(spec), maximize=maximize), design


def objective_delta(spec: SweepSpec) -> float | None:
    """The smallest effect of interest on the objective (None: no equivalence verdicts)."""
    metric = spec.objective or (spec.metrics[0] if spec.metrics else "")
    value = spec.delta.get(metric)
    return value if value is not None and math.isfinite(value) and value > 0 else None
