"""Sampler and pruner of a sweep's study, and feeding the pruner from MLflow.

Training never imports optuna, so a running trial cannot call ``trial.report``
itself. Instead the sweep reads the trial's MLflow run (the metric named by
``search.pruner.metric``, logged every ``train.log_every`` steps) and reports each
new point; when the pruner says so the child process is stopped.
"""

from __future__ import annotations

import optuna

from workbench.sweeps.spec import SweepSpec


def build_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """Grid trials are all queued with fixed params, so their sampler never picks a value."""
    if spec.is_grid:
        return optuna.samplers.RandomSampler(seed=0)
    return optuna.samplers.TPESampler(seed=spec.search.seed)


def build_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.is_grid or spec.search.pruner.kind == "none":
        return optuna.pruners.NopPruner()
    cfg = spec.search.pruner
    if cfg.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_steps)
    return optuna.pruners.HyperbandPruner()


def prunes(spec: SweepSpec) -> bool:
    return not spec.is_grid and spec.search.pruner.kind != "none"


def feed_pruner(
    trial: optuna.Trial,
    history: list[tuple[int, float]],
    reported: set[int],
    *,
    flip: bool,
) -> bool:
    """Report the (step, value) points not reported yet; True when the trial should be pruned.

    `flip` negates values when the pruned metric's direction differs from the
    study's (e.g. prune on a loss while maximizing recall).
    """
    for step, value in sorted(history):
        if step in reported:
            continue
        trial.report(-value if flip else value, step)
        reported.add(step)
    return bool(reported) and bool(trial.should_prune())
