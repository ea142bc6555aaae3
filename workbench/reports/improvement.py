"""Several tasks at once: the probability of improvement over the baseline, in the style of rliable
(Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice").

For one task, P(X > Y) is the chance that a run of the variant (a random seed) scores above a
run of the baseline (a random seed), ties counting half: the Mann–Whitney U statistic over
n·m pairs. Across tasks it is the mean of the per-task values, so every task weighs the same
whatever its scale. Its 95 % CI is a stratified bootstrap: seeds are resampled with replacement
within each task and each variant, `BOOTSTRAP` times with a fixed seed (the same report twice
gives the same interval). 0.5 = no better than the baseline; an interval above 0.5 = the
variant tends to win across tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

BOOTSTRAP = 2000
SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Improvement:
    probability: float  # mean over tasks of P(variant run > baseline run)
    ci_low: float
    ci_high: float
    tasks: int


def probability(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + ½ P(X = Y) over all pairs of x's and y's values (NaN when either is empty)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not len(x) or not len(y):
        return math.nan
    return float(((x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])).mean())


def _boot_probability(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, reps: int) -> np.ndarray:
    """`probability` on `reps` resamples (with replacement) of x and of y, vectorised: shape [reps]."""
    xs = x[rng.integers(0, len(x), (reps, len(x)))]
    ys = y[rng.integers(0, len(y), (reps, len(y)))]
    return ((xs[:, :, None] > ys[:, None, :]) + 0.5 * (xs[:, :, None] == ys[:, None, :])).mean(axis=(1, 2))


def improvement(
    variant: list[np.ndarray], baseline: list[np.ndarray], reps: int = BOOTSTRAP, seed: int = SEED
) -> Improvement:
    """Per task (list position) the variant's and the baseline's values over seeds -> the mean
    probability of improvement and its stratified-bootstrap CI (tasks without values are skipped)."""
    pairs = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in zip(variant, baseline, strict=True)]
    pairs = [(x[~np.isnan(x)], y[~np.isnan(y)]) for x, y in pairs]
    pairs = [(x, y) for x, y in pairs if len(x) and len(y)]
    if not pairs:
        return Improvement(math.nan, math.nan, math.nan, 0)
    point = float(np.mean([probability(x, y) for x, y in pairs]))
    rng = np.random.default_rng(seed)
    boots = np.mean([_boot_probability(x, y, rng, reps) for x, y in pairs], axis=0)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(boots, [tail, 100 - tail])
    return Improvement(point, float(low), float(high), len(pairs))


def task_metrics(metrics: list[str], lower_is_better) -> list[str]:
    """One headline metric per eval task of the table (the first shown), higher-is-better only."""
    chosen: dict[str, str] = {}
    for metric in metrics:
        parts = metric.split("/")
        if parts[0] == "eval" and len(parts) == 3 and not lower_is_better(metric):
            chosen.setdefault(parts[1], metric)
    return list(chosen.values())


def table_improvements(
    wide: pd.DataFrame, metrics: list[str], variants: list[str], baseline: str
) -> dict[str, Improvement]:
    """Every variant's probability of improvement over `baseline` across the tasks of `metrics`
    (`wide`: index = seed, columns = (metric, variant)). Empty with fewer than two tasks."""
    if len(metrics) < 2 or baseline not in variants:
        return {}
    out = {}
    for variant in variants:
        if variant == baseline:
            continue
        mine = [wide[(m, variant)].to_numpy(dtype=float) for m in metrics]
        base = [wide[(m, baseline)].to_numpy(dtype=float) for m in metrics]
        found = improvement(mine, base)
        if found.tasks >= 2:
            out[variant] = found
    return out
