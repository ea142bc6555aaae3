"""A sweep is refused before its first trial for anything that would fail one of its trials later.

Every variant's config (a search: both ends of every range) is resolved and put through
`preflight`: each objective's rules and needs, the files the config names (data files where a
variant's differ from what all variants share). The spec's `metrics`, `objective` and pruner
metric are checked against the metric keys those configs log. All problems are collected and
named at once, each with the variant it is in, so a sweep with three broken variants is fixed
in one go, not in three tries an hour apart. A grid is sized before it is enumerated: more
than `MAX_TRIALS` is refused with its size.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config import RunConfig, from_dict, read_yaml
from workbench.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from workbench.sweeps.spec import SweepSpec

MAX_TRIALS = 10_000  # more is no ablation but a typo (a grid of 10^6 cells, a huge seed count)
SHOWN = 8  # problems spelled out in the one line; the rest are counted


def check_grid_size(axes: dict[str, list[Any]], seeds: Any, where: str) -> None:
    """Refuse more than MAX_TRIALS grid cells (variants x seeds), from the axes' lengths and the
    seed count, before a variant or a seed list is made."""
    cells = math.prod(len(values) for values in axes.values())
    if cells > MAX_TRIALS:
        sizes = " x ".join(str(len(values)) for values in axes.values())
        raise ConfigError(
            f"{where}: axes make {cells:,} variants ({sizes}), more than the {MAX_TRIALS:,} trials a sweep may run "
            "(MAX_TRIALS) — give fewer values per axis, or search the space (search: {trials: N, ranges: ...})"
        )
    count = seeds.get("max") if isinstance(seeds, dict) else seeds  # a count (or an adaptive sweep's most)
    if isinstance(count, int) and not isinstance(count, bool) and count > MAX_TRIALS:
        raise ConfigError(
            f"{where}: seeds: {count:,} seeds, more than the {MAX_TRIALS:,} trials a sweep may run (MAX_TRIALS)"
        )


def check(spec: SweepSpec) -> None:
    """Every problem of every variant of `spec`, in one ConfigError (none: returns)."""
    _check_size(spec)
    problems: list[tuple[str, str]] = _name_problems(spec)  # (where: "variant 'x'", what)
    configs: list[tuple[str, RunConfig]] = []
    base = read_yaml(Path(spec.base))  # once: a grid may have thousands of variants
    shared = _shared_data_problems(base, spec)
    for label, overrides in candidates(spec):
        try:
            cfg = from_dict(base, {**spec.overrides, **overrides})
        except ConfigError as err:
            problems.append((label, str(err)))
            continue
        if not cfg.tracking.enabled:
            raise ConfigError(
                f"sweep {spec.name!r}: tracking.enabled is false in its base; a sweep records every trial in MLflow"
            )
        configs.append((label, cfg))
        problems += [(label, text) for text in _preflight().problems(cfg, data=False)]
        problems += [(label, text) for text in _preflight().data_problems(cfg) if text not in shared]
        task = _objective_task(spec, cfg)
        if task is not None:
            problems.append(
                (label, f"objective {spec.objective!r} needs eval task {task!r}, but eval.tasks is {cfg.eval.tasks}")
            )
    task_problems = any(what.startswith("objective ") for _, what in problems)
    problems += _metric_problems(spec, configs, check_objective=not task_problems)
    if problems:
        raise ConfigError(_one_line(spec, problems))


def candidates(spec: SweepSpec) -> list[tuple[str, dict[str, Any]]]:
    """(label, overrides) of every config the sweep may run: its variants, or each end of each range."""
    from workbench.sweeps.spec import format_value

    if spec.is_grid:
        return [(f"variant {v.name!r}", v.overrides) for v in spec.variants]
    found: list[tuple[str, dict[str, Any]]] = [("search", {})]
    for rng in spec.search.ranges:
        values = list(rng.choices) if rng.choices is not None else [rng.low, rng.high]
        found += [(f"search.ranges.{rng.key}={format_value(v)}", {rng.key: v}) for v in values]
    return found


def _check_size(spec: SweepSpec) -> None:
    trials = len(spec.variants) * len(spec.seeds) if spec.is_grid else spec.search.trials
    if trials > MAX_TRIALS:
        shape = f"{len(spec.variants):,} variants x {len(spec.seeds):,} seeds" if spec.is_grid else "search.trials"
        raise ConfigError(
            f"sweep {spec.name!r}: {trials:,} trials ({shape}), more than the {MAX_TRIALS:,} "
            "a sweep may run (MAX_TRIALS)"
        )


def _name_problems(spec: SweepSpec) -> list[tuple[str, str]]:
    """Two variants under one name (a grid whose values print alike): their trials would be
    taken for one variant's."""
    names = Counter(variant.name for variant in spec.variants)
    return [
        (f"variant {name!r}", f"{count} variants have this name (give each its own)")
        for name, count in names.items()
        if count > 1
    ]


def _shared_data_problems(base: dict[str, Any], spec: SweepSpec) -> set[str]:
    """What the data all variants share lacks: the first trial names it before it trains (and a
    sweep whose trainer reads no data may point at none); a file one variant adds is checked here."""
    try:
        return set(_preflight().data_problems(from_dict(base, dict(spec.overrides))))
    except ConfigError:
        return set()


def _objective_task(spec: SweepSpec, cfg: RunConfig) -> str | None:
    """The eval task an `eval/<group>/...` objective comes from, when `cfg` does not run it."""
    from workbench.sweeps.spec import METRIC_TASKS

    parts = spec.objective.split("/")
    task = METRIC_TASKS.get(parts[1]) if parts[0] == "eval" and len(parts) >= 3 else None
    return task if task is not None and task not in cfg.eval.tasks else None


def _preflight() -> Any:
    """`workbench.preflight`, imported on first use: it imports the objectives (torch), and
    importing `sweeps.spec` stays light."""
    from workbench import preflight

    return preflight


def _metric_problems(
    spec: SweepSpec, configs: list[tuple[str, RunConfig]], *, check_objective: bool = True
) -> list[tuple[str, str]]:
    """`metrics` and the pruner's metric: a key workbench logs at all (else a typo: did-you-mean);
    the objective, a key every variant logs (else that variant's trials fail after training)."""
    if not configs:
        return []
    known = set().union(*(_preflight().logged_metrics(cfg, every=True) for _, cfg in configs))
    wanted = [("metrics", m) for m in spec.metrics] + ([("objective", spec.objective)] if check_objective else [])
    if not spec.is_grid and spec.search.pruner.kind != "none":
        wanted.append(("search.pruner.metric", spec.search.pruner.metric))
    problems = []
    for field, metric in dict.fromkeys(wanted):
        if metric not in known:
            problems.append((field, f"{metric!r} is no metric workbench logs{did_you_mean(metric, sorted(known))}"))
        elif field == "objective":
            problems += [
                (label, f"objective {metric!r} is not logged by this variant ({_why_not(metric)})")
                for label, cfg in configs
                if metric not in _preflight().logged_metrics(cfg)
            ]
    return problems


def _why_not(metric: str) -> str:
    group = metric.split("/")[1] if metric.count("/") >= 2 else ""
    if metric.startswith("eval/"):
        return f"check eval.tasks and the objectives that eval/{group} needs"
    return f"check which objectives are on: train/{group} is logged by the one it names"


def _one_line(spec: SweepSpec, problems: list[tuple[str, str]]) -> str:
    if len(problems) == 1:
        where, what = problems[0]
        return f"sweep {spec.name!r}, {where}: {what}"
    shown = "; ".join(f"{where}: {what}" for where, what in problems[:SHOWN])
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return f"sweep {spec.name!r}: {len(problems)} problems — {shown}{more}"
