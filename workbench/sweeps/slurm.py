"""`workbench sweep NAME --launcher slurm`: the sweep's trials run in SLURM worker jobs.

The submitting command is the coordinator: it creates (or reopens) the study and
the MLflow parent run, queues every missing variant x seed, then submits worker
jobs with submitit -- up to ``--max-parallel`` of them, never more than there are
open trials. Each worker job is ``workbench sweep --worker`` on one slot (one GPU
or ``--cpus-per-trial`` CPUs): it pops queued trials from the shared Optuna
storage until none is left, so the scheduler only ever places whole workers and a
slow trial never holds up a job array.

Idempotent: the study records the ids of the jobs it submitted; running the
command again counts those squeue still lists (pending, running, requeued) and
submits only the missing workers. Failures:

* ``scancel``, pre-emption (SIGTERM) or the time limit (submitit's SIGUSR2,
  ``SIGNAL_DELAY_S`` early): the worker stops its trial (the MLflow run is marked
  KILLED, its last checkpoint kept) and fails it; the sweep's ``retries`` re-queue
  it and the next attempt resumes the run from its checkpoint. A worker stopped by
  the time limit requeues its own job.
* A job that vanished without a word (node crash, SIGKILL): its trial is still
  RUNNING, claimed by a job squeue no longer lists; the coordinator's watch loop,
  the other workers, and the next submission fail and re-queue it
  (``reap_lost_jobs``). A requeued job reaps what its earlier run left.

While it waits, the coordinator shows a line per job and submits replacements
when jobs end early while trials are left (at most ``max_parallel x (retries+1)``
times, so a job that cannot even start does not loop). With ``--no-wait`` it
returns after submitting; the last worker closes the parent run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from workbench import tracking
from workbench.errors import ConfigError, did_you_mean
from workbench.launch import slurm as cluster
from workbench.launch import slurm_env
from workbench.sweeps import runs
from workbench.sweeps.progress import SlotView, Snapshot, SweepProgress
from workbench.sweeps.runner import SweepOptions, SweepResult, _quiet_optuna, open_parent_run, run_sweep
from workbench.sweeps.spec import SweepSpec, load_spec, resolve_spec_path, variant_config
from workbench.sweeps.study import (
    ERROR_ATTR,
    PARENT_ATTR,
    QUEUED_ATTR,
    TRACKING_ATTR,
    WORKER_ATTR,
    default_storage,
    describe_storage,
    enqueue_missing,
    fail,
    grid_key,
    open_storage,
    open_study,
    study_exists,
)

JOBS_ATTR = "workbench.slurm_jobs"  # study: ids of the worker jobs submitted for it, in order
REAP_EVERY_S = 15.0  # how often a worker looks for trials of vanished jobs


@dataclass
class SlurmSweepOptions:
    resources: cluster.SlurmResources = field(default_factory=cluster.SlurmResources)
    max_parallel: int = 4  # worker jobs at once
    wait: bool = True  # watch the jobs until the sweep ends (else return after submitting)
    poll_s: float = 2.0


def job_name(study_name: str) -> str:
    return f"wb-sweep-{study_name}"


# ------------------------------------------------------------------ the coordinator
@dataclass
class _Sweep:
    """The open study, its parent run and where its jobs write."""

    spec: SweepSpec
    sets: list[str]
    options: SweepOptions
    location: str
    storage: optuna.storages.BaseStorage
    study: optuna.Study
    study_name: str
    uri: str
    parent_run_id: str
    folder: Path  # submitit's pickles and the jobs' logs

    @property
    def name(self) -> str:
        return job_name(self.study_name)

    def recorded_jobs(self) -> list[str]:
        return list(self.study.user_attrs.get(JOBS_ATTR) or [])

    def active_jobs(self) -> dict[str, cluster.QueuedJob]:
        recorded = set(self.recorded_jobs())
        return {i: job for i, job in cluster.active_jobs(self.name).items() if i in recorded}

    def retry(self) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.spec.retries)


def launch(
    spec: SweepSpec,
    sets: list[str],
    options: SweepOptions,
    slurm: SlurmSweepOptions,
    echo: Callable[[str], None] = print,
) -> SweepResult | None:
    """Submit the sweep's missing worker jobs; wait for the sweep to end unless `slurm.wait` is off."""
    if slurm.max_parallel < 1:
        raise ConfigError(f"--max-parallel {slurm.max_parallel}: must be >= 1")
    if slurm.resources.gpus not in (0, 1):
        raise ConfigError(
            f"--gpus-per-trial {slurm.resources.gpus}: a sweep trial trains on one GPU — allowed: 0 (CPU) or 1; "
            "use --max-parallel for more trials at once"
        )
    if slurm.resources.cpus is not None and slurm.resources.cpus < 1:
        raise ConfigError(f"--cpus-per-trial {slurm.resources.cpus}: must be >= 1")
    partition = cluster.check_partition(slurm.resources)
    started = time.monotonic()
    sweep = _open(spec, sets, options, create=not options.resume)
    for warning in cluster.unshared_paths(_shared_paths(sweep), partition):
        echo(warning)
    active = sweep.active_jobs()
    reap_lost_jobs(sweep.study, sweep.storage, sweep.retry(), set(active))
    if spec.is_grid:
        enqueue_missing(sweep.study, spec)
        if not sweep.study.user_attrs.get(QUEUED_ATTR):
            sweep.study.set_user_attr(QUEUED_ATTR, True)
    submitted = _submit_missing(sweep, slurm, partition, active)
    queued = ", ".join(sorted(active))
    echo(
        f"sweep {spec.name}: study {sweep.study_name!r} in {describe_storage(sweep.location)}; "
        f"submitted {len(submitted)} worker job(s){': ' + ', '.join(submitted) if submitted else ''}"
        f"{'; already queued: ' + queued if queued else ''}; logs in {sweep.folder}"
    )
    if not slurm.wait:
        echo(f"watch: workbench sweep {spec.ref} --status   ·   stop: workbench sweep {spec.ref} --cancel")
        return None
    return _watch(sweep, slurm, partition, started)


def _open(spec: SweepSpec, sets: list[str], options: SweepOptions, *, create: bool) -> _Sweep:
    """The study and the MLflow parent run, as `run_sweep` opens them (created here when `create`)."""
    _quiet_optuna()
    base_cfg = variant_config(spec, spec.variants[0].overrides if spec.is_grid else {})
    location = options.storage or default_storage(base_cfg.train.out_dir)
    if "://" not in location:
        location = str(Path(location).resolve())  # the jobs may start elsewhere
    storage = open_storage(location, heartbeat_s=options.heartbeat_s, retries=spec.retries)
    study_name = options.study_name or spec.name
    if not create and not study_exists(storage, study_name):
        raise ConfigError(
            f"no study {study_name!r} in {describe_storage(location)}; start it first: "
            f"workbench sweep {spec.ref} --launcher slurm"
        )
    study = open_study(spec, storage, study_name, create=create, location=location)
    uri = tracking.resolve_uri(options.tracking_uri or study.user_attrs.get(TRACKING_ATTR) or base_cfg.tracking.uri)
    parent_run_id = study.user_attrs.get(PARENT_ATTR)
    if create:  # one parent, however many shells submit
        parent_run_id = open_parent_run(spec, study, storage, uri, base_cfg.tracking.experiment, location)
    folder = Path(base_cfg.train.out_dir).resolve() / "sweeps" / study_name / "slurm"
    return _Sweep(spec, sets, options, location, storage, study, study_name, uri, parent_run_id or "", folder)


def _shared_paths(sweep: _Sweep) -> dict[str, Path]:
    paths = {"the submitit folder": sweep.folder, "the checkpoints (train.out_dir)": sweep.folder.parents[2]}
    if "://" not in sweep.location:
        paths["the Optuna journal (--storage)"] = Path(sweep.location)
    if sweep.uri.startswith("sqlite:///"):
        paths["the MLflow store (--tracking-uri)"] = Path(sweep.uri.removeprefix("sqlite:///"))
    return paths


def _open_trials(sweep: _Sweep) -> int:
    """Trials a worker may still take: queued or running (grid); budget left (search)."""
    trials = sweep.study.get_trials(deepcopy=False)
    open_ = sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials)
    if sweep.spec.is_grid:
        return open_
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return max(open_, sweep.spec.search.trials - done)


def _submit_missing(
    sweep: _Sweep, slurm: SlurmSweepOptions, partition: cluster.Partition, active: dict[str, cluster.QueuedJob]
) -> list[str]:
    missing = min(slurm.max_parallel, _open_trials(sweep)) - len(active)
    if missing <= 0:
        return []
    ex = cluster.executor(sweep.folder, slurm.resources, partition, name=sweep.name)
    worker = WorkerArgs(
        spec_path=str(resolve_spec_path(sweep.spec.ref or sweep.spec.name).resolve()),
        sets=sweep.sets,
        storage=sweep.location,
        study_name=sweep.study_name,
        tracking_uri=sweep.uri,
        heartbeat_s=sweep.options.heartbeat_s,
        trainer=sweep.options.trainer,
        gpus=slurm.resources.gpus,
        cpus=slurm.resources.cpus,
    )
    ids = []
    try:
        for _ in range(missing):
            ids.append(str(ex.submit(work, worker).job_id))
    finally:  # record what was submitted even if a later sbatch failed
        if ids:
            sweep.study.set_user_attr(JOBS_ATTR, sweep.recorded_jobs() + ids)
    return ids


def _watch(sweep: _Sweep, slurm: SlurmSweepOptions, partition: cluster.Partition, started: float) -> SweepResult:
    """Show the jobs until the sweep ends; replace jobs that ended while trials are left."""
    spec, study = sweep.spec, sweep.study
    replacements = slurm.max_parallel * (spec.retries + 1)
    seen: set[int] = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    crashes: list[str] = []
    interrupted = False
    try:
        with SweepProgress(enabled=sweep.options.progress) as progress:
            while True:
                active = sweep.active_jobs()  # before reading the trials: a job gone now has told its trial
                reap_lost_jobs(study, sweep.storage, sweep.retry(), set(active))
                trials = study.get_trials(deepcopy=False)
                for trial in trials:
                    if trial.state.is_finished() and trial.number not in seen:
                        seen.add(trial.number)
                        progress.trial_finished(_finished_line(trial))
                progress.update(_snapshot(sweep, trials, active))
                if _result(sweep, [], False, started).finished or _open_trials(sweep) == 0:
                    break
                if len(active) < min(slurm.max_parallel, _open_trials(sweep)):
                    if replacements <= 0:
                        crashes.append(
                            f"worker jobs kept ending with trials left; see the job logs in {sweep.folder}"
                        )
                        break
                    replacements -= len(_submit_missing(sweep, slurm, partition, active))
                time.sleep(slurm.poll_s)
    except KeyboardInterrupt:
        interrupted = True
    result = _result(sweep, crashes, interrupted, started)
    if result.finished:
        runs.finish_parent_run(sweep.parent_run_id, sweep.uri, "FINISHED")
    elif not interrupted:  # Ctrl-C leaves the jobs running: the parent stays RUNNING
        runs.finish_parent_run(sweep.parent_run_id, sweep.uri, "FAILED")
    return result


def _result(sweep: _Sweep, crashes: list[str], interrupted: bool, started: float) -> SweepResult:
    return SweepResult(
        spec=sweep.spec,
        study_name=sweep.study_name,
        storage=sweep.location,
        parent_run_id=sweep.parent_run_id,
        tracking_uri=sweep.uri,
        trials=sweep.study.get_trials(deepcopy=False),
        interrupted=interrupted,
        crashes=crashes,
        seconds=time.monotonic() - started,
    )


def _snapshot(sweep: _Sweep, trials: list[FrozenTrial], active: dict[str, cluster.QueuedJob]) -> Snapshot:
    running = {}
    for trial in trials:
        owner = trial.user_attrs.get(WORKER_ATTR)
        if trial.state == TrialState.RUNNING and isinstance(owner, dict) and owner.get("slurm_job_id"):
            running[owner["slurm_job_id"]] = trial
    views = []
    for job_id, job in sorted(active.items()):
        trial = running.get(job_id)
        if trial is None:
            label = f"{job_id} {job.state.lower()}" + (f" ({job.reason})" if job.state == "PENDING" else "")
            views.append(SlotView(label))
        else:
            key = grid_key(trial) or ("", None)
            start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
            views.append(SlotView(f"{job_id}@{job.node}", trial.number, key[0], key[1], time.monotonic() - (time.time() - start)))
    done = len({grid_key(t) for t in trials if t.state == TrialState.COMPLETE}) if sweep.spec.is_grid else sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials
    )
    failed = sum(t.state == TrialState.FAIL for t in trials)
    return Snapshot(title=sweep.study_name, done=done, total=sweep.spec.total_trials, failed=failed, slots=views)


def _finished_line(trial: FrozenTrial) -> str:
    owner = trial.user_attrs.get(WORKER_ATTR) or {}
    key = grid_key(trial)
    what = f"trial {trial.number}" + (f" {key[0]} seed {key[1]}" if key else "")
    where = f"job {owner.get('slurm_job_id', '?')} on {owner.get('slurm_node', owner.get('host', '?'))}"
    if trial.state == TrialState.COMPLETE:
        return f"{where}: {what}: COMPLETE {trial.value:.4g}"
    if trial.state == TrialState.FAIL:
        return f"{where}: {what}: FAIL — {trial.user_attrs.get(ERROR_ATTR)}"
    return f"{where}: {what}: {trial.state.name}"


# ------------------------------------------------------------------ the command
LAUNCHERS = ("local", "slurm")


def command(
    spec: SweepSpec,
    sets: list[str],
    options: SweepOptions,
    *,
    launcher: str,
    slurm: SlurmSweepOptions,
    show_status: bool = False,
    cancel_jobs: bool = False,
    echo: Callable[[str], None] = print,
) -> SweepResult | None:
    """What `workbench sweep` does beyond running locally: --launcher slurm, --status, --cancel."""
    if launcher not in LAUNCHERS:
        hint = did_you_mean(launcher, LAUNCHERS)
        raise ConfigError(f"--launcher {launcher!r}: unknown launcher{hint}; allowed: {', '.join(LAUNCHERS)}")
    if show_status and cancel_jobs:
        raise ConfigError("--status and --cancel exclude each other: --status shows the sweep, --cancel stops its jobs")
    if show_status:
        echo(status(spec, options))
        return None
    if cancel_jobs:
        echo(cancel(spec, options))
        return None
    if launcher == "slurm":
        local = [name for name, used in (("--slots", options.slots is not None), ("--gpus", options.gpus is not None),
                                          ("--per-gpu", options.per_gpu != 1), ("--worker", options.worker)) if used]
        if local:
            raise ConfigError(
                f"{local[0]} is for trials on this machine; with --launcher slurm use --max-parallel and --gpus-per-trial"
            )
        return launch(spec, sets, options, slurm, echo)
    return run_sweep(spec, options)


# ------------------------------------------------------------------ --status, --cancel
def status(spec: SweepSpec, options: SweepOptions) -> str:
    """Each trial's state, value, SLURM job and node; then the sweep's jobs squeue still lists."""
    sweep = _open(spec, [], options, create=False)
    queued, unreachable = {}, ""
    if _has_slurm():
        try:
            queued = sweep.active_jobs()
        except ConfigError as err:  # the trials' records still answer
            unreachable = str(err).removeprefix("--launcher slurm: ")
    rows = [("trial", "variant", "seed", "state", "value", "job", "node")]
    for trial in sweep.study.get_trials(deepcopy=False):
        owner = trial.user_attrs.get(WORKER_ATTR) or {}
        key = grid_key(trial) or ("-", "-")
        job = owner.get("slurm_job_id", "-")
        node = owner.get("slurm_node", owner.get("host", "-")) if trial.state != TrialState.WAITING else "-"
        value = f"{trial.value:.4g}" if trial.value is not None else "-"
        rows.append((str(trial.number), str(key[0]), str(key[1]), trial.state.name, value, job, node))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"sweep {spec.name}: study {sweep.study_name!r} in {describe_storage(sweep.location)}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    recorded = sweep.recorded_jobs()
    if unreachable:
        lines.append(f"jobs: unknown ({unreachable})")
    elif queued:
        jobs = ", ".join(
            f"{i} {j.state}" + (f" on {j.node}" if j.node else "") + (f" ({j.reason})" if j.state == "PENDING" else "")
            for i, j in sorted(queued.items())
        )
        lines.append(f"jobs in the queue: {jobs}")
    elif recorded:
        lines.append(f"no job of this sweep is queued ({len(recorded)} submitted in all; logs in {sweep.folder})")
    return "\n".join(lines)


def cancel(spec: SweepSpec, options: SweepOptions) -> str:
    """scancel the sweep's queued jobs; their running trials are failed and re-queued by the workers."""
    cluster.require_sbatch("--cancel")
    sweep = _open(spec, [], options, create=False)
    active = sorted(sweep.active_jobs())
    cluster.cancel(active)
    if sweep.parent_run_id and active:
        runs.finish_parent_run(sweep.parent_run_id, sweep.uri, "KILLED")
    if not active:
        return f"sweep {spec.name}: no job of study {sweep.study_name!r} is queued; nothing to cancel"
    return (
        f"sweep {spec.name}: cancelled {len(active)} job(s): {', '.join(active)}; their trials are re-queued — "
        f"`workbench sweep {spec.ref} --launcher slurm` resumes the sweep"
    )


def _has_slurm() -> bool:
    try:
        cluster.require_sbatch()
        return True
    except ConfigError:
        return False


# ------------------------------------------------------------------ reaping
def reap_lost_jobs(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    retry: optuna.storages.RetryHeartbeatStaleTrialCallback,
    active: set[str] | None,
    *,
    own_job: str | None = None,
) -> list[int]:
    """FAIL (and re-queue) RUNNING trials claimed by a SLURM job that squeue no longer lists (`active`,
    read from squeue *before* this call, so a job missing from it had told its trial before exiting);
    or, with `own_job` (a requeued job starting again, which has claimed nothing yet), only those
    an earlier run of this very job left behind."""
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR)
        if not isinstance(owner, dict) or owner.get("trial") != trial.number or not owner.get("slurm_job_id"):
            continue
        job = owner["slurm_job_id"]
        if own_job is not None:
            if job != own_job:
                continue
            reason = f"its SLURM job {job} was requeued (pre-empted or scontrol requeue)"
        elif active is None or job in active:
            continue
        else:
            reason = f"its SLURM job {job} ended without finishing it (cancelled, pre-empted, node failure)"
        if fail(study, storage, trial.number, reason, retry=retry):
            reaped.append(trial.number)
    return reaped


# ------------------------------------------------------------------ in the worker job
@dataclass(frozen=True)
class WorkerArgs:
    spec_path: str
    sets: list[str]
    storage: str
    study_name: str
    tracking_uri: str
    heartbeat_s: int
    trainer: str
    gpus: int
    cpus: int | None


class _Stop:
    """SIGTERM (scancel, pre-emption) or SIGUSR2 (time limit near): stop like Ctrl-C, remember which."""

    def __init__(self) -> None:
        self.signum: int | None = None
        for signum in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            raise KeyboardInterrupt


def work(args: WorkerArgs) -> str:
    """One worker job: pop the study's queued trials and run them, one at a time, until none is left."""
    _start_trial_server_deaf()
    stop = _Stop()  # replaces submitit's handlers: a trial must stop cleanly on SIGTERM too
    _quiet_optuna()
    me = slurm_env.job_id()
    spec = load_spec(args.spec_path, args.sets)
    storage = open_storage(args.storage, heartbeat_s=args.heartbeat_s, retries=spec.retries)
    study = optuna.load_study(study_name=args.study_name, storage=storage)
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=spec.retries)
    if me:
        reap_lost_jobs(study, storage, retry, None, own_job=me)
    done = threading.Event()
    reaper = threading.Thread(
        target=_reap_loop, args=(study, storage, retry, job_name(args.study_name), done), name="slurm-reaper", daemon=True
    )
    reaper.start()
    cpus = args.cpus or _int(os.environ.get("SLURM_CPUS_PER_TASK"))
    options = SweepOptions(
        storage=args.storage, study_name=args.study_name, worker=True, slots=None if args.gpus else 1,
        tracking_uri=args.tracking_uri, heartbeat_s=args.heartbeat_s, progress=False, trainer=args.trainer, cpus=cpus,
    )
    try:
        result = run_sweep(spec, options)
    finally:
        done.set()
    if stop.signum == signal.SIGUSR2 and me and not result.finished:
        cluster.requeue(me)  # the time limit: come back with a fresh one; the trial resumes from its checkpoint
    return result.summary()


def _start_trial_server_deaf() -> None:
    """Start the trials' forkserver ignoring SIGTERM and SIGUSR2 (an ignored signal survives exec).

    SLURM signals every process of the job. A forkserver killed by it would close the
    pipes the worker waits on, so the worker would take a trial still saving its run
    for dead, re-queue it and exit while it runs on: the next attempt would resume a
    run that is still being written. Ignoring them, the forkserver lives until the
    worker exits; the trials set their own handlers (``child.main``)."""
    from workbench.sweeps import child

    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        child.warm_up(wait=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _reap_loop(study, storage, retry, name: str, done: threading.Event) -> None:
    while not done.wait(REAP_EVERY_S):
        try:
            active = set(cluster.active_jobs(name))
            reap_lost_jobs(study, storage, retry, active)
        except Exception:  # squeue busy or absent on this node: the coordinator reaps too
            pass


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None
