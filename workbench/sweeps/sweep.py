"""An open sweep: the Optuna study and the MLflow parent run that every process of a sweep shares.

``open_sweep`` serves the local runner, the SLURM coordinator and its worker jobs, and
``--status``/``--cancel``: it checks the options, opens the storage and the study (one
built from another version of the spec is refused) and opens the MLflow parent run,
which exactly one of any number of coordinators creates while the others, and every
resume, reopen it. A ``--worker`` waits for the coordinator's study, parent run and
queue, so hosts may start in any order.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback

from workbench import report_paths, tracking
from workbench.errors import ConfigError
from workbench.strict_yaml import brief
from workbench.study_attrs import PARENT_ATTR, QUEUED_ATTR, REPORT_ATTR, TRACKING_ATTR
from workbench.sweeps import runs
from workbench.sweeps.spec import SweepSpec, variant_config
from workbench.sweeps.study import (
    claim_parent_run,
    default_journal,
    missing_study,
    open_optuna,
    open_study,
)
from workbench.urls import redacted

COORDINATOR_WAIT_S = 120.0
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=,+-]{0,99}")  # also a folder name: no '/', no leading '.'
Trainer = Callable[
    ..., Any
]  # `workbench.train.run`'s signature: (cfg, *, resume_run_id, parent_run_id, tags, progress)


@dataclass
class SweepOptions:
    storage: str | None = None  # RDB URL or journal file; default <train.out_dir>/sweeps/optuna-journal.log
    study_name: str | None = None  # default: the sweep's name
    worker: bool = False  # join an existing study (e.g. from another host); never creates or queues
    resume: bool = False  # the study must exist already
    gpus: str | None = None
    per_gpu: int = 1
    slots: int | None = None
    tracking_uri: str | None = None
    heartbeat_s: int = 30  # RDB storages: a trial whose heartbeat is 2x older is failed and retried
    progress: bool = True
    trainer: Trainer | None = None  # called in each trial's process; None: workbench.train.run (tests pass a cheap one)
    poll_s: float = 1.0  # how often an idle slot looks for work
    yes: bool = False  # start a sweep of more than CONFIRM_ABOVE_TRIALS trials
    cpus: int | None = None  # CPUs the slots share (default: this process's affinity); a SLURM job's --cpus-per-task
    max_seeds: int | None = None  # --max-seeds: replaces an adaptive spec's seeds.max (read by load_spec)


@dataclass
class Sweep:
    """What every part of a sweep process shares, its slot threads included."""

    spec: SweepSpec
    storage: BaseStorage
    study: optuna.Study
    location: str  # the storage as given: a journal file path or an RDB URL (which may hold a password)
    uri: str  # the MLflow tracking URI
    parent_run_id: str  # "" while the study has none (--status of a sweep that never started)
    out_dir: Path  # <train.out_dir>/sweeps/<study name>: trial logs and results, the SLURM jobs' files
    trainer: Trainer | None = None
    cwd: str = field(default_factory=os.getcwd)
    no_new_trials: threading.Event = field(default_factory=threading.Event)  # a config error: finish what runs
    interrupted: threading.Event = field(default_factory=threading.Event)  # Ctrl-C: stop what runs

    @property
    def study_name(self) -> str:
        return self.study.study_name

    @property
    def retry(self) -> RetryHeartbeatStaleTrialCallback:
        return RetryHeartbeatStaleTrialCallback(max_retry=self.spec.retries)

    @functools.cached_property
    def experiment_id(self) -> str:
        return runs.experiment_of(self.parent_run_id, self.uri)


def check_study_name(name: str) -> str:
    """The study name is also the trial-log folder `<out_dir>/sweeps/<name>`: no '/', no '..'."""
    if not STUDY_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"--study-name: {brief(name)} is not a study name — allowed: up to 100 letters, digits and _ . = , + - "
            "(not starting with '.', no '/' or '..': it names a folder under train.out_dir/sweeps)"
        )
    return name


def open_sweep(spec: SweepSpec, options: SweepOptions, *, look_only: bool = False) -> Sweep:
    """Open the sweep's storage, study and MLflow parent run (creating them unless --resume or
    --worker). `look_only` (--status, --cancel): the study must exist and nothing is opened."""
    study_name = check_study_name(options.study_name or spec.name)
    base = variant_config(spec, spec.variants[0].overrides if spec.is_grid else {})
    location = options.storage or default_journal(base.train.out_dir)
    if "://" not in location:
        location = str(Path(location).resolve())  # SLURM jobs may start in another directory
    if not look_only:
        tracking.check_store(options.tracking_uri or base.tracking.uri)  # before anything is created
    existing = options.resume or look_only
    if existing and "://" not in location and not Path(location).is_file():
        raise missing_study(spec, study_name, location)  # opening the journal would create it
    storage = open_optuna(location, heartbeat_s=options.heartbeat_s, retries=spec.retries)  # a typo fails here
    if options.worker:
        study = _join_when_ready(spec, storage, study_name, location)
    else:
        study = open_study(spec, storage, study_name, create=not existing, location=location)
    uri = tracking.resolve_uri(options.tracking_uri or study.user_attrs.get(TRACKING_ATTR) or base.tracking.uri)
    if look_only:
        parent = study.user_attrs.get(PARENT_ATTR, "")
    else:
        parent = _open_parent_run(spec, study, storage, uri, base.tracking.experiment, location)
    if options.worker:
        tracking.closed(parent)  # the coordinator owns the parent run: a crashed worker leaves it alone
    out_dir = Path(base.train.out_dir).resolve() / "sweeps" / study_name
    return Sweep(spec, storage, study, location, uri, parent, out_dir, trainer=options.trainer)


def _open_parent_run(
    spec: SweepSpec, study: optuna.Study, storage: BaseStorage, uri: str, experiment: str, location: str
) -> str:
    """The sweep's MLflow parent run: created by exactly one of any number of coordinators
    (local or SLURM-submitting), reopened by the others and on resume."""

    def create() -> str:
        run_id = runs.create_parent_run(
            spec, study.study_name, uri=uri, experiment=experiment, storage=redacted(location)
        )
        study.set_user_attr(TRACKING_ATTR, uri)
        study.set_user_attr(REPORT_ATTR, report_paths.page_artifact(run_id))  # `workbench report ablations` logs it
        study.set_user_attr(PARENT_ATTR, run_id)  # last: waiting coordinators and workers read it
        return run_id

    parent_run_id, created = claim_parent_run(study, storage, create)
    if not created:
        runs.reopen_parent_run(parent_run_id, uri)
    return parent_run_id


def _join_when_ready(
    spec: SweepSpec, storage: BaseStorage, study_name: str, location: str, timeout_s: float = COORDINATOR_WAIT_S
) -> optuna.Study:
    """A worker may start before the coordinator (hosts started together): wait for its
    study, then for its MLflow parent run and its trial queue."""
    deadline = time.monotonic() + timeout_s

    def wait(missing: str) -> None:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"{missing} after {timeout_s:.0f} s; start the sweep first (same --storage, no --worker): "
                f"workbench sweep {spec.ref}"
            )
        time.sleep(1.0)

    while study_name not in optuna.get_all_study_names(storage):
        wait(f"no study {study_name!r} in {redacted(location)} to join")
    study = open_study(spec, storage, study_name, create=False, location=location)
    while PARENT_ATTR not in (attrs := study.user_attrs) or (spec.is_grid and not attrs.get(QUEUED_ATTR)):
        wait(f"study {study_name!r} has no MLflow parent run or trial queue")
    return study
