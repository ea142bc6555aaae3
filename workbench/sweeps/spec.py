"""Sweep specs: a YAML file that names a base experiment, the axes to vary and what to report.

A sweep is a search space, not a code path: every trial is the base experiment
plus a dict of dotted config overrides. Three shapes, exactly one per file:

* ``axes``     -- a grid: the cartesian product of value lists, one variant per point;
* ``variants`` -- named variants, each a dict of overrides (``baseline``, ``+mvsc``, ...);
* ``search``   -- TPE over ranges (optionally with a pruner), ``search.trials`` trials.

Everything is checked here, before any trial starts: unknown spec fields and
config keys ("did you mean"), and every variant's full config is resolved from the
base YAML (``sweeps/prechecks.py``) so a bad value fails now, not an hour into the sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import (
    EXPERIMENTS_DIR,
    RunConfig,
    all_keys,
    flatten,
    load_config,
    parse_override,
    read_yaml,
    resolve_experiment,
    resolve_named_yaml,
)
from workbench.errors import ConfigError, did_you_mean
from workbench.sequential import Design
from workbench.strict_yaml import brief
from workbench.sweep_file import DIRECTIONS, OBJECTIVE_FIELDS, SweepFile
from workbench.sweeps import prechecks
from workbench.tasks import EVAL_TASKS, RETRIEVALS

MAX_SEED = 2**32 - 1
MAX_ADAPTIVE_SEEDS = 30  # the boundaries' calibration simulates this many seeds (memory, time)
SWEEPS_DIR = EXPERIMENTS_DIR / "sweeps"
SPEC_FIELDS = (
    "description",
    "base",
    "overrides",
    "axes",
    "variants",
    "search",
    "baseline",
    "seeds",
    "metrics",
    "objective",
    "retries",
    "delta",
)
SEED_RANGE_FIELDS = ("min", "max")  # `seeds: {min: 3, max: 10}`: adaptive seeds (workbench/sequential.py)
SEARCH_FIELDS = ("sampler", "trials", "ranges", "pruner", "seed")
RANGE_FIELDS = ("low", "high", "log", "step", "choices")
PRUNER_FIELDS = ("kind", "metric", "direction", "warmup_steps", "startup_trials", "interval_s")
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe",)
# Keys the sweep itself sets for every trial; a spec may not vary them.
SWEEP_OWNED = {
    "train.seed": "the sweep sets it from `seeds`",
    "tracking.uri": "use --tracking-uri",
    "tracking.run_name": "the sweep names each trial's run",
    "tracking.enabled": "a sweep always tracks its trials",
}
# Metric group `eval/<group>/...` -> the eval task that produces it (to check the objective is produced):
# each task, a retrieval task's ITC-only ranking (`<task>_itc`), and the attention score (with `retrieval`).
METRIC_TASKS = {
    **{t: t for t in EVAL_TASKS},
    **{f"{t}_itc": t for t in RETRIEVALS},
    "attention": "retrieval",
}
_SAFE_NAME = re.compile(r"^[\w.=,+\-:/ ]+$")


@dataclass(frozen=True)
class Variant:
    """One point of a grid sweep: a name and the config overrides that make it."""

    name: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Range:
    """One dimension of a TPE search: numeric ``low``..``high`` (``log``, ``step``) or ``choices``."""

    key: str
    kind: str = "float"  # "float" | "int" (from the config field's type) | "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Pruner:
    """Optuna pruner fed with an intermediate metric of the running trial's MLflow run."""

    kind: str = "median"
    metric: str = "train/loss/total"
    direction: str = "minimize"
    warmup_steps: int = 0
    startup_trials: int = 2
    interval_s: float = 5.0


@dataclass(frozen=True)
class Search:
    sampler: str
    trials: int
    ranges: tuple[Range, ...]
    pruner: Pruner
    seed: int | None = None


@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: Path
    description: str
    base: str  # resolved path of the base experiment YAML
    overrides: dict[str, Any]  # applied to every trial (spec `overrides` then --set)
    variants: tuple[Variant, ...]  # grid sweeps; empty for a search
    axes: dict[str, list[Any]]
    baseline: str | None
    seeds: tuple[int, ...]
    metrics: tuple[str, ...]
    objective: str
    direction: str
    retries: int
    search: Search | None = None
    min_seeds: int | None = None  # adaptive seeds (`seeds: {min, max}`): seeds[:min_seeds] first, then more while open
    delta: dict[str, float] = field(default_factory=dict)  # smallest effect of interest per metric (equivalence)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    ref: str = ""  # how the user named it (a name or a path), for "run `workbench sweep REF`" hints

    @property
    def is_grid(self) -> bool:
        return self.search is None

    @property
    def adaptive(self) -> bool:
        """Seeds are added round by round while a comparison is open (`seeds: {min, max}`)."""
        return self.min_seeds is not None

    @property
    def grid_keys(self) -> list[tuple[str, int]]:
        """Every variant x seed a grid sweep queues from the start, in order (none for a search);
        an adaptive sweep queues its first `min_seeds` rounds, then more (`sweeps/rounds.py`)."""
        seeds = self.seeds[: self.min_seeds] if self.adaptive else self.seeds
        return [(v.name, seed) for v in self.variants for seed in seeds]

    @property
    def design(self) -> Design | None:
        """The test behind the verdicts: sequential from min to max seeds, else one look at all seeds."""
        if not self.is_grid or self.baseline is None or len(self.seeds) < 2:
            return None
        return Design(self.min_seeds or len(self.seeds), len(self.seeds))

    @property
    def objective_delta(self) -> float | None:
        return self.delta.get(self.objective)

    @property
    def total_trials(self) -> int:
        """Trials the sweep runs at most (an adaptive one: every variant at `seeds.max`)."""
        return len(self.variants) * len(self.seeds) if self.is_grid else self.search.trials

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise ConfigError(f"sweep {self.name!r}: no variant {name!r}")

    def resolved(self) -> dict[str, Any]:
        """The spec as the sweep runs it (variants expanded): the parent run's `sweep.yaml`."""
        return self.sweep_file().to_dict()

    def sweep_file(self) -> SweepFile:
        """The spec as the sweep runs it, in `sweep.yaml`'s shape (`workbench/sweep_file.py`)."""
        sequential = {}
        if self.adaptive:  # `seeds` stays the list of every seed it may run: reports read it as before
            sequential = {
                "min_seeds": self.min_seeds,
                "max_seeds": len(self.seeds),
                "alpha": self.design.alpha,
                "spending": self.design.spending,
            }
        return SweepFile(
            name=self.name,
            description=self.description,
            base=self.base,
            overrides=self.overrides,
            baseline=self.baseline,
            seeds=list(self.seeds),
            metrics=list(self.metrics),
            objective=self.objective,
            direction=self.direction,
            retries=self.retries,
            sequential=sequential,
            delta=dict(self.delta),
            axes=self.axes,
            variants={v.name: v.overrides for v in self.variants},
            search=None if self.is_grid else self.raw.get("search"),
        )

    def fingerprint(self) -> str:
        """Identifies what the trials compute; a study built from another spec must not be resumed."""
        data = self.resolved()
        data.pop("description")
        data["base"] = read_yaml(Path(self.base))
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ finding
def spec_dirs() -> list[Path]:
    """Project sweeps (./experiments/sweeps) first, then the packaged ones."""
    unique: list[Path] = []
    for folder in (Path.cwd() / "experiments" / "sweeps", SWEEPS_DIR):
        if folder.is_dir() and folder.resolve() not in [d.resolve() for d in unique]:
            unique.append(folder)
    return unique


def resolve_spec_path(name_or_path: str | Path) -> Path:
    """A sweep is a YAML path or a name under experiments/sweeps/ (e.g. 'mask-ratio')."""
    return resolve_named_yaml(name_or_path, spec_dirs(), "sweep")


def list_specs() -> list[SweepSpec]:
    """Every named sweep, loaded and validated (a broken one raises, naming its file)."""
    return [load_spec(name) for name in sorted({p.stem for folder in spec_dirs() for p in folder.glob("*.yaml")})]


# ------------------------------------------------------------------ loading
def load_spec(name_or_path: str | Path, overrides: list[str] | None = None, max_seeds: int | None = None) -> SweepSpec:
    """Read, validate and expand a sweep spec; `overrides` (--set) apply to every trial;
    `max_seeds` (--max-seeds) replaces an adaptive spec's `seeds.max`."""
    path = resolve_spec_path(name_or_path)
    data = read_yaml(path, contents=f"sweep fields ({', '.join(SPEC_FIELDS)})")
    where = f"sweep {path.stem!r} ({path})"
    _check_fields(data, SPEC_FIELDS, where)
    shapes = [k for k in ("axes", "variants", "search") if data.get(k) is not None]
    if len(shapes) != 1:
        raise ConfigError(f"{where}: give exactly one of axes, variants, search (found: {', '.join(shapes) or 'none'})")
    base = _resolve_base(data.get("base", "base"), path, where)
    common = _overrides(data.get("overrides") or {}, f"{where}: overrides", allow_tracking=True)
    cli = _overrides(dict(parse_override(text) for text in overrides or []), "--set", allow_tracking=True)
    metrics = _metrics(data.get("metrics"), where)
    objective, direction = _objective(data.get("objective"), metrics, where)
    axes = _axes(data["axes"], where) if "axes" in shapes else {}
    prechecks.check_grid_size(axes, data.get("seeds"), where)  # sized before it is enumerated
    variants = grid_variants(axes) if axes else ()
    if "variants" in shapes:
        variants = _named_variants(data["variants"], where)
    search = _search(data["search"], where) if "search" in shapes else None
    unsafe = [v.name for v in variants if not _SAFE_NAME.match(v.name)]
    if unsafe:
        raise ConfigError(f"{where}: variant name {unsafe[0]!r} may only use letters, digits and _ . = , + - : / space")
    varied = {key for variant in variants for key in variant.overrides} | {
        r.key for r in (search.ranges if search else ())
    }
    clash = sorted(varied & set(cli))
    if clash:
        raise ConfigError(f"--set {clash[0]}: it is varied by sweep {path.stem!r}; it cannot be overridden")
    seeds, min_seeds = _seed_design(data.get("seeds", 3), max_seeds, "search" in shapes, where)
    spec = SweepSpec(
        name=path.stem,
        path=path,
        description=str(data.get("description") or "").strip(),
        base=str(base),
        overrides={**common, **cli},
        variants=variants,
        axes=axes,
        baseline=_baseline(data.get("baseline"), variants, axes, where),
        seeds=seeds,
        metrics=metrics,
        objective=objective,
        direction=direction,
        retries=_int_at_least(data.get("retries", 2), 0, f"{where}: retries"),
        search=search,
        raw=data,
        min_seeds=min_seeds,
        delta=_delta(data.get("delta"), metrics, objective, where),
        ref=str(name_or_path),
    )
    check_configs(spec)
    return spec


def grid_variants(axes: dict[str, list[Any]]) -> tuple[Variant, ...]:
    """Cartesian product of the axes, in file order; names like 'image_mask_ratio=0.2,text_mask_ratio=0.4'."""
    last = [k.rsplit(".", 1)[-1] for k in axes]  # an axis is named by its last key part when that is unique
    labels = {k: (s if last.count(s) == 1 else k) for k, s in zip(axes, last, strict=True)}
    variants = []
    for values in itertools.product(*axes.values()):
        overrides = dict(zip(axes, values, strict=True))
        variants.append(Variant(",".join(f"{labels[k]}={format_value(v)}" for k, v in overrides.items()), overrides))
    return tuple(variants)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(format_value(v) for v in value)
    return str(value)


def variant_config(spec: SweepSpec, variant_overrides: dict[str, Any]) -> RunConfig:
    """The full config of one variant (seed and tracking are added per trial)."""
    return load_config(spec.base, {**spec.overrides, **variant_overrides})


def check_configs(spec: SweepSpec) -> None:
    """Resolve every variant's config (or both ends of every range) now, naming every culprit
    at once: config values, objective rules, files, metric names (``prechecks``)."""
    prechecks.check(spec)


# ------------------------------------------------------------------ pieces
def _check_fields(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for name in data:
        if name not in allowed:
            raise ConfigError(
                f"{where}: unknown field {name!r}{did_you_mean(str(name), allowed)} (allowed: {', '.join(allowed)})"
            )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of dotted config keys to values, got {brief(value)}")
    return {str(k): v for k, v in value.items()}


def _check_key(key: str, where: str, *, what: str = "config key", allow_tracking: bool = False) -> None:
    keys = all_keys()
    if key not in keys:
        raise ConfigError(f"{where}: unknown {what} {key!r}{did_you_mean(key, keys)}")
    if key in SWEEP_OWNED:
        raise ConfigError(f"{where}: {key!r} cannot be set by a sweep ({SWEEP_OWNED[key]})")
    if key.startswith("tracking.") and not allow_tracking:
        raise ConfigError(f"{where}: {key!r} cannot vary within a sweep (all trials share one MLflow experiment)")


def _overrides(value: Any, where: str, allow_tracking: bool = False) -> dict[str, Any]:
    overrides = _mapping(value, where)
    for key in overrides:
        _check_key(key, where, allow_tracking=allow_tracking)
    return overrides


def _axes(value: Any, where: str) -> dict[str, list[Any]]:
    axes = _mapping(value, f"{where}: axes")
    if not axes:
        raise ConfigError(f"{where}: axes: give at least one axis, e.g. objectives.scl.image_mask_ratio: [0.2, 0.4]")
    for key, values in axes.items():
        _check_key(key, where, what="axis key")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: axes.{key}: expected a non-empty list of values, got {brief(values)}")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise ConfigError(f"{where}: axes.{key}: values repeat: {brief(values)}")
    return axes


def _named_variants(value: Any, where: str) -> tuple[Variant, ...]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: variants: expected a mapping of variant name -> overrides")
    return tuple(
        Variant(str(name), _overrides(overrides or {}, f"{where}: variants.{name}"))
        for name, overrides in value.items()
    )


def _baseline(value: Any, variants: tuple[Variant, ...], axes: dict[str, list[Any]], where: str) -> str | None:
    if value is None:
        return variants[0].name if variants else None
    names = [v.name for v in variants]
    if isinstance(value, dict):  # axis values, e.g. {objectives.scl.image_mask_ratio: 0.8}
        wanted = _mapping(value, f"{where}: baseline")
        for variant in variants:
            if set(wanted) == set(axes) and all(variant.overrides.get(k) == v for k, v in wanted.items()):
                return variant.name
        raise ConfigError(f"{where}: baseline {brief(value)} is not a point of the grid (axes: {', '.join(axes)})")
    if str(value) not in names:
        raise ConfigError(
            f"{where}: baseline {brief(value)} is not a variant{did_you_mean(str(value), names)} (variants: "
            f"{', '.join(names)})"
        )
    return str(value)


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return tuple(range(value))
    integers = isinstance(value, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    if not integers or not value or len(set(value)) != len(value):
        raise ConfigError(f"{where}: seeds: {brief(value)} is not a count >= 1 or a list of distinct integers")
    for seed in value:
        if not 0 <= seed <= MAX_SEED:  # train.seed's range: torch and numpy refuse others mid-run
            raise ConfigError(
                f"{where}: seeds: {brief(seed)} is out of range — allowed: integers in [0, {MAX_SEED}] (train.seed)"
            )
    return tuple(value)


def _seed_design(value: Any, max_seeds: int | None, search: bool, where: str) -> tuple[tuple[int, ...], int | None]:
    """`seeds: N` or a list: a fixed design; `seeds: {min, max}`: seeds 0..max-1, added while open."""
    if not isinstance(value, dict):
        if max_seeds is not None:
            raise ConfigError(
                f"--max-seeds {max_seeds}: {where} has a fixed number of seeds ({brief(value)}); "
                "give it seeds: {min: 3, max: 10} to add seeds while a comparison is open"
            )
        return _seeds(value, where), None
    _check_fields(value, SEED_RANGE_FIELDS, f"{where}: seeds")
    if search:
        raise ConfigError(
            f"{where}: seeds: {{min, max}} adds seeds to grid comparisons; a search runs one seed per trial"
        )
    low = value.get("min", 3)
    if isinstance(low, bool) or not isinstance(low, int) or low < 2:
        raise ConfigError(f"{where}: seeds.min: {brief(low)} is not an integer >= 2 (a paired test needs 2 seeds)")
    high = value.get("max", 10) if max_seeds is None else max_seeds
    name = "--max-seeds" if max_seeds is not None else f"{where}: seeds.max"
    if isinstance(high, bool) or not isinstance(high, int) or high < low:
        raise ConfigError(f"{name}: {brief(high)} is not an integer >= seeds.min ({low})")
    if high > MAX_ADAPTIVE_SEEDS:
        raise ConfigError(
            f"{name}: {brief(high)} is above {MAX_ADAPTIVE_SEEDS} (the sequential design's boundaries are "
            "calibrated for up to that many looks)"
        )
    return tuple(range(high)), low


def _delta(value: Any, metrics: tuple[str, ...], objective: str, where: str) -> dict[str, float]:
    """`delta: {metric: smallest effect of interest}`; each metric must be one the sweep reports."""
    if value is None:
        return {}
    data = _mapping(value, f"{where}: delta")
    known = tuple(dict.fromkeys([objective, *metrics]))
    out = {}
    for metric, size in data.items():
        if metric not in known:
            raise ConfigError(
                f"{where}: delta.{metric}: not a metric of this sweep{did_you_mean(metric, known)} "
                f"(metrics: {', '.join(known)})"
            )
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) or size <= 0:
            raise ConfigError(
                f"{where}: delta.{metric}: {brief(size)} is not a number > 0 (the smallest effect of interest)"
            )
        out[metric] = float(size)
    return out


def _int_at_least(value: Any, low: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where}: {brief(value)} is not an integer >= {low}")
    return value


def _one_of(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise ConfigError(
            f"{where}: {brief(value)} is not one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}"
        )
    return value


def _metric_key(metric: Any, where: str) -> str:
    if not isinstance(metric, str) or not metric.startswith(("eval/", "train/")):
        hint = f" — did you mean 'eval/{metric}'?" if isinstance(metric, str) else ""
        raise ConfigError(f"{where}: {brief(metric)} is not an MLflow metric key (eval/... or train/...){hint}")
    return metric


def _metrics(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ("eval/retrieval/r_mean",)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: metrics: expected a non-empty list of metric keys, e.g. [eval/retrieval/r_mean]")
    return tuple(_metric_key(m, f"{where}: metrics") for m in value)


def _objective(value: Any, metrics: tuple[str, ...], where: str) -> tuple[str, str]:
    if value is None:
        return metrics[0], "maximize"
    obj = _mapping({"metric": value} if isinstance(value, str) else value, f"{where}: objective")
    _check_fields(obj, OBJECTIVE_FIELDS, f"{where}: objective")
    return (
        _metric_key(obj.get("metric", metrics[0]), f"{where}: objective.metric"),
        _one_of(obj.get("direction", "maximize"), DIRECTIONS, f"{where}: objective.direction"),
    )


def _search(value: Any, where: str) -> Search:
    data = _mapping(value, f"{where}: search")
    _check_fields(data, SEARCH_FIELDS, f"{where}: search")
    ranges = _mapping(data.get("ranges") or {}, f"{where}: search.ranges")
    if not ranges:
        raise ConfigError(
            f"{where}: search.ranges: give at least one range, e.g. train.lr: {{low: 1e-5, high: 1e-3, log: true}}"
        )
    seed = data.get("seed")
    return Search(
        sampler=_one_of(data.get("sampler", "tpe"), SAMPLERS, f"{where}: search.sampler"),
        trials=_int_at_least(data.get("trials", 20), 1, f"{where}: search.trials"),
        ranges=tuple(_range(key, spec, f"{where}: search.ranges.{key}") for key, spec in ranges.items()),
        pruner=_pruner(data.get("pruner"), f"{where}: search.pruner"),
        seed=None if seed is None else _int_at_least(seed, 0, f"{where}: search.seed"),
    )


def _range(key: str, value: Any, where: str) -> Range:
    _check_key(key, where)
    data = _mapping({"choices": value} if isinstance(value, list) else value, where)
    _check_fields(data, RANGE_FIELDS, where)
    if "choices" in data:
        choices = data["choices"]
        if not isinstance(choices, list) or not choices or set(data) != {"choices"}:
            raise ConfigError(f"{where}: choices must be a non-empty list and stand alone (no low/high)")
        return Range(key, kind="choice", choices=tuple(choices))
    default = flatten(RunConfig())[key]
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise ConfigError(f"{where}: {key!r} is not numeric; give choices: [...] instead of low/high")
    kind = "int" if isinstance(default, int) else "float"
    low, high, step, log = data.get("low"), data.get("high"), data.get("step"), data.get("log", False)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise ConfigError(f"{where}: need numbers low < high, got low={brief(low)}, high={brief(high)}")
    if kind == "int" and not all(isinstance(v, int) for v in (low, high, step or 1)):
        raise ConfigError(f"{where}: {key!r} is an integer field; low, high and step must be integers")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log: {brief(log)} is not true or false")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {brief(low)}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or log):
        raise ConfigError(f"{where}: step: {brief(step)} must be a number > 0 and cannot go with log: true")
    return Range(key, kind=kind, low=low, high=high, log=log, step=step)


def _pruner(value: Any, where: str) -> Pruner:
    if value is None:
        return Pruner(kind="none")
    data = _mapping({"kind": value} if isinstance(value, str) else value, where)
    _check_fields(data, PRUNER_FIELDS, where)
    interval = data.get("interval_s", 5.0)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        raise ConfigError(f"{where}.interval_s: {brief(interval)} is not a number > 0")
    return Pruner(
        kind=_one_of(data.get("kind", "median"), PRUNERS, f"{where}.kind"),
        metric=_metric_key(data.get("metric", "train/loss/total"), f"{where}.metric"),
        direction=_one_of(data.get("direction", "minimize"), DIRECTIONS, f"{where}.direction"),
        warmup_steps=_int_at_least(data.get("warmup_steps", 0), 0, f"{where}.warmup_steps"),
        startup_trials=_int_at_least(data.get("startup_trials", 2), 0, f"{where}.startup_trials"),
        interval_s=float(interval),
    )


def _resolve_base(value: Any, spec_path: Path, where: str) -> Path:
    """A base is an experiment name or a YAML path (relative to the spec file, then the cwd)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: base: expected an experiment name or YAML path, got {brief(value)}")
    candidate = spec_path.parent / value
    if Path(value).suffix in (".yaml", ".yml") and not Path(value).is_absolute() and candidate.is_file():
        return candidate.resolve()
    try:
        return resolve_experiment(value).resolve()
    except ConfigError as err:
        raise ConfigError(f"{where}: base: {err}") from None


def spec_table(specs: list[SweepSpec]) -> str:
    """`workbench sweep list`: name, trials, base, baseline, description."""
    rows = [("name", "trials", "base", "baseline", "description")]
    for spec in specs:
        seeds = f"{spec.min_seeds}..{len(spec.seeds)}" if spec.adaptive else f"{len(spec.seeds)}"
        shape = f"{len(spec.variants)}x{seeds}" if spec.is_grid else f"tpe {spec.search.trials}"
        rows.append(
            (spec.name, f"{spec.total_trials} ({shape})", Path(spec.base).stem, spec.baseline or "-", spec.description)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4] for row in rows
    )
