"""Error rates of the adaptive-seed design (`workbench/sequential.py`) by simulation, no training.

    .venv/bin/python benchmarks/bench_sequential.py --json            # ~2 min on one idle core
    .venv/bin/python benchmarks/bench_sequential.py --sims 10000 --json

Each simulated sweep draws paired differences (variant − baseline) per seed from
N(effect, 1), i.e. the effect is in paired standard deviations, and runs exactly the
rule a sweep runs: a look after every seed from `min` to `max`, `sequential.decide` on the
seeds so far, stop when every comparison is decided. Per case it prints:

* `false_positive_rate`: a comparison with no effect called better or worse (for two null
  variants: either of them, the family-wise rate that Holm controls);
* `power`: the comparison with an effect called better;
* `mean_seeds`: paired seeds per comparison when it stopped (the baseline runs as many as its
  longest comparison);
* `fixed_n_seeds`: the seeds a fixed paired t-test at the same α needs to reach the same
  power (and `fixed_n_seeds_80`: for 80 %), computed exactly with the non-central t;
* with a smallest effect of interest δ: `equivalent_rate` (true effect 0) and
  `false_equivalence_rate` (true effect = δ: the interval must not claim it is inside ±δ).

The simulations use their own random streams, independent of the boundaries' calibration.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench import sequential  # noqa: E402

CASES = [
    # name, true effects of the variants (paired sd), min, max, delta
    ("no effect", (0.0,), 3, 12, None),
    ("effect 1 sd", (1.0,), 3, 12, None),
    ("two variants, no effect (family-wise)", (0.0, 0.0), 3, 12, None),
    ("two variants: no effect + effect 1 sd", (0.0, 1.0), 3, 12, None),
    ("no effect, delta 1 sd", (0.0,), 3, 12, 1.0),
    ("effect = delta (1 sd)", (1.0,), 3, 12, 1.0),
    ("tiny sweep: no effect, min 3 max 5", (0.0,), 3, 5, None),
]


def fixed_power(effect: float, n: int, alpha: float) -> float:
    critical = stats.t.ppf(1 - alpha / 2, n - 1)
    shift = effect * math.sqrt(n)
    return float(stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift))


def fixed_n(effect: float, power: float, alpha: float) -> int | None:
    """Fewest paired seeds whose fixed two-sided t-test at `alpha` reaches `power`."""
    if effect == 0:
        return None
    for n in range(2, 1000):
        if fixed_power(effect, n, alpha) >= power:
            return n
    return None


def simulate(effects: tuple[float, ...], lo: int, hi: int, delta: float | None, sims: int, seed: int) -> dict:
    design = sequential.Design(lo, hi)
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((sims, len(effects), hi)) + np.asarray(effects)[None, :, None]
    verdicts = np.empty((sims, len(effects)), dtype=object)
    seeds = np.zeros((sims, len(effects)))
    for s in range(sims):
        names = [f"v{i}" for i in range(len(effects))]
        active = {name: lo for name in names}  # seeds each comparison has so far
        while True:
            result = sequential.decide({v: draws[s, i, : active[v]] for i, v in enumerate(names)}, design, delta=delta)
            still = sequential.next_round(result)
            if not still:
                break
            for v in still:
                active[v] += 1
        for i, v in enumerate(names):
            verdicts[s, i], seeds[s, i] = result[v].verdict, result[v].n
    out: dict = {
        "min_seeds": lo,
        "max_seeds": hi,
        "delta": delta,
        "effects_sd": list(effects),
        "sims": sims,
        "alpha": design.alpha,
        "design": design.name(delta),
    }
    directional = np.isin(verdicts, [sequential.BETTER, sequential.WORSE])
    null = np.asarray(effects) == 0
    if null.any():
        out["false_positive_rate"] = float(directional[:, null].any(axis=1).mean())
    if (~null).any():
        i = int(np.flatnonzero(~null)[0])
        power = float((verdicts[:, i] == sequential.BETTER).mean())
        out["power"] = power
        out["mean_seeds"] = float(seeds[:, i].mean())
        out["fixed_n_seeds"] = fixed_n(effects[i], power, design.alpha / len(effects))
        out["fixed_n_seeds_80"] = fixed_n(effects[i], 0.8, design.alpha / len(effects))
    else:
        out["mean_seeds"] = float(seeds.mean())
    out["baseline_mean_seeds"] = float(seeds.max(axis=1).mean())
    if delta:
        equivalent = verdicts == sequential.EQUIVALENT
        key = "false_equivalence_rate" if any(abs(e) >= delta for e in effects) else "equivalent_rate"
        out[key] = float(equivalent.any(axis=1).mean())
    out["verdicts"] = {v: int((verdicts == v).sum()) for v in sequential.VERDICTS if (verdicts == v).any()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=2000, help="simulated sweeps per case (>= 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON (else a table)")
    args = parser.parse_args()
    started = time.monotonic()
    results = {}
    for k, (name, effects, lo, hi, delta) in enumerate(CASES):
        results[name] = simulate(effects, lo, hi, delta, args.sims, args.seed + k)
    checks = {
        "no effect: false_positive_rate <= 0.05 (0.06 with simulation error)": results["no effect"][
            "false_positive_rate"
        ]
        <= 0.06,
        "two null variants: family-wise false_positive_rate <= 0.06": results["two variants, no effect (family-wise)"][
            "false_positive_rate"
        ]
        <= 0.06,
        "effect 1 sd: power >= 0.80": results["effect 1 sd"]["power"] >= 0.80,
        "effect 1 sd: mean_seeds < fixed_n_seeds (same power)": results["effect 1 sd"]["mean_seeds"]
        < results["effect 1 sd"]["fixed_n_seeds"],
        "effect = delta: false_equivalence_rate <= 0.06": results["effect = delta (1 sd)"]["false_equivalence_rate"]
        <= 0.06,
    }
    report = {
        "cases": results,
        "checks": checks,
        "all_pass": all(checks.values()),
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, r in results.items():
        numbers = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k
            in (
                "false_positive_rate",
                "power",
                "mean_seeds",
                "fixed_n_seeds",
                "equivalent_rate",
                "false_equivalence_rate",
                "baseline_mean_seeds",
            )
        )
        print(f"{name} (seeds {r['min_seeds']}..{r['max_seeds']}): {numbers}")
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")


if __name__ == "__main__":
    main()
