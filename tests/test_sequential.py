"""The sequential design's decision rule (`workbench/sequential.py`) on hand-made cases: a clearly
better, a clearly worse, an equivalent and an open variant; the boundaries at their edges; Holm's
step-down; and the calibrated boundaries spending what Lan–DeMets allows (checked on independent
simulated sequences)."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from scipy import stats

from workbench import sequential
from workbench.sequential import Design, decide, spent, t_boundaries

Z4 = np.array([-1.5, -0.5, 0.5, 1.5]) / np.std([-1.5, -0.5, 0.5, 1.5], ddof=1)  # mean 0, sd 1


def with_t(t: float, n: int = 4, sd: float = 1.0) -> list[float]:
    """Paired differences of n = 4 seeds whose t statistic is exactly `t`."""
    assert n == 4
    return list(t * sd / math.sqrt(n) + sd * Z4)


def test_a_fixed_design_is_the_paired_t_test():
    assert Design(4, 4).boundary(4, 0.05) == pytest.approx(stats.t.ppf(0.975, 3))
    assert Design(4, 4).name().startswith("paired t-test over 4 seeds")


def test_clearly_better_clearly_worse_equivalent_and_open():
    design = Design(3, 5)
    found = decide(
        {
            "better": [5.0, 5.1, 4.9],
            "worse": [-5.0, -5.1, -4.9],
            "same": [0.01, -0.01, 0.0],
            "noisy": [3.0, -2.0, 1.0],
        },
        design,
        delta=1.0,
    )
    assert {v: c.verdict for v, c in found.items()} == {
        "better": "better",
        "worse": "worse",
        "same": "equivalent",
        "noisy": "open",
    }
    assert found["better"].n == 3 and found["better"].delta == pytest.approx(5.0)
    assert found["noisy"].ci_low < 0 < found["noisy"].ci_high
    # minimising (a loss): a positive Δ is worse
    flipped = decide({"better": [5.0, 5.1, 4.9]}, design, maximize=False)
    assert flipped["better"].verdict == "worse"


def test_without_delta_nothing_is_equivalent_and_max_makes_open_unresolved():
    design = Design(3, 5)
    same = [0.01, -0.01, 0.0, 0.02, -0.02]
    assert decide({"same": same[:3]}, design)["same"].verdict == "open"
    last = decide({"same": same}, design)["same"]
    assert last.verdict == "unresolved" and last.n == 5
    noisy = decide({"noisy": [3.0, -2.0, 1.0, 0.5, 2.0]}, design)["noisy"]
    assert noisy.verdict == "unresolved"
    # what would resolve it: a fixed paired t-test with 80% power for the observed Δ and spread
    d = np.array([3.0, -2.0, 1.0, 0.5, 2.0])
    n = noisy.seeds_to_resolve
    assert n == sequential.seeds_to_resolve(d.mean(), d.std(ddof=1), 0.05) and 5 < n < 100
    effect, crit = d.mean() / d.std(ddof=1), stats.t.ppf(0.975, n - 1)
    power = lambda k: stats.nct.sf(stats.t.ppf(0.975, k - 1), k - 1, effect * math.sqrt(k))  # noqa: E731
    assert power(n) + stats.nct.cdf(-crit, n - 1, effect * math.sqrt(n)) >= 0.8 > power(n - 1)


def test_fewer_pairs_than_min_are_open_and_untested():
    found = decide({"v": [9.0, 9.1]}, Design(3, 5))["v"]
    assert found.verdict == "open" and math.isnan(found.t)


def test_the_boundary_is_reached_at_equality_and_not_below():
    design = Design(4, 4)
    critical = design.boundary(4, 0.05)
    assert decide({"v": with_t(critical + 1e-9)}, design)["v"].verdict == "better"
    assert decide({"v": with_t(critical - 1e-6)}, design)["v"].verdict == "unresolved"


def test_holm_step_down_passes_alpha_on_at_the_same_look():
    design = Design(4, 4)
    strict, loose = design.boundary(4, 0.025), design.boundary(4, 0.05)
    between = (strict + loose) / 2
    # the stronger clears α/2; then the other is tested at α and clears it
    both = decide({"a": with_t(strict + 0.1), "b": with_t(between)}, design)
    assert both["a"].verdict == "better" and both["b"].verdict == "better"
    assert both["b"].level == pytest.approx(0.05) and both["a"].level == pytest.approx(0.025)
    # neither clears α/2: step-down stops, both stay unresolved (Bonferroni would agree)
    neither = decide({"a": with_t(between), "b": with_t(between)}, design)
    assert {c.verdict for c in neither.values()} == {"unresolved"}


def test_equivalence_uses_the_repeated_interval_at_the_current_boundary():
    design = Design(4, 4)
    d = with_t(0.5, sd=0.2)  # mean 0.05, half-width c * 0.2 / 2
    half = design.boundary(4, 0.05) * 0.2 / 2
    assert decide({"v": d}, design, delta=0.05 + half + 1e-6)["v"].verdict == "equivalent"
    assert decide({"v": d}, design, delta=0.05 + half - 1e-6)["v"].verdict == "unresolved"


def test_obrien_fleming_boundaries_fall_and_end_near_the_fixed_critical_value():
    bounds = t_boundaries(3, 12, 0.05)
    assert len(bounds) == 10 and all(a > b for a, b in pairwise(bounds))
    assert stats.t.ppf(0.975, 11) < bounds[-1] < 1.25 * stats.t.ppf(0.975, 11)
    assert t_boundaries(3, 12, 0.05) is bounds  # computed once per process (deterministic)


def test_calibrated_boundaries_spend_what_lan_demets_allows_on_fresh_sequences():
    """Recompute: on 100,000 null sequences the boundaries were not calibrated on, the share that
    has crossed by each look matches α*(n/max) within simulation error."""
    lo, hi, alpha = 3, 8, 0.05
    bounds = np.array(t_boundaries(lo, hi, alpha))
    t = np.abs(sequential.paired_t_paths(100_000, hi, np.random.default_rng(7)))[:, lo - 1 :]
    crossed = np.logical_or.accumulate(t >= bounds, axis=1).mean(axis=0)
    allowed = spent(np.arange(lo, hi + 1) / hi, alpha, "obrien-fleming")
    assert np.all(np.abs(crossed - allowed) < 3 * np.sqrt(allowed * (1 - allowed) / 100_000) + 2e-4)
    assert crossed[-1] == pytest.approx(alpha, abs=0.003)


def test_next_round_is_the_open_comparisons():
    found = decide({"done": [5.0, 5.1, 4.9], "open": [1.0, -1.0, 2.0]}, Design(3, 5))
    assert sequential.next_round(found) == ["open"]
