"""Per-variant statistics over seeds: mean ± std (n), Δ vs the baseline with its CI and a
Holm-corrected paired t-test, seeds needed for a non-significant Δ, and the reference row.

Only FINISHED runs are averaged. Failed, still running or missing seeds are never
filled in: they lower n and are named in the variant's flag. The test is a
two-sided paired t-test (`scipy.stats.ttest_rel`) over the seeds that both the
variant and the baseline finished; within one table and metric the variants' p-values
are Holm-corrected (`significance.holm`). Δ is the difference of the two means shown;
its 95 % interval is t-based over the paired differences. Each cell is also tested
(one-sided) against the metric's strongest reference (`references`), and flagged when
it looks like a constant predictor.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench.errors import ConfigError
from workbench.reports import cost, references, significance, verdicts
from workbench.reports.improvement import Improvement, table_improvements, task_metrics
from workbench.reports.references import Reference
from workbench.reports.store import EVAL_PREFIX, FINISHED, Sweep
from workbench.sequential import Comparison

STATS = (
    "mean",
    "std",
    "n",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "n_pairs",
    "seeds_needed",
    "p_above_ref",
    "constant",
)
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
    references: dict[str, Reference] = field(default_factory=dict)  # metric -> its strongest reference
    device_hours: dict[str, float] = field(default_factory=dict)  # variant -> summed over its runs
    device_kind: str = "device"  # GPU | CPU | device (the cost column's unit)
    run_ids: dict[str, dict[int, str]] = field(default_factory=dict)  # variant -> seed -> run id
    verdict_metric: str = ""  # the objective the verdicts judge ("" = no verdict column)
    verdicts: dict[str, Comparison] = field(default_factory=dict)  # variant (not the baseline) -> its verdict
    design: str = ""  # the test behind the verdicts, in words (the caption names it)
    adaptive: bool = False  # seeds were added while comparisons were open
    improvements: dict[str, Improvement] = field(default_factory=dict)  # variant -> P(improvement) across tasks
    improvement_metrics: list[str] = field(default_factory=list)  # the one metric per task it averages over

    def cell(self, variant: str, metric: str, stat: str) -> float:
        return self.stats.loc[variant, (metric, stat)]

    def ranked(self, metric: str) -> tuple[set[str], set[str]]:
        """(best, second best) variants by mean for `metric`; ties share a rank."""
        means = self.stats[(metric, "mean")].dropna()
        if means.empty:
            return set(), set()
        lower = bool(LOWER_IS_BETTER.search(metric))
        levels = np.unique(means.to_numpy(dtype=float))
        levels = levels if lower else levels[::-1]
        ranks = [set(means.index[np.isclose(means.to_numpy(dtype=float), level)]) for level in levels[:2]]
        best = ranks[0]
        second = next((r for r in ranks[1:] if not r <= best), set()) - best
        return best, second

    def best(self, metric: str) -> set[str]:
        """Variants with the best mean for `metric` (ties all count)."""
        return self.ranked(metric)[0]

    @property
    def comparisons(self) -> int:
        """Variants compared with the baseline (the Holm family size of each metric)."""
        return max(0, len(self.variants) - (self.baseline in self.variants))


def paired_tests(variants: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p-values [V] and pair counts [V] of `significance.paired_tests` (kept for callers and tests)."""
    result = significance.paired_tests(variants, baseline)
    return result["p_value"], result["n_pairs"]


def paired_test(variant: np.ndarray, baseline: np.ndarray) -> tuple[float, int]:
    """`paired_tests` for one variant: (p-value, number of pairs)."""
    p_values, counts = paired_tests(np.asarray(variant, dtype=float)[:, None], baseline)
    return float(p_values[0]), int(counts[0])


def summarise(values: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """`values` (index = seed, columns = variant; NaN = no finished value) -> one row of STATS per variant
    (without the reference columns, which need the runs' reference values)."""
    matrix = values.to_numpy(dtype=float)
    has_base = baseline in values.columns
    base = matrix[:, values.columns.get_loc(baseline)] if has_base else np.full(len(values), math.nan)
    counts = (~np.isnan(matrix)).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: mean/std stay NaN
        means = np.nanmean(matrix, axis=0) if len(matrix) else np.full(matrix.shape[1], math.nan)
        stds = np.where(counts > 1, np.nanstd(matrix, axis=0, ddof=1), math.nan) if len(matrix) else means
        base_mean = np.nanmean(base) if len(base) else math.nan
    tests = significance.paired_tests(matrix, base)
    is_base = np.asarray(values.columns == baseline)
    p_values = np.where(is_base, math.nan, tests["p_value"])
    p_holm = significance.holm(p_values)
    needed = np.full(len(means), math.nan)
    wanted = ~np.isnan(p_values) & ~(p_holm < significance.ALPHA)  # tested, not significant
    needed[wanted] = significance.seeds_for_power_many(tests["diff_mean"][wanted], tests["diff_std"][wanted])
    return pd.DataFrame(
        {
            "mean": means,
            "std": stds,
            "n": counts,
            "delta": np.where(is_base, math.nan, means - base_mean),
            "ci_low": np.where(is_base, math.nan, tests["ci_low"]),
            "ci_high": np.where(is_base, math.nan, tests["ci_high"]),
            "p_value": p_values,
            "p_holm": p_holm,
            "n_pairs": np.where(is_base, 0, tests["n_pairs"]),
            "seeds_needed": needed,
            "p_above_ref": math.nan,
            "constant": False,
        },
        index=values.columns,
    )


def resolve_metrics(requested: list[str], runs: pd.DataFrame, strict: bool) -> list[str]:
    """Metric names -> full MLflow keys. A logged key ('train/loss/total'), 'retrieval/tr_r1',
    'eval/retrieval/tr_r1' and a task prefix ('retrieval' = all its keys) are accepted.
    `strict`: an unknown name is an error."""
    # a search over several sweeps has every sweep's columns: keep the ones with values
    any_logged = [c[len("metrics.") :] for c in runs.columns if c.startswith("metrics.") and runs[c].notna().any()]
    any_logged = [m for m in any_logged if not references.is_reference(m)]  # the reference row, not columns
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
    by_variant = {
        variant: dict(zip(group["seed"], group["state"], strict=True))
        for variant, group in runs.assign(state=state).groupby("variant", sort=False)
    }
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


def reference_columns(values: pd.DataFrame, metric: str, reference: Reference | None) -> dict[str, np.ndarray]:
    """`p_above_ref` and `constant` of `metric` per variant, from `values` (the metric's and its
    references' per-seed values, index = seed, columns = (key, variant) in the table's variant order)."""
    shown = values[metric].to_numpy(dtype=float)
    missing = np.full(shown.shape, math.nan)
    constants = [
        values[k].to_numpy(dtype=float) if k in values else missing
        for kind, k in references.reference_keys(metric).items()
        if kind in references.CONSTANT_KINDS
    ]
    out = {"constant": references.constant_many(shown, constants), "p_above_ref": np.full(shown.shape[1], math.nan)}
    if reference is not None:
        ref = values[reference.key].to_numpy(dtype=float) if reference.key in values else missing
        ref = np.where(np.isnan(ref), reference.mean, ref)  # a run that did not log it: the sweep's level
        out["p_above_ref"] = significance.above_reference_many(shown, ref)
    return out


def ablation_table(sweep: Sweep, metrics: list[str] | None = None) -> AblationTable:
    """Summarise one sweep: rows = variants (baseline first), per metric STATS, plus flags,
    the reference row, cost per variant and the run ids behind each cell."""
    spec, runs = sweep.spec, sweep.runs
    notes = list(sweep.notes)
    keys = _shown_metrics(sweep, metrics, notes)
    ref_keys = [k for m in keys for k in references.reference_keys(m).values() if f"metrics.{k}" in runs]
    values = metric_values(runs, keys + [k for k in ref_keys if k not in keys])
    ref_means = {k: float(values[k].mean()) for k in ref_keys if values[k].notna().any()}
    refs = {
        m: r for m in keys if (r := references.strongest(m, ref_means)) is not None and not LOWER_IS_BETTER.search(m)
    }
    # index = seed, columns = (key, variant): every metric and reference as a [seeds, variants] matrix
    wide = (
        values.unstack("variant")
        if len(values)
        else pd.DataFrame(columns=pd.MultiIndex.from_tuples([], names=[None, "variant"]))
    )
    wide = wide.reindex(columns=pd.MultiIndex.from_product([list(values.columns), list(spec.variants)]))
    columns = {}
    for key in keys:
        summary = summarise(wide[key], spec.baseline)
        for stat, column in reference_columns(wide, key, refs.get(key)).items():
            summary[stat] = column
        columns[key] = summary.reindex(spec.variants)
    stats_frame = pd.concat(columns, axis=1) if columns else pd.DataFrame(index=spec.variants)
    stats_frame.index.name = "variant"
    per_task = task_metrics(keys, LOWER_IS_BETTER.search)
    improvements = table_improvements(wide, per_task, list(spec.variants), spec.baseline)
    judged = verdicts.objective_of(spec, keys)
    found, design = verdicts.table_verdicts(spec, wide[judged]) if judged else ({}, None)
    return AblationTable(
        sweep=spec.name,
        baseline=spec.baseline,
        variants=list(spec.variants),
        metrics=keys,
        stats=stats_frame,
        flags=_adaptive_flags(runs, spec.variants, keys)
        if design and design.sequential
        else seed_flags(runs, spec.variants, spec.seeds, keys),
        expected_seeds=list(spec.seeds),
        notes=notes + _no_finished_note(runs),
        references=refs,
        device_hours=cost.device_hours(runs, list(spec.variants)),
        device_kind=cost.device_kind(runs),
        run_ids=_finished_run_ids(runs),
        verdict_metric=judged if found else "",
        verdicts=found,
        design=design.name(verdicts.objective_delta(spec)) if design else "",
        adaptive=bool(design and design.sequential),
        improvements=improvements,
        improvement_metrics=per_task if improvements else [],
    )


def _shown_metrics(sweep: Sweep, metrics: list[str] | None, notes: list[str]) -> list[str]:
    """The metric keys the table shows: those asked for (an unknown one is an error), else the
    sweep's own, less those no run logged (a note, not a column of dashes)."""
    runs = sweep.runs
    keys = resolve_metrics(list(metrics or sweep.spec.metrics), runs, strict=bool(metrics))
    if not metrics:
        unlogged = [k for k in keys if f"metrics.{k}" not in runs or runs[f"metrics.{k}"].isna().all()]
        if unlogged and len(unlogged) < len(keys):
            notes.append(f"not logged by any run, left out: {', '.join(unlogged)}")
            keys = [k for k in keys if k not in unlogged]
    return keys


def _finished_run_ids(runs: pd.DataFrame) -> dict[str, dict[int, str]]:
    """variant -> seed -> run id of its finished runs (seeds in order)."""
    finished = runs[runs["status"] == FINISHED].dropna(subset=["seed"])
    run_ids: dict[str, dict[int, str]] = {}
    for variant, seed, run_id in zip(finished["variant"], finished["seed"], finished["run_id"], strict=True):
        run_ids.setdefault(variant, {})[int(seed)] = run_id
    return {v: dict(sorted(s.items())) for v, s in run_ids.items()}


def _adaptive_flags(runs: pd.DataFrame, variants: list[str], metrics: list[str]) -> dict[str, str]:
    """Adaptive seeds: a variant is promised only the seeds the sweep queued for it (those it has runs of)."""
    flags = {}
    for variant in variants:
        mine = runs[runs["variant"] == variant]
        seeds = sorted(int(s) for s in mine["seed"].dropna().unique())
        flags[variant] = seed_flags(mine, [variant], seeds, metrics)[variant]
    return flags


def _no_finished_note(runs: pd.DataFrame) -> list[str]:
    """A sweep none of whose runs finished still gets its report: one that says so."""
    if len(runs) and (runs["status"] == FINISHED).any():
        return []
    states = runs["status"].value_counts().to_dict() if len(runs) else {}
    seen = ", ".join(f"{n} {state.lower()}" for state, n in sorted(states.items())) or "no runs"
    return [f"no finished runs in this sweep yet ({seen}): nothing to average or compare"]
