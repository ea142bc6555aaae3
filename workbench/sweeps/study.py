"""The Optuna side of a sweep: storage, study, the trial queue, dead and stale trials.

Storage. The local default is Optuna's journal file (``JournalStorage`` +
``JournalFileBackend``, file-locked appends): Optuna's docs recommend it for
several processes on one machine and "would never recommend SQLite3 for parallel
optimization" (``RDBStorage`` docs). Any RDB URL (``postgresql://``, ``mysql://``,
also ``sqlite:///``) goes to ``RDBStorage`` with a heartbeat, for workers on several
machines (``rdb.open_rdb_storage``: safe to open from several processes at once,
and on SQLite each pop takes the database's write lock, since SQLite has no row locks).

Queue. A grid enqueues each variant x seed once (``enqueue_trial``); workers pop
queued trials with the storage's atomic WAITING -> RUNNING transition and never
create unplanned trials. TPE trials are created with ``study.ask()``.

Failures. A failed trial is re-queued by ``RetryHeartbeatStaleTrialCallback``
(up to ``retries`` times), except config/data errors. A trial whose owner died
is found two ways: on the same host its owner pid is gone (immediate, any
storage); on another host its heartbeat went stale (RDB storages,
``fail_stale_trials``).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import socket
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from workbench.errors import ConfigError
from workbench.launch import slurm_env
from workbench.pids import pid_alive
from workbench.sweeps.pruning import build_pruner, build_sampler
from workbench.sweeps.rdb import open_rdb_storage
from workbench.sweeps.space import SEED_ATTR  # a trial's seed: a fixed user attribute, not a searched param
from workbench.sweeps.spec import SweepSpec

JOURNAL_NAME = "optuna-journal.log"
WORKER_ATTR = "workbench.worker"  # {"host", "pid", "trial"} of the process running the trial
ERROR_ATTR = "workbench.error"
FINGERPRINT_ATTR = "workbench.fingerprint"
PARENT_ATTR = "workbench.parent_run_id"
TRACKING_ATTR = "workbench.tracking_uri"
QUEUED_ATTR = "workbench.queued"  # the coordinator has queued the grid: workers may start
REPORT_ATTR = "workbench.report"  # where `workbench report ablations` puts the sweep's page (MLflow artifact)
CLAIM_TIMEOUT = timedelta(seconds=60)  # a RUNNING trial nobody claimed for this long is orphaned
HOST = socket.gethostname()


# ------------------------------------------------------------------ storage
def default_storage(out_dir: str | Path) -> str:
    return str(Path(out_dir) / "sweeps" / JOURNAL_NAME)


def open_storage(location: str, *, heartbeat_s: int, retries: int) -> BaseStorage:
    """An RDB URL (``scheme://...``) -> RDBStorage with heartbeat; anything else is a journal file path."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)
    if "://" not in location:
        path = Path(location)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise ConfigError(f"--storage {location!r}: cannot use the journal file: {err}") from None
    if heartbeat_s < 1:
        raise ConfigError(f"--heartbeat {heartbeat_s}: must be >= 1 second")
    try:
        return open_rdb_storage(
            location,
            heartbeat_interval=heartbeat_s,
            grace_period=2 * heartbeat_s,
            heartbeat_stale_trial_callback=retry,
        )
    except ImportError as err:
        raise ConfigError(
            f"--storage {describe_storage(location)!r}: missing database driver ({err}); install it, e.g. psycopg2-binary"
        ) from None
    except Exception as err:  # bad URL, refused connection, permissions
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        line = line.replace(location, describe_storage(location))
        raise ConfigError(f"--storage {describe_storage(location)!r}: cannot open the Optuna storage: {line}") from None


def describe_storage(location: str) -> str:
    """The storage location without a password, for messages and tags."""
    if "://" in location and "@" in location:
        scheme, rest = location.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return location


# -------------------------------------------------------------------- study
def open_study(
    spec: SweepSpec, storage: BaseStorage, study_name: str, *, create: bool, location: str
) -> optuna.Study:
    """Load the sweep's study, or create it when `create`; refuse one made from another spec."""
    sampler, pruner = build_sampler(spec), build_pruner(spec)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        if not create:
            raise ConfigError(
                f"no study {study_name!r} in {describe_storage(location)} to join or resume; "
                f"start it first: workbench sweep {spec.ref}"
            ) from None
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction=spec.direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,  # another coordinator may have created it meanwhile
        )
        if study.metric_names is None:
            study.set_metric_names([spec.objective])  # optuna-dashboard shows it instead of "Objective 0"
    fingerprint = spec.fingerprint()
    found = study.user_attrs.get(FINGERPRINT_ATTR)
    if found is None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
        study.set_user_attr("workbench.sweep", spec.name)
    elif found != fingerprint:
        raise ConfigError(
            f"study {study_name!r} in {describe_storage(location)} was built from a different version of "
            f"sweep {spec.name!r} (or other --set overrides); pass --study-name NEW to start a new study"
        )
    return study


def study_exists(storage: BaseStorage, study_name: str) -> bool:
    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:
        return False
    return True


def study_id(study: optuna.Study, storage: BaseStorage) -> int:
    return storage.get_study_id_from_name(study.study_name)


def trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(study_id(study, storage), number)


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
    while True:
        parent = study.user_attrs.get(PARENT_ATTR)
        if parent:
            return parent, False
        try:
            claim_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], claim_name)
        except optuna.exceptions.DuplicatedStudyError:
            if _claim_is_stale(storage, claim_name, waited_since):
                with contextlib.suppress(KeyError):
                    storage.delete_study(storage.get_study_id_from_name(claim_name))
            time.sleep(poll_s)
            continue
        storage.set_study_user_attr(claim_id, WORKER_ATTR, {"host": HOST, "pid": os.getpid()})
        parent = study.user_attrs.get(PARENT_ATTR)  # made by a claimer that finished just before us
        if parent:
            return parent, False
        return create(), True


def _claim_is_stale(storage: BaseStorage, claim_name: str, waited_since: float) -> bool:
    try:
        owner = storage.get_study_user_attrs(storage.get_study_id_from_name(claim_name)).get(WORKER_ATTR)
    except KeyError:  # deleted meanwhile: claim again
        return False
    if isinstance(owner, dict) and owner.get("host") == HOST and owner.get("pid") != os.getpid():
        return not pid_alive(int(owner["pid"]))
    return time.monotonic() - waited_since > CLAIM_STALE_S


# -------------------------------------------------------------------- queue
def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """Params of a trial, also while it is still queued (then they are its fixed params)."""
    return trial.params or trial.system_attrs.get("fixed_params", {})


def trial_seed(trial: FrozenTrial) -> int | None:
    """The seed a trial runs: its user attribute (set when queued; retries copy it). Studies made
    before the seed left the search space carry it as a param."""
    seed = trial.user_attrs.get(SEED_ATTR, trial_params(trial).get("seed"))
    return None if seed is None else int(seed)


def grid_key(trial: FrozenTrial) -> tuple[str, int] | None:
    params = trial_params(trial)
    seed = trial_seed(trial)
    if "variant" not in params or seed is None:
        return None
    return str(params["variant"]), seed


def lineage_root(trial: FrozenTrial) -> int:
    """The number of the first trial of a retry series (the trial itself when not a retry)."""
    history = trial.system_attrs.get("retry_history") or []
    return int(history[0]) if history else trial.number


def enqueue_missing(study: optuna.Study, spec: SweepSpec) -> int:
    """Queue every variant x seed that has no COMPLETE, queued or running trial; return how many."""
    covered = {
        grid_key(t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING))
    }
    added = 0
    for variant in spec.variants:
        for seed in spec.seeds:
            if (variant.name, seed) not in covered:
                # the seed is a fixed attribute, not a param: importance/contour plots then show only
                # what the sweep varies (a seed "ranked" above the variant was noise)
                study.enqueue_trial({"variant": variant.name}, user_attrs={SEED_ATTR: seed})
                added += 1
    return added


def pop_waiting(study: optuna.Study, storage: BaseStorage) -> optuna.Trial | None:
    """Take one queued trial (atomic across processes), or None; never creates a trial."""
    sid = study_id(study, storage)
    for frozen in storage.get_all_trials(sid, deepcopy=False, states=(TrialState.WAITING,)):
        tid = storage.get_trial_id_from_study_id_trial_number(sid, frozen.number)
        try:
            if storage.set_trial_state_values(tid, state=TrialState.RUNNING):
                return optuna.trial.Trial(study, tid)
        except UpdateFinishedTrialError:
            continue
    return None


def claim(study: optuna.Study, storage: BaseStorage, trial: optuna.Trial) -> None:
    """Mark `trial` as run by this process (so a restart on this host can tell if we died)."""
    tid = trial_id(storage, study, trial.number)
    if heartbeat_enabled(storage):
        storage.record_heartbeat(tid)
    owner = {"host": HOST, "pid": os.getpid(), "trial": trial.number}
    job = slurm_env.job_tags()  # inside a SLURM job: which one (reaped by its id when it vanishes)
    if job:
        owner.update(slurm_job_id=job[slurm_env.JOB_TAG], slurm_node=job.get(slurm_env.NODE_TAG, HOST),
                     slurm_restart=job[slurm_env.RESTART_TAG])
    trial.set_user_attr(WORKER_ATTR, owner)
    if ERROR_ATTR in trial.user_attrs:  # inherited from the failed attempt this one retries
        trial.set_user_attr(ERROR_ATTR, None)


def fail(
    study: optuna.Study,
    storage: BaseStorage,
    number: int,
    reason: str,
    *,
    retry: RetryHeartbeatStaleTrialCallback | None,
) -> bool:
    """FAIL a running trial (recording why) and re-queue it via `retry`; False if it was already finished."""
    tid = trial_id(storage, study, number)
    try:
        storage.set_trial_user_attr(tid, ERROR_ATTR, reason)
        if not storage.set_trial_state_values(tid, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    if retry is not None:
        retry(study, copy.deepcopy(storage.get_trial(tid)))
    return True


def reap_orphans(
    study: optuna.Study,
    storage: BaseStorage,
    running_here: set[int],
    retry: RetryHeartbeatStaleTrialCallback,
) -> list[int]:
    """FAIL (and re-queue) running trials whose owner is gone; return their numbers.

    Same host: the owner's pid is dead (or is this process, which is not running it).
    Unclaimed for CLAIM_TIMEOUT: its owner died between popping and claiming it.
    Other hosts: left to the heartbeat (``fail_stale_trials``) on RDB storages.
    """
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR)
        if not isinstance(owner, dict) or owner.get("trial") != trial.number:
            if not _started_before(trial, CLAIM_TIMEOUT):
                continue
            reason = "nobody claimed it (its sweep process died while starting it)"
        elif owner.get("host") != HOST:
            continue
        elif owner.get("pid") == os.getpid():
            if trial.number in running_here:
                continue
            reason = "a previous sweep process with this pid no longer runs it"
        elif pid_alive(int(owner["pid"])):
            continue
        else:
            reason = f"its sweep process (pid {owner['pid']} on {HOST}) died"
        if fail(study, storage, trial.number, reason, retry=retry):
            reaped.append(trial.number)
    if heartbeat_enabled(storage):
        optuna.storages.fail_stale_trials(study)
    return reaped


def _started_before(trial: FrozenTrial, age: timedelta) -> bool:
    start = trial.datetime_start
    if start is None:
        return False
    now = datetime.now(start.tzinfo) if start.tzinfo else datetime.now()
    return now - start > age


# ---------------------------------------------------------------- heartbeat
def heartbeat_enabled(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


class Heartbeat:
    """Records a running trial's heartbeat every interval (RDB storages), as Study.optimize would."""

    def __init__(self, storage: BaseStorage, study: optuna.Study, number: int):
        self._storage = storage
        self._trial_id = trial_id(storage, study, number)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if heartbeat_enabled(self._storage):
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self._trial_id}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        interval = self._storage.get_heartbeat_interval()
        while not self._stop.is_set():
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # a transient DB error must not kill the trial; the next beat retries
                pass
            self._stop.wait(interval)
