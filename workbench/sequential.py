"""The sequential design behind adaptive seeds: when may a sweep stop adding seeds, and what does
each comparison (a variant vs the baseline, paired by seed) then say.

Design (named in every report caption as `DESIGN_NAME`):

* **Looks.** After every round of paired seeds, from `min` to `max` seeds: a group-sequential
  design with `max - min + 1` planned looks at information fraction n / max.
* **Boundaries.** Lan–DeMets alpha spending with the O'Brien–Fleming-type function
  α*(t) = 2 − 2Φ(z_{1−α/2} / √t): at look k the design may have spent α*(n_k / max) in all.
  With 3..16 seeds a normal boundary would be wrong (the paired t statistic has 2..15
  degrees of freedom), so the per-look critical values of |t| are calibrated for the paired
  t statistic itself: `CALIBRATION_PATHS` simulated null sequences (a fixed seed, so every
  process and every resume computes the same boundaries), each boundary the quantile that
  spends exactly the increment α*(t_k) − α*(t_{k−1}) among the sequences not stopped yet.
  The t statistic is scale-free, so these hold for any noise level. A single look (a plain
  `seeds: N` sweep) uses the exact t quantile: the ordinary paired t-test.
* **Several variants.** Holm's step-down inside the group-sequential design (the sequentially
  rejective procedure of Maurer & Bretz 2013, Stat. Biopharm. Res. 5:311): each undecided
  comparison is tested at α / (comparisons not yet found better or worse); a rejection passes
  its α on to the others, at that look and later ones.
* **Equivalence.** With a smallest effect of interest δ, a comparison is *equivalent* when its
  repeated confidence interval, Δ̄ ± c_k · s / √n (the boundary of its current level, so it
  holds at every look at once; Jennison & Turnbull's RCI), lies inside ±δ: two one-sided
  tests. Equivalence stops a comparison without rejecting it: it keeps its share of α.
* **Verdicts.** better / worse (direction-aware), equivalent, open (more seeds may decide it),
  unresolved (max reached), baseline.

Everything here is pure (numpy / scipy, no I/O): the sweep decides from its study, the report
from MLflow, and both get the same answer. `benchmarks/bench_sequential.py` checks the error
rates by simulation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS_TO_RESOLVE = 1000  # "more than this many" is reported as such
CALIBRATION_PATHS = 400_000
CALIBRATION_SEED = 20240525
CALIBRATION_CHUNK = 50_000
SPENDING = ("obrien-fleming", "pocock")
DESIGN_NAME = (
    "group-sequential paired t-test (Lan–DeMets {spending} alpha spending over looks at "
    "{looks} paired seeds, t boundaries calibrated by simulation), Holm step-down across variants "
    "(Maurer & Bretz 2013){equivalence}"
)
FIXED_NAME = "paired t-test over {n} seeds, Holm-corrected across variants{equivalence}"

BETTER, WORSE, EQUIVALENT, OPEN, UNRESOLVED, BASELINE = (
    "better",
    "worse",
    "equivalent",
    "open",
    "unresolved",
    "baseline",
)
DECIDED = (BETTER, WORSE, EQUIVALENT)
VERDICTS = (BETTER, WORSE, EQUIVALENT, OPEN, UNRESOLVED, BASELINE)


@dataclass(frozen=True)
class Design:
    """Seeds from `min_seeds` to `max_seeds` (equal: a fixed design with one look), two-sided α."""

    min_seeds: int
    max_seeds: int
    alpha: float = ALPHA
    spending: str = "obrien-fleming"

    def __post_init__(self) -> None:
        if not 2 <= self.min_seeds <= self.max_seeds:
            raise ValueError(f"need 2 <= min_seeds <= max_seeds, got {self.min_seeds}, {self.max_seeds}")
        if self.spending not in SPENDING:
            raise ValueError(f"spending {self.spending!r}: one of {', '.join(SPENDING)}")

    @property
    def sequential(self) -> bool:
        return self.max_seeds > self.min_seeds

    @property
    def looks(self) -> tuple[int, ...]:
        return tuple(range(self.min_seeds, self.max_seeds + 1))

    def boundary(self, n: int, level: float) -> float:
        """The critical |t| at a look with `n` paired seeds for a comparison tested at `level`."""
        if not self.sequential:
            return float(stats.t.ppf(1 - level / 2, n - 1))
        if n not in self.looks:
            raise ValueError(f"{n} paired seeds is not a planned look ({self.min_seeds}..{self.max_seeds})")
        return float(t_boundaries(self.min_seeds, self.max_seeds, round(level, 12), self.spending)[n - self.min_seeds])

    def name(self, delta: float | None = None) -> str:
        equivalence = f"; equivalent: the repeated CI of Δ inside ±{delta:g}" if delta else ""
        if not self.sequential:
            return FIXED_NAME.format(n=self.max_seeds, equivalence=equivalence.replace("repeated ", ""))
        return DESIGN_NAME.format(
            spending="O'Brien–Fleming" if self.spending == "obrien-fleming" else "Pocock",
            looks=f"{self.min_seeds}..{self.max_seeds}",
            equivalence=equivalence,
        )


def spent(t: np.ndarray, alpha: float, spending: str) -> np.ndarray:
    """Lan–DeMets spending functions α*(t), t = information fraction in (0, 1]."""
    t = np.asarray(t, dtype=float)
    if spending == "pocock":
        return alpha * np.log1p((math.e - 1) * t)
    return 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / np.sqrt(t))


def paired_t_paths(paths: int, n: int, rng: np.random.Generator, effect: float = 0.0) -> np.ndarray:
    """The paired t statistic after 1..n seeds of `paths` simulated sequences of N(effect, 1)
    differences, shape [paths, n] (NaN at n = 1)."""
    d = rng.standard_normal((paths, n)) + effect
    return running_t(d)


def running_t(d: np.ndarray) -> np.ndarray:
    """t statistic of the mean of d[:, :k] for every k (rows = sequences); NaN where undefined."""
    k = np.arange(1, d.shape[1] + 1)
    total, squares = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
    mean = total / k
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (squares - k * mean * mean) / (k - 1)
        return np.where(k > 1, mean / np.sqrt(np.maximum(var, 0) / k), np.nan)


@functools.lru_cache(maxsize=64)
def t_boundaries(min_seeds: int, max_seeds: int, level: float, spending: str = "obrien-fleming") -> tuple[float, ...]:
    """Critical |t| per look n = min..max so that a null sequence crosses by look k with probability
    α*(n_k / max): calibrated on CALIBRATION_PATHS simulated null sequences (deterministic)."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    chunks = [
        np.abs(paired_t_paths(CALIBRATION_CHUNK, max_seeds, rng))[:, min_seeds - 1 :].astype(np.float32)
        for _ in range(CALIBRATION_PATHS // CALIBRATION_CHUNK)
    ]  # bounded memory: 400k x 30 looks ~ 48 MB
    t = np.concatenate(chunks)
    looks = np.arange(min_seeds, max_seeds + 1)
    budget = spent(looks / max_seeds, level, spending) * CALIBRATION_PATHS
    alive = np.ones(CALIBRATION_PATHS, dtype=bool)
    out = []
    for k in range(len(looks)):
        allowed = int(math.floor(budget[k] + 1e-9)) - int((~alive).sum())  # crossings this look may add
        values = np.sort(t[alive, k])[::-1]
        critical = math.inf if allowed <= 0 else float(values[min(allowed, len(values) - 1)])  # float32: ~1e-7 relative
        if allowed >= len(values):
            critical = 0.0
        out.append(critical)
        alive &= ~(t[:, k] > critical)
    return tuple(out)


@dataclass(frozen=True)
class Comparison:
    """One variant vs the baseline after the last look it took part in."""

    variant: str
    verdict: str  # one of VERDICTS
    n: int  # paired seeds
    delta: float  # mean paired difference, variant − baseline (NaN without pairs)
    ci_low: float  # repeated CI at the comparison's level (NaN below 2 pairs)
    ci_high: float
    t: float
    critical: float  # the boundary |t| had to reach at this look
    level: float  # the α this comparison was tested at (Holm share)
    seeds_to_resolve: float  # unresolved/open: paired seeds a fixed test would need for 80% power; else NaN

    @property
    def decided(self) -> bool:
        return self.verdict in DECIDED


def decide(
    diffs: dict[str, list[float]], design: Design, *, delta: float | None = None, maximize: bool = True
) -> dict[str, Comparison]:
    """Verdicts for paired differences (variant − baseline, in seed order) of every variant.

    Replays the looks min..max in order, as the sweep took them: at each look the comparisons
    still undecided that have that many pairs are tested (Holm step-down at that look), then
    checked for equivalence. A comparison with fewer than `min_seeds` pairs is open."""
    data = {v: np.asarray(d, dtype=float) for v, d in diffs.items()}
    m = len(data)
    decided: dict[str, str] = {}
    last: dict[str, tuple] = {}
    for n in design.looks:
        here = [v for v in data if v not in decided and len(data[v]) >= n]
        if not here:
            continue
        rows = {v: _look(data[v][:n]) for v in here}
        # Holm step-down at this look: strongest first, each at α / (not yet rejected)
        for v in sorted(here, key=lambda v: -abs(rows[v][2]) if math.isfinite(rows[v][2]) else 0.0):
            rejected = sum(verdict in (BETTER, WORSE) for verdict in decided.values())
            level = design.alpha / max(1, m - rejected)
            mean, sd, t = rows[v]
            critical = design.boundary(n, level)
            last[v] = (n, mean, sd, t, critical, level)
            if math.isfinite(t) and abs(t) >= critical:
                decided[v] = BETTER if (mean > 0) == maximize else WORSE
            else:
                break  # step-down: the rest are weaker
        for v in here:  # equivalence (never for a rejected one); a not-tested one gets its level now
            if v in decided:
                continue
            rejected = sum(verdict in (BETTER, WORSE) for verdict in decided.values())
            level = design.alpha / max(1, m - rejected)
            mean, sd, t = rows[v]
            critical = design.boundary(n, level)
            last[v] = (n, mean, sd, t, critical, level)
            if delta and math.isfinite(sd):
                half = critical * sd / math.sqrt(n)
                if -delta < mean - half and mean + half < delta:
                    decided[v] = EQUIVALENT
    out = {}
    for v, d in data.items():
        if v not in last:
            mean = float(d.mean()) if len(d) else math.nan
            out[v] = Comparison(
                v, OPEN, len(d), mean, math.nan, math.nan, math.nan, math.nan, design.alpha / max(1, m), math.nan
            )
            continue
        n, mean, sd, t, critical, level = last[v]
        verdict = decided.get(v) or (UNRESOLVED if n >= design.max_seeds else OPEN)
        half = critical * sd / math.sqrt(n) if math.isfinite(sd) and math.isfinite(critical) else math.nan
        need = seeds_to_resolve(mean, sd, level) if verdict in (OPEN, UNRESOLVED) else math.nan
        out[v] = Comparison(v, verdict, n, mean, mean - half, mean + half, t, critical, level, need)
    return out


def _look(d: np.ndarray) -> tuple[float, float, float]:
    """(mean, sd, t) of paired differences; t is NaN when undefined (one pair, or no spread)."""
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    varies = n > 1 and float(np.ptp(d)) > 1e-12 * max(1.0, float(np.abs(d).max()))
    t = mean / (sd / math.sqrt(n)) if varies else math.nan
    return mean, sd, t


def seeds_to_resolve(mean: float, sd: float, level: float = ALPHA, power: float = POWER) -> float:
    """Paired seeds a fixed two-sided t-test at `level` needs to detect `mean` with `power` if the
    differences keep the spread `sd` (NaN when undefined, inf beyond MAX_SEEDS_TO_RESOLVE)."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or sd <= 0 or mean == 0:
        return math.nan
    effect = abs(mean) / sd
    z = stats.norm.ppf(1 - level / 2) + stats.norm.ppf(power)
    n = max(2, math.floor((z / effect) ** 2))
    while n <= MAX_SEEDS_TO_RESOLVE:
        critical = stats.t.ppf(1 - level / 2, n - 1)
        shift = effect * math.sqrt(n)
        if stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift) >= power:
            return float(n)
        n += 1
    return math.inf


def next_round(verdicts: dict[str, Comparison]) -> list[str]:
    """The variants that get the next seed (with the baseline): those still open."""
    return [v for v, c in verdicts.items() if c.verdict == OPEN]
