"""`space(spec, trial) -> TrialPlan`: what an Optuna trial means as config overrides.

The only place a trial's parameters are read. Grid trials carry one param,
``variant``; their seed is a fixed user attribute (``seed``) set when the trial is
queued, so Optuna's importance and contour plots see only what the sweep varies (the
variant is a user attribute too, so a queued trial says what it will run).
TPE trials carry one param per range (named by its dotted config key) and run the
spec's first seed (also recorded as the ``seed`` user attribute).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from workbench.study_attrs import SEED_ATTR
from workbench.sweeps.spec import Range, SweepSpec


@dataclass(frozen=True)
class TrialPlan:
    variant: str
    seed: int
    # the variant's own overrides + train.seed; the sweep process lays them over the spec's common
    # overrides (a variant's value wins: `sweeps/trial.py`) and hands the merged dict to the child
    overrides: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return self.variant, self.seed


def space(spec: SweepSpec, trial: optuna.Trial, lineage: int | None = None) -> TrialPlan:
    """Ask `trial` for its parameters. `lineage` = number of the first attempt (names TPE variants)."""
    if spec.is_grid:
        name = trial.suggest_categorical("variant", [v.name for v in spec.variants])
        seed = trial.user_attrs.get(SEED_ATTR)
        if seed is None:  # a study queued before the seed left the search space
            seed = trial.suggest_categorical("seed", list(spec.seeds))
        variant = spec.variant(name)
        return TrialPlan(name, int(seed), {**variant.overrides, "train.seed": int(seed)})
    values = {rng.key: _suggest(trial, rng) for rng in spec.search.ranges}
    seed = spec.seeds[0]
    trial.set_user_attr(SEED_ATTR, seed)
    number = trial.number if lineage is None else lineage
    return TrialPlan(f"trial-{number:04d}", seed, {**values, "train.seed": seed})


def _suggest(trial: optuna.Trial, rng: Range) -> Any:
    if rng.kind == "choice":
        return trial.suggest_categorical(rng.key, list(rng.choices))
    if rng.kind == "int":
        return trial.suggest_int(rng.key, rng.low, rng.high, step=rng.step or 1, log=rng.log)
    return trial.suggest_float(rng.key, float(rng.low), float(rng.high), step=rng.step, log=rng.log)
