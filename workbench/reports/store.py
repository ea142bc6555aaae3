"""Read sweeps out of MLflow: one `mlflow.search_runs` query -> pandas, plus each sweep's spec.

A sweep is a parent run (tag `workbench.sweep`, artifact `sweep.yaml`) and its
child runs (tags `mlflow.parentRunId`, `workbench.variant`, `workbench.seed`).
The spec (variant order, baseline, seeds, metrics) comes from `sweep.yaml` when
the parent has one (read by `workbench/sweep_file.py`, the format's one definition), else
it is rebuilt from the child tags. Ablation reports never import the training or sweep code:
MLflow and `sweep_file` are the only contract (INTERFACES.md).
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from workbench import sweep_file, tags
from workbench.errors import ConfigError, DataError
from workbench.reports import sql_read
from workbench.reports.cost import DEVICE_KIND_TAG, DEVICES_TAG
from workbench.tracking import check_store, resolve_uri

SWEEP_TAG = tags.SWEEP
VARIANT_TAG = tags.VARIANT
SEED_TAG = tags.SEED
PARENT_TAG = tags.PARENT_RUN_ID
SPEC_ARTIFACT = sweep_file.ARTIFACT
SEED_PARAM = "train.seed"
EVAL_PREFIX = "eval/"
FINISHED = "FINISHED"
PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# Params the reports read: mask-ratio axes (figures), the seed fallback, the budget (the page).
MASK_RATIO_PARAMS = {"image": "objectives.scl.image_mask_ratio", "text": "objectives.scl.text_mask_ratio"}
BUDGET_PARAMS = ("train.steps", "train.batch_size", "data.root", "data.shapes_size")
KEEP_PARAMS = (*MASK_RATIO_PARAMS.values(), SEED_PARAM, *BUDGET_PARAMS)
BASELINE_TAG = tags.BASELINE
DESCRIPTION_TAG = tags.DESCRIPTION  # the sweep's description, on its parent run
KEEP_COLUMNS = {"run_id", "status", "start_time", "end_time", "experiment_id"}
KEEP_TAGS = (SWEEP_TAG, VARIANT_TAG, SEED_TAG, PARENT_TAG, BASELINE_TAG, DESCRIPTION_TAG, DEVICES_TAG, DEVICE_KIND_TAG)
KEEP_COLUMNS |= {f"tags.{t}" for t in KEEP_TAGS}
KEEP_COLUMNS |= {f"params.{p}" for p in KEEP_PARAMS}
KEEP_PREFIXES = ("metrics.eval/", "metrics.train/loss/")
# Sweep names and run ids go into MLflow filter strings; allow no quotes.
SELECTOR = re.compile(r"^[A-Za-z0-9_.:/+-]+$")


@dataclass
class SweepSpec:
    """What a sweep promised: variants in order (baseline first), seeds, metrics."""

    name: str
    variants: list[str]
    baseline: str
    seeds: list[int]
    metrics: list[str] = field(default_factory=list)  # as written; resolved against the runs later
    axes: dict[str, Any] = field(default_factory=dict)
    source: str = "tags"  # "sweep.yaml" or "tags"
    description: str = ""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> its config overrides
    objective: str = ""  # the metric the sweep optimised (figures draw it; the verdicts judge it)
    direction: str = "maximize"
    sequential: dict[str, Any] = field(default_factory=dict)  # adaptive seeds: min_seeds, max_seeds, alpha, spending
    delta: dict[str, float] = field(default_factory=dict)  # smallest effect of interest per metric


@dataclass
class Sweep:
    spec: SweepSpec
    parent_run_id: str | None
    runs: pd.DataFrame  # child runs: run_id, status, start_time, variant, seed, metrics.*, params.*
    notes: list[str] = field(default_factory=list)
    experiment_id: str | None = None  # of the parent (its MLflow page)
    started: pd.Timestamp | None = None  # the parent's start time

    @property
    def name(self) -> str:
        return self.spec.name


@contextmanager
def using_store(uri: str = "") -> Iterator[str]:
    """Point the fluent MLflow API at `uri` for a block, then restore what was set before."""
    resolved = resolve_uri(uri)
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    uri_before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(resolved)
    try:
        yield resolved
    finally:
        mlflow.set_tracking_uri(uri_before)
        if env_before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_before


@contextmanager
def gc_paused() -> Iterator[None]:
    """MLflow builds one ORM object per param/tag/metric row; pausing the cyclic GC
    while they are made halves the time of a 1,000-run query (none of them are cycles)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def search(filter_string: str) -> pd.DataFrame:
    """`mlflow.search_runs` over every experiment of the current store."""
    try:
        with gc_paused():
            return mlflow.search_runs(search_all_experiments=True, filter_string=filter_string)
    except MlflowException as err:
        raise ConfigError(f"tracking uri {mlflow.get_tracking_uri()!r}: cannot search runs: {err}") from None


def _check_selector(selector: str) -> str:
    if not SELECTOR.match(selector):
        raise ConfigError(
            f"SWEEP {selector!r}: not a sweep name or run id (allowed characters: letters, digits, _ . : / + -)"
        )
    return selector


def slim(runs: pd.DataFrame) -> pd.DataFrame:
    """Only the columns reports read: a wide frame (every param and tag of every run) makes each
    row filter copy ~100 string columns, which dominated a 1,000-run report."""
    keep = [c for c in runs.columns if c in KEEP_COLUMNS or c.startswith(KEEP_PREFIXES)]
    return runs[keep]


def read_sweep_runs(selectors: Sequence[str] = ()) -> pd.DataFrame:
    """Parent and child runs of the selected sweeps (names or parent run ids); all sweeps when empty."""
    selectors = [_check_selector(selector) for selector in selectors]
    with gc_paused():
        fast = sql_read.read_runs(
            SWEEP_TAG, selectors, KEEP_TAGS, KEEP_PARAMS, [p.removeprefix("metrics.") for p in KEEP_PREFIXES]
        )
    if fast is not None and not fast.empty and set(selectors) <= set(fast[f"tags.{SWEEP_TAG}"].dropna()):
        return fast  # SQL store: only the kept columns (a parent run id as selector takes the search below)
    if not selectors:
        return slim(search(f"tags.`{SWEEP_TAG}` LIKE '%'"))
    frames = []
    for selector in map(_check_selector, selectors):
        found = search(f"tags.`{SWEEP_TAG}` = '{selector}'")
        if found.empty:  # maybe a parent run id
            children = search(f"tags.`{PARENT_TAG}` = '{selector}'")
            parent = search(f"attributes.run_id = '{selector}'") if not children.empty else children
            found = pd.concat([parent, children], ignore_index=True)
        if found.empty:
            raise ConfigError(
                f"SWEEP {selector!r}: no sweep of that name and no parent run of that id in {mlflow.get_tracking_uri()}"
            )
        frames.append(found)
    runs = pd.concat([slim(frame) for frame in frames], ignore_index=True)
    return runs.drop_duplicates("run_id", ignore_index=True)


# ------------------------------------------------------------------ spec
def spec_from_file(found: sweep_file.SweepFile, fallback_name: str) -> SweepSpec:
    """The report's view of a parent run's `sweep.yaml` (`workbench/sweep_file.py` reads it)."""
    variants = list(found.variants)
    return SweepSpec(
        name=found.name or fallback_name,
        variants=variants,
        baseline=found.baseline if found.baseline is not None else _default_baseline(variants),
        seeds=list(found.seeds),
        metrics=list(found.metrics),
        axes=found.axes,
        source=SPEC_ARTIFACT,
        description=found.description,
        overrides=dict(found.variants),
        objective=found.objective,
        direction=found.direction,
        sequential=found.sequential,
        delta=found.delta,
    )


def _default_baseline(variants: list[str]) -> str:
    if "baseline" in variants:
        return "baseline"
    return variants[0] if variants else ""


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """Artifact downloads of a report (a YAML, a checkpoint) print no progress bars."""
    before = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = before


def load_spec_artifact(parent_run_id: str) -> sweep_file.SweepFile | None:
    """The parent's `sweep.yaml`, or None when it has none; DataError (one line) when unreadable."""
    where = f"runs:/{parent_run_id}/{SPEC_ARTIFACT}"
    try:
        with quiet_downloads():
            text = mlflow.artifacts.load_text(where)
    except (MlflowException, OSError):
        return None
    return sweep_file.load(text, where)


# ------------------------------------------------------------- children
def tidy_children(children: pd.DataFrame) -> pd.DataFrame:
    """Child runs with plain `variant`/`seed` columns; seed from the tag, else the train.seed param."""
    runs = children.copy()
    runs["variant"] = runs.get(f"tags.{VARIANT_TAG}", pd.Series(index=runs.index, dtype=object)).fillna("?")
    seed = runs.get(f"tags.{SEED_TAG}", pd.Series(index=runs.index, dtype=object))
    if f"params.{SEED_PARAM}" in runs:
        seed = seed.fillna(runs[f"params.{SEED_PARAM}"])
    runs["seed"] = pd.to_numeric(seed, errors="coerce").astype("Int64")
    return runs.sort_values("start_time", kind="stable", ignore_index=True)


def one_run_per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """Of repeated (variant, seed) runs keep the latest FINISHED one, else the latest."""
    order = runs.assign(_finished=runs["status"].eq(FINISHED)).sort_values(["_finished", "start_time"], kind="stable")
    kept = order.drop_duplicates(["variant", "seed"], keep="last").drop(columns="_finished")
    return kept.sort_values("start_time", kind="stable", ignore_index=True)


def spec_from_runs(name: str, runs: pd.DataFrame) -> SweepSpec:
    """Fallback spec: variants in order of first appearance, seeds seen, metrics left to the report."""
    variants = list(dict.fromkeys(runs["variant"]))
    seeds = sorted(int(s) for s in runs["seed"].dropna().unique())
    return SweepSpec(name=name, variants=variants, baseline=_default_baseline(variants), seeds=seeds)


def _complete_spec(spec: SweepSpec, runs: pd.DataFrame, notes: list[str]) -> SweepSpec:
    """Add variants the runs have but the spec lacks; the baseline goes first."""
    extra = [v for v in dict.fromkeys(runs["variant"]) if v not in spec.variants]
    if extra:
        notes.append(f"variants not in {SPEC_ARTIFACT}: {', '.join(extra)}")
    variants = spec.variants + extra
    if spec.baseline and spec.baseline not in variants:
        notes.append(f"baseline {spec.baseline!r} has no runs")
        variants = [spec.baseline] + variants
    if spec.baseline in variants:
        variants = [spec.baseline] + [v for v in variants if v != spec.baseline]
    if not spec.seeds:
        spec.seeds = sorted(int(s) for s in runs["seed"].dropna().unique())
    spec.variants = variants
    return spec


# --------------------------------------------------------------- sweeps
def split_sweeps(runs: pd.DataFrame) -> list[Sweep]:
    """Group a search result into sweeps: the latest parent per sweep name, with its children."""
    if runs.empty:
        return []
    parent_ids = runs.get(f"tags.{PARENT_TAG}", pd.Series(index=runs.index, dtype=object))
    is_child = parent_ids.notna()
    parents = runs[~is_child].sort_values("start_time", kind="stable")
    children = tidy_children(runs[is_child])
    groups = {pid: group for pid, group in children.groupby(f"tags.{PARENT_TAG}", sort=False)}
    no_children = tidy_children(runs.iloc[0:0])
    return [
        _one_sweep(name, pids, parents, groups.get(pids[-1], no_children))
        for name, pids in _parents_by_name(parents, groups).items()
    ]


def _parents_by_name(parents: pd.DataFrame, groups: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    """Sweep name -> its parent run ids, oldest first (children whose parent run is gone included)."""
    by_name: dict[str, list[str]] = {}
    for _, parent in parents.iterrows():
        by_name.setdefault(str(parent.get(f"tags.{SWEEP_TAG}") or parent["run_id"]), []).append(parent["run_id"])
    for pid, group in groups.items():  # children whose parent run is gone
        if pid not in set(parents["run_id"]):
            name = str(group[f"tags.{SWEEP_TAG}"].dropna().iloc[0]) if f"tags.{SWEEP_TAG}" in group else pid
            by_name.setdefault(name, []).append(pid)
    return by_name


def _one_sweep(name: str, pids: list[str], parents: pd.DataFrame, children: pd.DataFrame) -> Sweep:
    """The sweep of the latest parent run of `name` (older ones are noted, not read)."""
    pid = pids[-1]
    notes = (
        [f"{len(pids) - 1} older parent run(s) of sweep {name!r} ignored; the latest is {pid}"] if len(pids) > 1 else []
    )
    group = one_run_per_seed(children)
    row = parents[parents["run_id"] == pid]
    spec = _read_spec(name, pid, row, group, notes)
    if (
        len(row)
        and not spec.description
        and f"tags.{DESCRIPTION_TAG}" in row
        and isinstance(row[f"tags.{DESCRIPTION_TAG}"].iloc[0], str)
    ):
        spec.description = row[f"tags.{DESCRIPTION_TAG}"].iloc[0]
    return Sweep(
        _complete_spec(spec, group, notes),
        pid if len(row) else None,
        group,
        notes,
        experiment_id=str(row["experiment_id"].iloc[0])
        if len(row)
        else (str(group["experiment_id"].iloc[0]) if len(group) else None),
        started=row["start_time"].iloc[0] if len(row) else None,
    )


def _read_spec(name: str, pid: str, row: pd.DataFrame, group: pd.DataFrame, notes: list[str]) -> SweepSpec:
    """The parent's `sweep.yaml`; without one (or one `sweep_file` refuses, noted in one line),
    the spec is rebuilt from the child runs' tags and the parent's baseline tag."""
    found, refused = None, ""
    if len(row):  # the parent run exists
        try:
            found = load_spec_artifact(pid)
        except DataError as err:
            refused = " ".join(str(err).split())
    if found is not None:
        return spec_from_file(found, name)
    spec = spec_from_runs(name, group)
    tagged = row[f"tags.{BASELINE_TAG}"] if f"tags.{BASELINE_TAG}" in row else []
    if len(tagged) and isinstance(tagged.iloc[0], str) and tagged.iloc[0]:
        spec.baseline = tagged.iloc[0]
    why = f"{refused}, so" if refused else f"no {SPEC_ARTIFACT} on the parent run:"
    notes.append(f"{why} variants, seeds and baseline read from run tags")
    return spec


def load_sweeps(selectors: Sequence[str] = (), tracking_uri: str = "") -> tuple[list[Sweep], int]:
    """The selected sweeps (all when none) and how many runs were read."""
    check_store(tracking_uri)  # an unreachable server: one line now, not minutes of retries
    with using_store(tracking_uri):
        runs = read_sweep_runs(selectors)
        sweeps = split_sweeps(runs)
    if not sweeps:
        raise ConfigError(f"no sweeps in the MLflow store {resolve_uri(tracking_uri)} (runs tagged {SWEEP_TAG})")
    return sweeps, len(runs)
