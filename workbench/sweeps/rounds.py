"""Adaptive seeds: after each round of paired seeds, decide every comparison and queue the next
seed only for the baseline and the variants whose verdict is still open.

Everything is read from the study, never from memory: any process of the sweep (the local
runner's slots, a resumed or second coordinator, a SLURM worker) may call `advance` when the
study has nothing queued or running, and all of them reach the same decision
(`workbench.sequential.decide` on the completed trials' objective values, paired by seed). So a
killed coordinator, `--resume`, several workers and SLURM workers all continue one design.

Two processes may find a round finished at the same moment: the one that creates the study
`<study>.round-<k>` (a storage creates a study name once) queues seed k; a claim whose owner
died before queuing is taken over (`study.claim_is_stale`). The verdicts go on the MLflow
parent run as tags `workbench.verdict.<variant>` and `workbench.seeds.<variant>`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from workbench import tags, tracking
from workbench.sequential import BASELINE, MAX_SEEDS_TO_RESOLVE, Comparison, decide, next_round
from workbench.study_attrs import SEED_ATTR, VARIANT_ATTR, WORKER_ATTR
from workbench.sweeps.spec import SweepSpec
from workbench.sweeps.study import HOST, OPEN, claim_is_stale, grid_key, tally
from workbench.sweeps.sweep import Sweep

ROUND_SUFFIX = ".round-"
VERDICT_TAG, SEEDS_TAG, DESIGN_TAG = tags.VERDICT, tags.SEEDS, tags.DESIGN


@dataclass(frozen=True)
class Round:
    """What `advance` queued: seed `seed` (round `index`) for the baseline and `variants`, and why."""

    index: int
    seed: int
    variants: list[str]
    why: str

    def line(self) -> str:
        return (
            f"adding seed {self.seed} (round {self.index + 1}) for the baseline and "
            f"{', '.join(self.variants)}: {self.why}"
        )


def objective_values(spec: SweepSpec, trials: list[FrozenTrial]) -> dict[str, dict[int, float]]:
    """variant -> seed -> objective value of its COMPLETE trial (the study's value is the objective)."""
    values: dict[str, dict[int, float]] = {v.name: {} for v in spec.variants}
    for trial in trials:
        key = grid_key(trial)
        if trial.state == TrialState.COMPLETE and key and key[0] in values and trial.value is not None:
            values[key[0]][key[1]] = float(trial.value)
    return values


def verdicts(spec: SweepSpec, trials: list[FrozenTrial]) -> dict[str, Comparison]:
    """Every variant's verdict vs the baseline from the study's completed trials (none without a design)."""
    design = spec.design
    if design is None:
        return {}
    values = objective_values(spec, trials)
    base = values.get(spec.baseline, {})
    diffs = {}
    for variant, by_seed in values.items():
        if variant != spec.baseline:  # seeds in the sweep's order; only seeds both finished
            diffs[variant] = [by_seed[s] - base[s] for s in spec.seeds if s in by_seed and s in base]
    return decide(diffs, design, delta=spec.objective_delta, maximize=spec.direction == "maximize")


def seed_counts(spec: SweepSpec, trials: list[FrozenTrial]) -> dict[str, int]:
    return {variant: len(seeds) for variant, seeds in objective_values(spec, trials).items()}


def planned_keys(spec: SweepSpec, trials: list[FrozenTrial]) -> list[tuple[str, int]]:
    """The variant x seed pairs the sweep has planned so far: the first rounds, plus queued ones."""
    queued = [key for t in trials if (key := grid_key(t)) is not None]
    return list(dict.fromkeys([*spec.grid_keys, *queued]))


def design_done(spec: SweepSpec, trials: list[FrozenTrial]) -> bool:
    """No comparison is open any more (all decided or at max seeds): no round is left to run."""
    return not spec.adaptive or not next_round(verdicts(spec, trials))


def advance(sweep: Sweep) -> Round | None:
    """When the study has nothing queued or running: decide, record the verdicts on the parent run,
    and queue the next seed for the baseline and the open variants. Returns the round queued."""
    study, spec = sweep.study, sweep.spec
    if not spec.is_grid:
        return None
    trials = study.get_trials(deepcopy=False)
    if any(t.state in OPEN for t in trials) or tally(spec, trials)[1]:
        return None  # a round in flight, or a trial failed for good: nothing to decide yet
    found = verdicts(spec, trials)
    if sweep.parent_run_id:
        record(sweep.parent_run_id, sweep.uri, spec, found, seed_counts(spec, trials))
    still = next_round(found) if spec.adaptive else []
    index = len({key[1] for t in trials if (key := grid_key(t)) and key[0] == spec.baseline})
    if not still or index >= len(spec.seeds):
        return None
    seed = spec.seeds[index]
    keys = [(v, seed) for v in still] + [(spec.baseline, seed)]  # the baseline last: it marks the round queued
    if not _claim_round(study, sweep.storage, index):
        return None
    covered = {grid_key(t) for t in trials}
    for variant, key_seed in keys:
        if (variant, key_seed) not in covered:
            study.enqueue_trial({"variant": variant}, user_attrs={VARIANT_ATTR: variant, SEED_ATTR: key_seed})
    return Round(index, seed, still, _why(found, still))


def _why(found: dict[str, Comparison], still: list[str]) -> str:
    parts = []
    for variant in still:
        c = found[variant]
        if math.isnan(c.t):
            why = (
                "the same Δ on every seed: no spread to test"
                if c.n >= 2 and math.isfinite(c.critical)
                else "no test yet"
            )
            parts.append(f"{variant} open ({c.n} paired seeds, Δ {c.delta:+.4g}, {why})")
        else:
            parts.append(
                f"{variant} open (Δ {c.delta:+.4g}, |t| {abs(c.t):.2f} < {c.critical:.2f} needed at {c.n} seeds)"
            )
    return "; ".join(parts)


_first_seen: dict[str, float] = {}  # claim name -> when this process first found it held


def _claim_round(study: optuna.Study, storage: BaseStorage, index: int) -> bool:
    """Whether this process queues round `index`: it created the claim study (a stale one, whose
    owner died before queuing the baseline, is deleted so that the next call claims it)."""
    name = f"{study.study_name}{ROUND_SUFFIX}{index}"
    try:
        claim = optuna.create_study(study_name=name, storage=storage)
    except DuplicatedStudyError:
        # held by another process: it queues the round, unless it died first (its trials never came)
        if claim_is_stale(storage, name, _first_seen.setdefault(name, time.monotonic())):
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)
        return False
    claim.set_user_attr(WORKER_ATTR, {"host": HOST, "pid": os.getpid()})
    return True


def record(parent_run_id: str, uri: str, spec: SweepSpec, found: dict[str, Comparison], seeds: dict[str, int]) -> None:
    """The verdicts and seed counts as tags of the sweep's MLflow parent run (every variant)."""
    if spec.design is None:
        return
    client = tracking.client(uri)
    parts = tags.key_parts(v.name for v in spec.variants)  # `+scl` and `_scl` keep one tag each
    for variant, part in parts.items():
        verdict = BASELINE if variant == spec.baseline else found[variant].verdict
        client.set_tag(parent_run_id, VERDICT_TAG + part, verdict)
        client.set_tag(parent_run_id, SEEDS_TAG + part, str(seeds.get(variant, 0)))
    client.set_tag(parent_run_id, DESIGN_TAG, spec.design.name(spec.objective_delta))


def resolve_text(seeds: float) -> str:
    """What would resolve an open comparison, from `Comparison.seeds_to_resolve`."""
    if math.isnan(seeds):
        return ""
    if math.isinf(seeds):
        return f", more than {MAX_SEEDS_TO_RESOLVE} paired seeds would resolve it"
    return f", ~{seeds:.0f} paired seeds would resolve it"


def verdict_lines(spec: SweepSpec, trials: list[FrozenTrial]) -> list[str]:
    """For --status and the summary: one line per variant with its verdict, seeds and Δ."""
    found = verdicts(spec, trials)
    if not found:
        return []
    counts = seed_counts(spec, trials)
    width = max(len(v.name) for v in spec.variants)
    lines = [f"verdicts on {spec.objective} ({spec.design.name(spec.objective_delta)}):"]
    for variant in (v.name for v in spec.variants):
        if variant == spec.baseline:
            lines.append(f"  {variant:<{width}}  baseline    {counts[variant]} seeds")
            continue
        c = found[variant]
        ci = "" if math.isnan(c.ci_low) else f", CI [{c.ci_low:+.4g}, {c.ci_high:+.4g}]"
        more = resolve_text(c.seeds_to_resolve)
        lines.append(f"  {variant:<{width}}  {c.verdict:<10}  {counts[variant]} seeds, Δ {c.delta:+.4g}{ci}{more}")
    return lines
