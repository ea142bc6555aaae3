"""The Optuna side of a sweep: storage, study, the trial queue, dead and stale trials.

Storage. The local default is Optuna's journal file (``JournalStorage`` +
``JournalFileBackend``, file-locked appends): Optuna's docs recommend it for
several processes on one machine and "would never recommend SQLite3 for parallel
optimization" (``RDBStorage`` docs). Any RDB URL (``postgresql://``, ``mysql://``,
also ``sqlite:///``) goes to ``RDBStorage`` with a heartbeat, for workers on several
machines (``rdb.open_rdb``: safe to open from several processes at once,
and on SQLite each pop takes the database's write lock, since SQLite has no row locks).

Queue. A grid enqueues each variant x seed once (``enqueue_trial``); workers take
queued trials (``optuna_internals.take_queued``) and never create unplanned ones. TPE
trials come from ``study.ask()``.

Failures. A failed trial is told FAIL and re-queued by Optuna's
``RetryHeartbeatStaleTrialCallback`` (up to ``retries`` times), except config/data
errors. A trial whose owner died is found two ways: on the same host its owner pid is
gone (immediate, any storage); on another host its heartbeat went stale (RDB storages,
``fail_stale_trials``, which re-queues through the same callback).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from workbench.errors import ConfigError
from workbench.launch import slurm_env
from workbench.pids import pid_alive
from workbench.study_attrs import (
    ERROR_ATTR,
    FINGERPRINT_ATTR,
    PARENT_ATTR,
    QUEUED_ATTR,
    SEED_ATTR,
    SWEEP_ATTR,
    VARIANT_ATTR,
    WORKER_ATTR,
)
from workbench.sweeps import optuna_internals
from workbench.sweeps.pruning import build_pruner, build_sampler
from workbench.sweeps.rdb import open_rdb
from workbench.sweeps.spec import SweepSpec
from workbench.urls import redacted

JOURNAL_NAME = "optuna-journal.log"
CLAIM_TIMEOUT = timedelta(seconds=60)  # a RUNNING trial nobody claimed for this long is orphaned
OPEN = (TrialState.WAITING, TrialState.RUNNING)
HOST = socket.gethostname()
retry_history = RetryHeartbeatStaleTrialCallback.retry_history  # numbers of the attempts a retry follows


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines and experimental-feature warnings would bury the progress
    display: silence them for the block, then restore the log level and warning filters."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=ExperimentalWarning)
            warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


# ------------------------------------------------------------------ storage
def default_journal(out_dir: str | Path) -> str:
    return str(Path(out_dir) / "sweeps" / JOURNAL_NAME)


def open_optuna(location: str, *, heartbeat_s: int, retries: int) -> BaseStorage:
    """An RDB URL (``scheme://...``) -> RDBStorage with heartbeat; anything else is a journal file path."""
    if "://" not in location:
        try:
            Path(location).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(location))
        except OSError as err:
            raise ConfigError(f"--storage {location!r}: cannot use the journal file: {err}") from None
    if heartbeat_s < 1:
        raise ConfigError(f"--heartbeat {heartbeat_s}: must be >= 1 second")
    shown = redacted(location)
    try:
        return open_rdb(
            location,
            heartbeat_interval=heartbeat_s,
            grace_period=2 * heartbeat_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=retries),
        )
    except ImportError as err:
        raise ConfigError(
            f"--storage {shown!r}: missing database driver ({err}); install it, e.g. psycopg2-binary"
        ) from None
    except Exception as err:  # bad URL, refused connection, permissions
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"--storage {shown!r}: cannot open the Optuna storage: {line.replace(location, shown)}"
        ) from None


# -------------------------------------------------------------------- study
def missing_study(spec: SweepSpec, study_name: str, location: str) -> ConfigError:
    return ConfigError(
        f"no study {study_name!r} in {redacted(location)} to join or resume; start it first: workbench sweep {spec.ref}"
    )


def open_study(spec: SweepSpec, storage: BaseStorage, study_name: str, *, create: bool, location: str) -> optuna.Study:
    """Load the sweep's study, or create it when `create`; refuse one made from another spec."""
    sampler, pruner = build_sampler(spec), build_pruner(spec)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        if not create:
            raise missing_study(spec, study_name, location) from None
        study = optuna.create_study(  # load_if_exists: another coordinator may have created it meanwhile
            storage=storage,
            study_name=study_name,
            direction=spec.direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        if study.metric_names is None:
            study.set_metric_names([spec.objective])  # optuna-dashboard shows it instead of "Objective 0"
    found = study.user_attrs.get(FINGERPRINT_ATTR)
    if found is None:
        study.set_user_attr(FINGERPRINT_ATTR, spec.fingerprint())
        study.set_user_attr(SWEEP_ATTR, spec.name)
    elif found != spec.fingerprint():
        raise ConfigError(
            f"study {study_name!r} in {redacted(location)} was built from a different version of "
            f"sweep {spec.name!r} (or other --set overrides); pass --study-name NEW to start a new study"
        )
    return study


# ------------------------------------------------------------- parent claim
CLAIM_SUFFIX = ".parent-claim"  # the study `<name>.parent-claim` exists => one coordinator makes the parent run
CLAIM_STALE_S = 120.0  # a claim whose parent never appeared after this long (owner elsewhere) is taken over


def claim_parent_run(
    study: optuna.Study, storage: BaseStorage, create: Callable[[], str], *, poll_s: float = 0.2
) -> tuple[str, bool]:
    """The study's MLflow parent run id, created by exactly one of any number of coordinators.

    Checking for the parent and then creating it is a race: two coordinators started
    together both see none and each makes its own, splitting the sweep's child runs.
    The claim is the creation of a study named `<study>.parent-claim`: every storage
    (journal file, RDB) creates a study name once and raises DuplicatedStudyError to
    everyone else. The winner creates the parent and records it on the study; the
    others wait for it. A claim left by a dead owner (same host: its pid is gone;
    elsewhere: older than CLAIM_STALE_S) is deleted and claimed again.
    Returns (parent run id, whether this process created it).
    """
    claim_name = f"{study.study_name}{CLAIM_SUFFIX}"
    waited_since = time.monotonic()
    while not study.user_attrs.get(PARENT_ATTR):
        try:
            claim = optuna.create_study(study_name=claim_name, storage=storage)
        except DuplicatedStudyError:
            if claim_is_stale(storage, claim_name, waited_since):
                with contextlib.suppress(KeyError):
                    optuna.delete_study(study_name=claim_name, storage=storage)
            time.sleep(poll_s)
            continue
        claim.set_user_attr(WORKER_ATTR, {"host": HOST, "pid": os.getpid()})
        if not study.user_attrs.get(PARENT_ATTR):  # else made by a claimer that finished just before us
            return create(), True
    return study.user_attrs[PARENT_ATTR], False


def claim_is_stale(storage: BaseStorage, claim_name: str, waited_since: float) -> bool:
    try:
        owner = optuna.load_study(study_name=claim_name, storage=storage).user_attrs.get(WORKER_ATTR)
    except KeyError:  # deleted meanwhile: claim again
        return False
    if isinstance(owner, dict) and owner.get("host") == HOST and owner.get("pid") != os.getpid():
        return not pid_alive(int(owner["pid"]))
    return time.monotonic() - waited_since > CLAIM_STALE_S


# -------------------------------------------------------------------- queue
def grid_key(trial: FrozenTrial) -> tuple[str, int] | None:
    """(variant, seed) of a grid trial, queued or not. Studies made before the seed left the
    search space carry it as a param; queued trials of studies made before the variant was
    also a user attribute say it only once they run."""
    variant = trial.user_attrs.get(VARIANT_ATTR, trial.params.get("variant"))
    seed = trial.user_attrs.get(SEED_ATTR, trial.params.get("seed"))
    return None if variant is None or seed is None else (str(variant), int(seed))


def lineage_root(trial: FrozenTrial) -> int:
    """The number of the first trial of a retry series (the trial itself when not a retry)."""
    return (retry_history(trial) or [trial.number])[0]


def enqueue_missing(study: optuna.Study, spec: SweepSpec) -> int:
    """Queue every variant x seed that has no COMPLETE, queued or running trial, then mark the
    study queued (a --worker waits for that); return how many were queued."""
    covered = {grid_key(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, *OPEN))}
    missing = [key for key in spec.grid_keys if key not in covered]
    for variant, seed in missing:
        # the seed is a fixed attribute, not a param: importance/contour plots then show only
        # what the sweep varies (a seed "ranked" above the variant was noise)
        study.enqueue_trial({"variant": variant}, user_attrs={VARIANT_ATTR: variant, SEED_ATTR: seed})
    if spec.is_grid and not study.user_attrs.get(QUEUED_ATTR):
        study.set_user_attr(QUEUED_ATTR, True)
    return len(missing)


def _budget_left(spec: SweepSpec, trials: list[FrozenTrial]) -> int:
    """TPE trials not asked for yet (retries do not count against the budget)."""
    return max(0, spec.search.trials - sum(not retry_history(t) for t in trials))


def open_trials(spec: SweepSpec, trials: list[FrozenTrial]) -> int:
    """Trials a worker may still take: queued or running, plus (TPE) the budget not asked for yet."""
    running = sum(t.state in OPEN for t in trials)
    return running if spec.is_grid else running + _budget_left(spec, trials)


def tally(spec: SweepSpec, trials: list[FrozenTrial]) -> tuple[int, int]:
    """(done, failed) over the whole study: variant x seed keys completed and keys whose last
    attempt failed (grid); finished trials and failures nobody retries (TPE)."""
    if spec.is_grid:
        done = {grid_key(t) for t in trials if t.state == TrialState.COMPLETE}
        still_open = {grid_key(t) for t in trials if t.state in OPEN}
        failed = {grid_key(t) for t in trials if t.state == TrialState.FAIL} - done - still_open
        return len(done), len(failed)
    retried = {number for t in trials for number in retry_history(t)}
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return done, sum(t.state == TrialState.FAIL and t.number not in retried for t in trials)


def take(study: optuna.Study, spec: SweepSpec) -> optuna.Trial | None:
    """The next trial for this process, claimed: a queued one (grid trials, retries), else a new
    TPE trial while the search has budget left; None when there is nothing to take."""
    trial = optuna_internals.take_queued(study)
    if trial is None and not spec.is_grid and _budget_left(spec, study.get_trials(deepcopy=False)):
        trial = study.ask()
    if trial is not None:
        claim(trial)
    return trial


def claim(trial: optuna.Trial) -> None:
    """Mark `trial` as run by this process (so a restart on this host can tell if we died)."""
    owner: dict[str, Any] = {"host": HOST, "pid": os.getpid(), "trial": trial.number}
    job = slurm_env.job_tags()  # inside a SLURM job: which one (reaped by its id when it vanishes)
    if job:
        owner.update(
            slurm_job_id=job[slurm_env.JOB_TAG],
            slurm_node=job.get(slurm_env.NODE_TAG, HOST),
            slurm_restart=job[slurm_env.RESTART_TAG],
        )
    trial.set_user_attr(WORKER_ATTR, owner)
    if trial.user_attrs.get(ERROR_ATTR) is not None:  # inherited from the failed attempt this one retries
        trial.set_user_attr(ERROR_ATTR, None)


# ------------------------------------------------------------------ failures
def fail(
    study: optuna.Study,
    trial: FrozenTrial | optuna.Trial,
    reason: str,
    *,
    retry: RetryHeartbeatStaleTrialCallback | None,
) -> bool:
    """FAIL a running trial, saying why, and re-queue it through `retry`. False when it was
    finished already: of several processes failing one trial, exactly one re-queues it."""
    try:
        optuna_internals.set_user_attr(study, trial, ERROR_ATTR, reason)
        failed = study.tell(trial.number, state=TrialState.FAIL)
    except (UpdateFinishedTrialError, ValueError):  # tell raises ValueError for a trial no longer RUNNING
        return False
    if retry is not None:
        retry(study, failed)
    return True


def reap(
    study: optuna.Study, lost: Callable[[dict | None, FrozenTrial], str | None], retry: RetryHeartbeatStaleTrialCallback
) -> list[int]:
    """FAIL (and re-queue) the RUNNING trials whose owner is gone; return their numbers.
    `lost(owner, trial)` says why the owner is gone, or None; `owner` is None when the trial
    was never claimed (a retry inherits its failed attempt's owner, which does not count)."""
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR)
        claimed = isinstance(owner, dict) and owner.get("trial") == trial.number
        reason = lost(owner if claimed else None, trial)
        if reason and fail(study, trial, reason, retry=retry):
            reaped.append(trial.number)
    return reaped


def reap_orphans(
    study: optuna.Study, running_here: Iterable[int], retry: RetryHeartbeatStaleTrialCallback
) -> list[int]:
    """FAIL (and re-queue) running trials whose owner is gone; return their numbers.

    Same host: the owner's pid is dead (or is this process, which is not running it).
    Unclaimed for CLAIM_TIMEOUT: its owner died between taking and claiming it.
    Other hosts: their heartbeats went stale (RDB storages, ``fail_stale_trials``).
    """

    def lost(owner: dict | None, trial: FrozenTrial) -> str | None:
        if owner is None:
            return "nobody claimed it (its sweep process died while starting it)" if _older(trial) else None
        if owner.get("host") != HOST:
            return None
        if owner.get("pid") == os.getpid():
            return None if trial.number in running_here else "a previous sweep process with this pid no longer runs it"
        return None if pid_alive(int(owner["pid"])) else f"its sweep process (pid {owner['pid']} on {HOST}) died"

    reaped = reap(study, lost, retry)
    optuna.storages.fail_stale_trials(study)  # a no-op without a heartbeat
    return reaped


def _older(trial: FrozenTrial, age: timedelta = CLAIM_TIMEOUT) -> bool:
    start = trial.datetime_start
    if start is None:
        return False
    return (datetime.now(start.tzinfo) if start.tzinfo else datetime.now()) - start > age
