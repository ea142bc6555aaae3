"""`sweep.yaml` on a sweep's MLflow parent run: the spec as the sweep ran it, variants expanded.

The sweep writes it (`sweeps/spec.py`, `SweepSpec.resolved`); reports read it back
(`reports/store.py`). This module is the one definition of its keys and their shapes, low in
the layers so that reports need not import the sweep's machinery (optuna, the config loader):

    name, description, base, overrides     the sweep and what every trial shares
    baseline, seeds, metrics               `seeds`: the list of every seed it may run
    objective: {metric, direction}         what the sweep optimises / the verdicts judge
    retries
    sequential: {min_seeds, max_seeds, alpha, spending}   adaptive seeds only
    delta: {metric: smallest effect of interest}          only when given
    axes, variants: [{name, overrides}]    a grid (axes empty for named variants)
    search: {...}                          a TPE search, as its spec wrote it

Every key is optional when read (older sweeps, hand-made stores wrote fewer); a key that is
there must have its shape, else `parse` raises one `DataError` line naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from workbench.errors import DataError, did_you_mean

ARTIFACT = "sweep.yaml"  # its name among the parent run's artifacts
DIRECTIONS = ("maximize", "minimize")
OBJECTIVE_FIELDS = ("metric", "direction")
SEQUENTIAL_FIELDS = ("min_seeds", "max_seeds", "alpha", "spending")
KEYS = (
    "name",
    "description",
    "base",
    "overrides",
    "baseline",
    "seeds",
    "metrics",
    "objective",
    "retries",
    "sequential",
    "delta",
    "axes",
    "variants",
    "search",
)


@dataclass
class SweepFile:
    """The contents of a `sweep.yaml`; `search` is None for a grid (axes / named variants)."""

    name: str = ""
    description: str = ""
    base: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)  # every trial's (spec `overrides`, then --set)
    baseline: str | None = None
    seeds: list[int] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    objective: str = ""  # empty: not written (reports pick the first metric)
    direction: str = "maximize"
    retries: int | None = None
    sequential: dict[str, Any] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> its overrides, in order
    search: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The mapping the sweep writes (keys in the order above; `sequential`, `delta` only when set)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "base": self.base,
            "overrides": self.overrides,
            "baseline": self.baseline,
            "seeds": list(self.seeds),
            "metrics": list(self.metrics),
            "objective": {"metric": self.objective, "direction": self.direction},
            "retries": self.retries,
        }
        if self.sequential:
            out["sequential"] = dict(self.sequential)
        if self.delta:
            out["delta"] = dict(self.delta)
        if self.search is None:
            out["axes"] = self.axes
            out["variants"] = [{"name": name, "overrides": overrides} for name, overrides in self.variants.items()]
        else:
            out["search"] = self.search
        return out


def dump(sweep_file: SweepFile) -> str:
    return yaml.safe_dump(sweep_file.to_dict(), sort_keys=False)


def load(text: str, where: str) -> SweepFile:
    """Parse a `sweep.yaml`'s text (`where` names it in errors)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DataError(f"{where}: invalid YAML: {' '.join(str(err).split())}") from None
    return parse(data, where)


# ------------------------------------------------------------------ reading
def parse(data: Any, where: str) -> SweepFile:
    """A SweepFile from a loaded `sweep.yaml`; a key of the wrong shape raises DataError naming it."""
    data = _mapping(data, where)
    for key in data:
        if key not in KEYS:
            raise DataError(f"{where}: unknown key {key!r}{did_you_mean(key, KEYS)} (known: {', '.join(KEYS)})")
    variants = _variants(data.get("variants"), f"{where}: variants")
    objective = _objective(data.get("objective"), f"{where}: objective")
    return SweepFile(
        name=_text(data.get("name"), f"{where}: name"),
        description=_text(data.get("description"), f"{where}: description"),
        base=_text(data.get("base"), f"{where}: base"),
        overrides=_mapping(data.get("overrides") or {}, f"{where}: overrides"),
        baseline=_baseline(data.get("baseline"), variants, f"{where}: baseline"),
        seeds=_seeds(data.get("seeds"), f"{where}: seeds"),
        metrics=_metrics(data.get("metrics"), f"{where}: metrics"),
        objective=objective[0],
        direction=objective[1],
        retries=_retries(data.get("retries"), f"{where}: retries"),
        sequential=_sequential(data.get("sequential"), f"{where}: sequential"),
        delta=_delta(data.get("delta"), f"{where}: delta"),
        axes=_axes(data.get("axes"), f"{where}: axes"),
        variants=variants,
        search=_mapping(data["search"], f"{where}: search") if data.get("search") is not None else None,
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise DataError(f"{where}: expected text, got {type(value).__name__}")
    return str(value)


def _retries(value: Any, where: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise DataError(f"{where}: expected an integer >= 0, got {value!r}")
    return value


def _variants(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """`variants: [{name, overrides}]` as the sweep writes it (none for a search)."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list of {{name, overrides}}, got {type(value).__name__}")
    found: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict) or "name" not in item or set(item) - {"name", "overrides"}:
            raise DataError(f"{where}[{i}]: expected {{name, overrides}}, got {item!r}")
        name = str(item["name"])
        if name in found:
            raise DataError(f"{where}[{i}]: variant {name!r} is listed twice")
        found[name] = _mapping(item.get("overrides") or {}, f"{where}[{i}].overrides")
    return found


def _baseline(value: Any, variants: dict[str, dict[str, Any]], where: str) -> str | None:
    if value is None:
        return None
    name = _text(value, where)
    if variants and name not in variants:
        raise DataError(f"{where}: {name!r} is not a variant{did_you_mean(name, variants)}")
    return name


def _seeds(value: Any, where: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise DataError(f"{where}: expected a list of integers, got {value!r}")
    return list(value)


def _metrics(value: Any, where: str) -> list[str]:
    """Metric keys as written (reports resolve `retrieval/tr_r1` against the runs' `eval/...`)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise DataError(f"{where}: expected a list of metric keys, got {value!r}")
    return list(value)


def _objective(value: Any, where: str) -> tuple[str, str]:
    if value is None:
        return "", "maximize"
    data = _mapping(value, where)
    for key in data:
        if key not in OBJECTIVE_FIELDS:
            raise DataError(f"{where}: unknown key {key!r} (known: {', '.join(OBJECTIVE_FIELDS)})")
    direction = data.get("direction", "maximize")
    if direction not in DIRECTIONS:
        raise DataError(f"{where}: direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    return _text(data.get("metric"), f"{where}.metric"), direction


def _sequential(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    data = _mapping(value, where)
    for key in data:
        if key not in SEQUENTIAL_FIELDS:
            raise DataError(f"{where}: unknown key {key!r} (known: {', '.join(SEQUENTIAL_FIELDS)})")
    return data


def _delta(value: Any, where: str) -> dict[str, float]:
    if value is None:
        return {}
    out = {}
    for metric, size in _mapping(value, where).items():
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) or size <= 0:
            raise DataError(f"{where}.{metric}: {size!r} is not a number > 0")
        out[metric] = float(size)
    return out


def _axes(value: Any, where: str) -> dict[str, list[Any]]:
    if value is None:
        return {}
    axes = _mapping(value, where)
    for key, values in axes.items():
        if not isinstance(values, list):
            raise DataError(f"{where}.{key}: expected a list of values, got {type(values).__name__}")
    return axes
