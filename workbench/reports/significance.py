"""The tests behind a table's marks: paired t-tests vs the baseline, Holm's correction,
a t-based confidence interval for Δ, the seeds a Δ would need, and "above the reference".

scipy does the distributions (t, non-central t); only Holm's step-down (a few
lines, not in scipy) is written here. All functions take plain arrays so tests
can check them on hand-computed cases.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

ALPHA = 0.05
STRONG_ALPHA = 0.01
POWER = 0.8
MAX_SEEDS = 1000  # "more than this many seeds" is reported as such, not searched further
CONFIDENCE = 0.95


def _varies(diff: np.ndarray) -> np.ndarray:
    """Per column: do the paired differences vary? (A t statistic needs a spread.)"""
    return np.ptp(diff, axis=0) > 1e-12 * np.maximum(1.0, np.abs(diff).max(axis=0))


def paired_tests(variants: np.ndarray, baseline: np.ndarray) -> dict[str, np.ndarray]:
    """Paired t-tests of every column of `variants` [seeds, V] against `baseline` [seeds]
    over the seeds both have (NaN = absent).

    Returns arrays [V]: `p_value` (two-sided), `n_pairs`, `diff_mean`, `diff_std` (ddof=1),
    `ci_low`/`ci_high` (t-based 95 % interval of the mean paired difference).
    p is NaN with fewer than 2 pairs, or when the differences do not vary (the t
    statistic is then undefined, and scipy's p = 0 would claim a certainty two seeds
    cannot give). Columns with the same missing seeds share one vectorised scipy call.
    """
    variants = np.asarray(variants, dtype=float)
    if variants.ndim != 2:  # (0, V) stays as it is: a sweep with no finished seed yet
        variants = variants.reshape(len(baseline), -1)
    baseline = np.asarray(baseline, dtype=float)
    width = variants.shape[1]
    both = ~np.isnan(variants) & ~np.isnan(baseline)[:, None]
    counts = both.sum(axis=0)
    out = {name: np.full(width, math.nan) for name in ("p_value", "diff_mean", "diff_std", "ci_low", "ci_high")}
    out["n_pairs"] = counts
    patterns: dict[bytes, list[int]] = {}
    for column in np.flatnonzero(counts >= 1):
        patterns.setdefault(both[:, column].tobytes(), []).append(column)
    for columns in patterns.values():
        rows = both[:, columns[0]]
        cols = np.asarray(columns)
        a, b = variants[rows][:, cols], baseline[rows][:, None]
        diff = a - b
        n = diff.shape[0]
        out["diff_mean"][cols] = diff.mean(axis=0)
        if n < 2:
            continue
        sd = diff.std(axis=0, ddof=1)
        out["diff_std"][cols] = sd
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
        out["ci_low"][cols] = diff.mean(axis=0) - half
        out["ci_high"][cols] = diff.mean(axis=0) + half
        varies = _varies(diff)
        if varies.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out["p_value"][cols[varies]] = stats.ttest_rel(
                    a[:, varies], np.broadcast_to(b, a[:, varies].shape), axis=0
                ).pvalue
    return out


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values; NaN entries are not tests and do not count in m.

    Sorted ascending, the i-th smallest (1-based) is multiplied by (m - i + 1), then a
    running maximum keeps the adjusted values in the same order, capped at 1.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    if m == 0:
        return adjusted
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def paired_power(effect: float, n: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Power of a two-sided paired t-test with `n` pairs for a standardised effect |Δ| / sd."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) * np.sqrt(n)
    return stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)


def seeds_for_power(diff_mean: float, diff_std: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """Fewest paired seeds whose two-sided t-test at `alpha` detects `diff_mean` with `power`,
    if the paired differences keep the spread `diff_std`. NaN when undefined (no spread or no
    difference); inf beyond MAX_SEEDS. Searched from the normal approximation upwards."""
    if not (math.isfinite(diff_mean) and math.isfinite(diff_std)) or diff_std <= 0 or diff_mean == 0:
        return math.nan
    effect = abs(diff_mean) / diff_std
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    start = max(2, math.floor((z / effect) ** 2))
    if start > MAX_SEEDS:
        return math.inf
    while start <= MAX_SEEDS:
        window = np.arange(start, min(start + 16, MAX_SEEDS + 1))
        enough = np.flatnonzero(paired_power(effect, window, alpha) >= power)
        if len(enough):
            return float(window[enough[0]])
        start = int(window[-1]) + 1
    return math.inf


def seeds_for_power_many(
    diff_mean: np.ndarray, diff_std: np.ndarray, power: float = POWER, alpha: float = ALPHA
) -> np.ndarray:
    """`seeds_for_power` for many cells at once (one non-central t call over a window of n per cell)."""
    diff_mean, diff_std = np.asarray(diff_mean, dtype=float), np.asarray(diff_std, dtype=float)
    out = np.full(diff_mean.shape, math.nan)
    ok = np.isfinite(diff_mean) & np.isfinite(diff_std) & (diff_std > 0) & (diff_mean != 0)
    if not ok.any():
        return out
    effect = np.abs(diff_mean[ok]) / diff_std[ok]
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    start = np.maximum(2, np.floor((z / effect) ** 2))
    window = start[:, None] + np.arange(16)[None, :]
    df = window - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = effect[:, None] * np.sqrt(window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reached = (stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)) >= power
    found = np.where(reached.any(axis=1), window[np.arange(len(window)), reached.argmax(axis=1)], math.nan)
    found = np.where(start > MAX_SEEDS, math.inf, found)
    found = np.where(found > MAX_SEEDS, math.inf, found)
    slow = np.flatnonzero(np.isnan(found))  # not within the window: search on (rare)
    for i in slow:
        found[i] = seeds_for_power(float(effect[i]), 1.0, power, alpha)
    out[ok] = found
    return out


def above_reference_many(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per column of `values` [seeds, V] vs `reference` [seeds, V]: the one-sided p-value that the
    values exceed the reference (paired per run; NaN pairs dropped).

    Fewer than 2 pairs: NaN (not shown to be above). Differences without spread: 0 when all
    are above, 1 otherwise (a deterministic gap needs no test, and a t statistic is undefined).
    """
    values, reference = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    diff = values - reference
    n = (~np.isnan(diff)).sum(axis=0)
    out = np.full(diff.shape[1], math.nan)
    tested = n >= 2
    if not tested.any():
        return out
    d = diff[:, tested]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(d, axis=0)
        sd = np.nanstd(d, axis=0, ddof=1)
        spread = np.nanmax(d, axis=0) - np.nanmin(d, axis=0)
        flat = spread <= 1e-12 * np.maximum(1.0, np.nanmax(np.abs(d), axis=0))
        t = mean / (sd / np.sqrt(n[tested]))
        p = stats.t.sf(t, n[tested] - 1)
    out[tested] = np.where(flat, np.where(mean > 0, 0.0, 1.0), p)
    return out


def marks(p_adjusted: float) -> str:
    """'‡' below STRONG_ALPHA, '†' below ALPHA, '' otherwise (NaN: no test)."""
    if p_adjusted is None or math.isnan(p_adjusted):
        return ""
    return "‡" if p_adjusted < STRONG_ALPHA else "†" if p_adjusted < ALPHA else ""
