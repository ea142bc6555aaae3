"""Per-variant statistics over seeds: mean ± std (n), Δ vs the baseline, paired t-test.

Only FINISHED runs are averaged. Failed, still running or missing seeds are never
filled in: they lower n and are named in the variant's flag. The test is a
two-sided paired t-test (`scipy.stats.ttest_rel`) over the seeds that both the
variant and the baseline finished; Δ is the difference of the two means shown.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from workbench.config import ConfigError
from workbench.reports.store import EVAL_PREFIX, FINISHED, Sweep

STATS = ("mean", "std", "n", "delta", "p_value", "n_pairs")
TEST_NAME = "two-sided paired t-test over seeds shared with the baseline (scipy.stats.ttest_rel)"
# What the table shows when neither the user nor the sweep names metrics (those logged are kept).
DEFAULT_METRICS = (
    "eval/retrieval/tr_r1",
    "eval/retrieval/ir_r1",
    "eval/retrieval/r_mean",
    "eval/video_retrieval/tr_r1",
    "eval/video_retrieval/ir_r1",
    "eval/vqa/acc",
    "eval/nlvr/acc",
    "eval/ve/acc",
    "eval/attention/in_object",
)
LOWER_IS_BETTER = re.compile(r"loss")


@dataclass(eq=False)  # compared (and cached) by identity
class AblationTable:
    """One sweep's numbers; every rendering (md, csv, latex, html) is made from it."""

    sweep: str
    baseline: str
    variants: list[str]  # baseline first, then the sweep's order
    metrics: list[str]  # full MLflow keys, e.g. eval/retrieval/tr_r1
    stats: pd.DataFrame  # index = variant, columns = MultiIndex (metric, stat in STATS)
    flags: dict[str, str]  # variant -> "" or e.g. "failed: seed 2"
    expected_seeds: list[int]
    notes: list[str] = field(default_factory=list)

    def cell(self, variant: str, metric: str, stat: str) -> float:
        return self.stats.loc[variant, (metric, stat)]

    def best(self, metric: str) -> set[str]:
        """Variants with the best mean for `metric` (ties all count)."""
        means = self.stats[(metric, "mean")].dropna()
        if means.empty:
            return set()
        target = means.min() if LOWER_IS_BETTER.search(metric) else means.max()
        return set(means.index[np.isclose(means.to_numpy(dtype=float), target)])


def paired_tests(variants: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paired t-tests of every column of `variants` [seeds, V] against `baseline` [seeds]
    over the seeds both have (NaN = absent): p-values [V] and pair counts [V].

    p is NaN with fewer than 2 pairs, or when the differences do not vary (the t
    statistic is then undefined, and scipy's p = 0 would claim a certainty two seeds
    cannot give). Columns with the same missing seeds share one vectorised scipy call.
    """
    variants = np.asarray(variants, dtype=float)
    if variants.ndim != 2:  # (0, V) stays as it is: a sweep with no finished seed yet
        variants = variants.reshape(len(baseline), -1)
    baseline = np.asarray(baseline, dtype=float)
    both = ~np.isnan(variants) & ~np.isnan(baseline)[:, None]
    counts = both.sum(axis=0)
    p_values = np.full(variants.shape[1], math.nan)
    patterns: dict[bytes, list[int]] = {}
    for column in np.flatnonzero(counts >= 2):
        patterns.setdefault(both[:, column].tobytes(), []).append(column)
    for columns in patterns.values():
        rows = both[:, columns[0]]
        a, b = variants[rows][:, columns], baseline[rows][:, None]
        diff = a - b
        varies = np.ptp(diff, axis=0) > 1e-12 * np.maximum(1.0, np.abs(diff).max(axis=0))
        if varies.any():
            chosen = np.asarray(columns)[varies]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                p_values[chosen] = stats.ttest_rel(a[:, varies], np.broadcast_to(b, a[:, varies].shape), axis=0).pvalue
    return p_values, counts


def paired_test(variant: np.ndarray, baseline: np.ndarray) -> tuple[float, int]:
    """`paired_tests` for one variant: (p-value, number of pairs)."""
    p_values, counts = paired_tests(np.asarray(variant, dtype=float)[:, None], baseline)
    return float(p_values[0]), int(counts[0])


def summarise(values: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """`values` (index = seed, columns = variant; NaN = no finished value) -> one row of STATS per variant."""
    matrix = values.to_numpy(dtype=float)
    has_base = baseline in values.columns
    base = matrix[:, values.columns.get_loc(baseline)] if has_base else np.full(len(values), math.nan)
    counts = (~np.isnan(matrix)).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: mean/std stay NaN
        means = np.nanmean(matrix, axis=0) if len(matrix) else np.full(matrix.shape[1], math.nan)
        stds = np.where(counts > 1, np.nanstd(matrix, axis=0, ddof=1), math.nan) if len(matrix) else means
        base_mean = np.nanmean(base) if len(base) else math.nan
    p_values, n_pairs = paired_tests(matrix, base)
    is_base = values.columns == baseline
    return pd.DataFrame(
        {
            "mean": means,
            "std": stds,
            "n": counts,
            "delta": np.where(is_base, math.nan, means - base_mean),
            "p_value": np.where(is_base, math.nan, p_values),
            "n_pairs": np.where(is_base, 0, n_pairs),
        },
        index=values.columns,
    )


def resolve_metrics(requested: list[str], runs: pd.DataFrame, strict: bool) -> list[str]:
    """Metric names -> full MLflow keys. A logged key ('train/loss/total'), 'retrieval/tr_r1',
    'eval/retrieval/tr_r1' and a task prefix ('retrieval' = all its keys) are accepted.
    `strict`: an unknown name is an error."""
    # a search over several sweeps has every sweep's columns: keep the ones with values
    any_logged = [c[len("metrics.") :] for c in runs.columns if c.startswith("metrics.") and runs[c].notna().any()]
    logged = [m for m in any_logged if m.startswith(EVAL_PREFIX)]
    if not requested:
        chosen = [m for m in DEFAULT_METRICS if m in logged]
        return chosen or sorted(logged)
    keys: list[str] = []
    for name in requested:
        if name in any_logged:  # an exact key, e.g. train/loss/total
            keys.append(name)
            continue
        full = name if name.startswith(EVAL_PREFIX) else f"{EVAL_PREFIX}{name}"
        under = [m for m in logged if m.startswith(f"{full}/")]
        if full in logged or not under:
            if strict and full not in logged:
                known = ", ".join(sorted(logged)) or "none"
                raise ConfigError(f"--metric: {name!r} is not logged by any run of this sweep (logged: {known})")
            keys.append(full)
        else:
            keys += sorted(under)
    return list(dict.fromkeys(keys))


def seed_flags(runs: pd.DataFrame, variants: list[str], seeds: list[int], metrics: list[str]) -> dict[str, str]:
    """Why a variant has fewer than the expected seeds: failed, running, missing, or no metric."""
    metric_columns = [f"metrics.{m}" for m in metrics]
    present = [c for c in metric_columns if c in runs]
    complete = runs[present].notna().all(axis=1) & (len(present) == len(metric_columns))
    state = runs["status"].str.lower().where(runs["status"] != FINISHED, "")
    state = state.where(~(runs["status"].eq(FINISHED) & ~complete), "incomplete metrics")
    by_variant = {variant: dict(zip(group["seed"], group["state"]))
                  for variant, group in runs.assign(state=state).groupby("variant", sort=False)}
    flags = {}
    for variant in variants:
        mine = by_variant.get(variant, {})
        problems: dict[str, list[str]] = {}
        for seed in seeds:
            what = mine.get(seed, "missing")
            if what:
                problems.setdefault(what, []).append(str(seed))
        extra = sorted(int(s) for s in mine if not pd.isna(s) and int(s) not in set(seeds))
        if extra:
            problems["extra"] = [str(s) for s in extra]
        flags[variant] = "; ".join(
            f"{what}: seed{'s' if len(ids) > 1 else ''} {', '.join(ids)}" for what, ids in problems.items()
        )
    return flags


def metric_values(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Finished runs' values: index (variant, seed), one float column per metric (NaN = not logged)."""
    finished = runs[runs["status"] == FINISHED].dropna(subset=["seed"])
    frame = pd.DataFrame(index=pd.MultiIndex.from_arrays([finished["variant"], finished["seed"].astype(int)]))
    for metric in metrics:
        column = f"metrics.{metric}"
        frame[metric] = finished[column].to_numpy(dtype=float) if column in finished else math.nan
    return frame[~frame.index.duplicated(keep="last")]


def ablation_table(sweep: Sweep, metrics: list[str] | None = None) -> AblationTable:
    """Summarise one sweep: rows = variants (baseline first), per metric STATS, plus flags."""
    spec, runs = sweep.spec, sweep.runs
    keys = resolve_metrics(list(metrics or spec.metrics), runs, strict=bool(metrics))
    values = metric_values(runs, keys)
    columns = {}
    for key in keys:
        by_seed = values[key].unstack("variant") if len(values) else pd.DataFrame()
        by_seed = by_seed.reindex(columns=spec.variants)
        columns[key] = summarise(by_seed, spec.baseline).reindex(spec.variants)
    stats_frame = pd.concat(columns, axis=1) if columns else pd.DataFrame(index=spec.variants)
    stats_frame.index.name = "variant"
    return AblationTable(
        sweep=spec.name,
        baseline=spec.baseline,
        variants=list(spec.variants),
        metrics=keys,
        stats=stats_frame,
        flags=seed_flags(runs, spec.variants, spec.seeds, keys),
        expected_seeds=list(spec.seeds),
        notes=list(sweep.notes) + _no_finished_note(runs),
    )


def _no_finished_note(runs: pd.DataFrame) -> list[str]:
    """A sweep none of whose runs finished still gets its report: one that says so."""
    if len(runs) and (runs["status"] == FINISHED).any():
        return []
    states = runs["status"].value_counts().to_dict() if len(runs) else {}
    seen = ", ".join(f"{n} {state.lower()}" for state, n in sorted(states.items())) or "no runs"
    return [f"no finished runs in this sweep yet ({seen}): nothing to average or compare"]
