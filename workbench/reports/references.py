"""The reference row: what a metric is worth without learning (blind, majority class, chance).

Naming contract (logged by evaluation): for a headline metric `eval/<task>/<metric>`
the references are `eval/<task>/blind_<metric>` (a text-only model),
`eval/<task>/majority_<metric>` (always the most frequent answer) and
`eval/<task>/chance_<metric>` (uniform guessing), each where it applies. They are
never table columns themselves; per metric the table shows the strongest one
(the highest mean over the sweep's finished runs) and names which it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

KINDS = ("blind", "majority", "chance")  # ties go to the first: the most demanding
REFERENCE_KEY = re.compile(r"^(?P<head>.*/)(?P<kind>blind|majority|chance)_(?P<metric>[^/]+)$")
# A value equal to one of these is what a model that ignores its input would score.
CONSTANT_KINDS = ("majority", "chance")


@dataclass(frozen=True)
class Reference:
    metric: str  # the headline key, e.g. eval/vqa/acc
    kind: str  # blind | majority | chance
    key: str  # the logged key, e.g. eval/vqa/blind_acc
    mean: float  # over the sweep's finished runs that logged it


def is_reference(key: str) -> bool:
    """Is `key` a reference metric (never a table column)?"""
    return REFERENCE_KEY.match(key) is not None


def reference_keys(metric: str) -> dict[str, str]:
    """kind -> logged key of each possible reference of `metric` ('eval/vqa/acc' -> 'eval/vqa/blind_acc', ...)."""
    head, _, name = metric.rpartition("/")
    return {kind: f"{head}/{kind}_{name}" if head else f"{kind}_{name}" for kind in KINDS}


def strongest(metric: str, means: dict[str, float]) -> Reference | None:
    """The highest reference of `metric` among `means` (logged key -> mean); None without one."""
    best: Reference | None = None
    for kind, key in reference_keys(metric).items():
        value = means.get(key)
        if value is None or not np.isfinite(value):
            continue
        if best is None or value > best.mean:
            best = Reference(metric, kind, key, float(value))
    return best


def constant_many(values: np.ndarray, constants: list[np.ndarray]) -> np.ndarray:
    """Per column of `values` [seeds, V] (a variant's seeds): does it look like a constant predictor?
    Yes when it does not vary over >= 2 seeds, or every seed scores exactly a majority/chance level
    logged by its own run. `constants`: per majority/chance kind a [seeds, V] matrix of the runs'
    logged levels (NaN = not logged)."""
    values = np.asarray(values, dtype=float)
    shown = ~np.isnan(values)
    n = shown.sum(axis=0)
    if values.size == 0:
        return np.zeros(values.shape[1], dtype=bool)
    with np.errstate(invalid="ignore"):
        top = np.where(shown, np.abs(values), 0.0).max(axis=0)
        spread = np.where(
            n > 0,
            np.nanmax(np.where(shown, values, -np.inf), axis=0) - np.nanmin(np.where(shown, values, np.inf), axis=0),
            np.inf,
        )
        tolerance = 1e-6 * np.maximum(1.0, np.abs(values))
        flat = (n >= 2) & (spread <= 1e-6 * np.maximum(1.0, top))
        at_level = np.zeros(values.shape, dtype=bool)
        for level in constants:
            at_level |= np.abs(np.asarray(level, dtype=float) - values) <= tolerance
    every_seed = (n > 0) & np.all(at_level | ~shown, axis=0)
    return flat | every_seed
