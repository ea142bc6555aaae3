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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from workbench.errors import ConfigError
from workbench.launch import slurm as cluster
from workbench.launch import slurm_env
from workbench.study_attrs import ERROR_ATTR, JOBS_ATTR, WORKER_ATTR
from workbench.sweeps import child, rounds, runs
from workbench.sweeps.progress import SlotView, Snapshot, SweepProgress
from workbench.sweeps.runner import SweepResult, run_sweep
from workbench.sweeps.spec import SweepSpec, load_spec, resolve_spec_path
from workbench.sweeps.study import (
    enqueue_missing,
    grid_key,
    open_optuna,
    open_trials,
    quiet_optuna,
    reap,
    tally,
)
from workbench.sweeps.sweep import Sweep, SweepOptions, Trainer, open_sweep
from workbench.urls import redacted

REAP_EVERY_S = 15.0  # how often a worker looks for trials of vanished jobs


@dataclass
class SlurmSweepOptions:
    resources: cluster.SlurmResources = field(default_factory=cluster.SlurmResources)
    max_parallel: int = 4  # worker jobs at once
    wait: bool = True  # watch the jobs until the sweep ends (else return after submitting)
    poll_s: float = 2.0


def job_name(study_name: str) -> str:
    return f"wb-sweep-{study_name}"


def _active_jobs(sweep: Sweep) -> dict[str, cluster.QueuedJob]:
    """The sweep's jobs squeue still lists (only those its study recorded: a name may be reused)."""
    recorded = set(sweep.study.user_attrs.get(JOBS_ATTR) or [])
    return {i: job for i, job in cluster.active_jobs(job_name(sweep.study_name)).items() if i in recorded}


# ------------------------------------------------------------------ the coordinator
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
    sweep = open_sweep(spec, options)
    for warning in cluster.unshared_paths(_shared_paths(sweep), partition):
        echo(warning)
    active = _active_jobs(sweep)
    reap_lost_jobs(sweep.study, sweep.retry, set(active))
    enqueue_missing(sweep.study, spec)
    rounds.advance(sweep)  # a coordinator that stopped between two rounds of adaptive seeds
    submitted = _submit_missing(sweep, sets, options, slurm, partition, active)
    queued = ", ".join(sorted(active))
    echo(
        f"sweep {spec.name}: study {sweep.study_name!r} in {redacted(sweep.location)}; "
        f"submitted {len(submitted)} worker job(s){': ' + ', '.join(submitted) if submitted else ''}"
        f"{'; already queued: ' + queued if queued else ''}; logs in {sweep.out_dir / 'slurm'}"
    )
    if not slurm.wait:
        echo(f"watch: workbench sweep {spec.ref} --status   ·   stop: workbench sweep {spec.ref} --cancel")
        return None
    return _watch(sweep, sets, options, slurm, partition, started)


def _shared_paths(sweep: Sweep) -> dict[str, Path]:
    paths = {
        "the submitit folder": sweep.out_dir / "slurm",
        "the checkpoints (train.out_dir)": sweep.out_dir.parents[1],
    }
    if "://" not in sweep.location:
        paths["the Optuna journal (--storage)"] = Path(sweep.location)
    if sweep.uri.startswith("sqlite:///"):
        paths["the MLflow store (--tracking-uri)"] = Path(sweep.uri.removeprefix("sqlite:///"))
    return paths


def _submit_missing(
    sweep: Sweep,
    sets: list[str],
    options: SweepOptions,
    slurm: SlurmSweepOptions,
    partition: cluster.Partition,
    active: dict[str, cluster.QueuedJob],
) -> list[str]:
    missing = min(slurm.max_parallel, open_trials(sweep.spec, sweep.study.get_trials(deepcopy=False))) - len(active)
    if missing <= 0:
        return []
    ex = cluster.executor(sweep.out_dir / "slurm", slurm.resources, partition, name=job_name(sweep.study_name))
    worker = WorkerArgs(
        spec_path=str(resolve_spec_path(sweep.spec.ref or sweep.spec.name).resolve()),
        sets=sets,
        storage=sweep.location,
        study_name=sweep.study_name,
        tracking_uri=sweep.uri,
        heartbeat_s=options.heartbeat_s,
        trainer=options.trainer,
        gpus=slurm.resources.gpus,
        cpus=slurm.resources.cpus,
        max_seeds=options.max_seeds,
    )
    ids = []
    try:
        for _ in range(missing):
            ids.append(str(ex.submit(work, worker).job_id))
    finally:  # record what was submitted even if a later sbatch failed
        if ids:
            sweep.study.set_user_attr(JOBS_ATTR, list(sweep.study.user_attrs.get(JOBS_ATTR) or []) + ids)
    return ids


def _watch(
    sweep: Sweep,
    sets: list[str],
    options: SweepOptions,
    slurm: SlurmSweepOptions,
    partition: cluster.Partition,
    started: float,
) -> SweepResult:
    """Show the jobs until the sweep ends; replace jobs that ended while trials are left."""
    replacements = slurm.max_parallel * (sweep.spec.retries + 1)
    seen = {t.number for t in sweep.study.get_trials(deepcopy=False) if t.state.is_finished()}
    crashes: list[str] = []
    interrupted = False
    try:
        with SweepProgress(enabled=options.progress) as progress:
            while True:
                active = _active_jobs(sweep)  # before reading the trials: a job gone now has told its trial
                reap_lost_jobs(sweep.study, sweep.retry, set(active))
                trials = sweep.study.get_trials(deepcopy=False)
                for trial in (t for t in trials if t.state.is_finished() and t.number not in seen):
                    seen.add(trial.number)
                    progress.trial_finished(_finished_line(trial))
                progress.update(_snapshot(sweep, trials, active))
                left = open_trials(sweep.spec, trials)
                if left == 0 and (added := rounds.advance(sweep)) is not None:  # adaptive seeds: the next round
                    progress.trial_finished(added.line())
                    left = open_trials(sweep.spec, sweep.study.get_trials(deepcopy=False))
                if SweepResult.of(sweep, started).finished or left == 0:
                    break
                if len(active) < min(slurm.max_parallel, left):
                    if replacements <= 0:
                        crashes.append(
                            f"worker jobs kept ending with trials left; see the job logs in {sweep.out_dir / 'slurm'}"
                        )
                        break
                    replacements -= len(_submit_missing(sweep, sets, options, slurm, partition, active))
                time.sleep(slurm.poll_s)
    except KeyboardInterrupt:
        interrupted = True
    result = SweepResult.of(sweep, started, crashes=crashes, interrupted=interrupted)
    result.close_parent(None if interrupted else "FAILED")  # Ctrl-C leaves the jobs running: the parent stays RUNNING
    return result


def _snapshot(sweep: Sweep, trials: list[FrozenTrial], active: dict[str, cluster.QueuedJob]) -> Snapshot:
    running = {_owner(t).get("slurm_job_id"): t for t in trials if t.state == TrialState.RUNNING}
    views = []
    for job_id, job in sorted(active.items()):
        trial = running.get(job_id)
        if trial is None:
            views.append(
                SlotView(f"{job_id} {job.state.lower()}" + (f" ({job.reason})" if job.state == "PENDING" else ""))
            )
            continue
        variant, seed = grid_key(trial) or ("", None)
        start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        views.append(
            SlotView(f"{job_id}@{job.node}", trial.number, variant, seed, time.monotonic() - (time.time() - start))
        )
    done, failed = tally(sweep.spec, trials)
    return Snapshot(title=sweep.study_name, done=done, total=sweep.spec.total_trials, failed=failed, slots=views)


def _owner(trial: FrozenTrial) -> dict:
    owner = trial.user_attrs.get(WORKER_ATTR)
    return owner if isinstance(owner, dict) else {}


def _finished_line(trial: FrozenTrial) -> str:
    owner, key = _owner(trial), grid_key(trial)
    where = f"job {owner.get('slurm_job_id', '?')} on {owner.get('slurm_node', owner.get('host', '?'))}"
    what = f"trial {trial.number}" + (f" {key[0]} seed {key[1]}" if key else "")
    if trial.state == TrialState.COMPLETE:
        return f"{where}: {what}: COMPLETE {trial.value:.4g}"
    failed = f" — {trial.user_attrs.get(ERROR_ATTR)}" if trial.state == TrialState.FAIL else ""
    return f"{where}: {what}: {trial.state.name}{failed}"


# ------------------------------------------------------------------ --status, --cancel
def status(spec: SweepSpec, options: SweepOptions) -> str:
    """Each trial's state, value, SLURM job and node; then the sweep's jobs squeue still lists."""
    sweep = open_sweep(spec, options, look_only=True)
    queued, unreachable = {}, ""
    if _has_slurm():
        try:
            queued = _active_jobs(sweep)
        except ConfigError as err:  # the trials' records still answer
            unreachable = str(err).removeprefix("--launcher slurm: ")
    rows = [("trial", "variant", "seed", "state", "value", "job", "node")]
    for trial in sweep.study.get_trials(deepcopy=False):
        owner = _owner(trial)
        variant, seed = grid_key(trial) or ("-", "-")
        node = owner.get("slurm_node", owner.get("host", "-")) if trial.state != TrialState.WAITING else "-"
        value = f"{trial.value:.4g}" if trial.value is not None else "-"
        rows.append(
            (str(trial.number), str(variant), str(seed), trial.state.name, value, owner.get("slurm_job_id", "-"), node)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"sweep {spec.name}: study {sweep.study_name!r} in {redacted(sweep.location)}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    recorded = sweep.study.user_attrs.get(JOBS_ATTR) or []
    if unreachable:
        lines.append(f"jobs: unknown ({unreachable})")
    elif queued:
        jobs = ", ".join(
            f"{i} {j.state}" + (f" on {j.node}" if j.node else "") + (f" ({j.reason})" if j.state == "PENDING" else "")
            for i, j in sorted(queued.items())
        )
        lines.append(f"jobs in the queue: {jobs}")
    elif recorded:
        lines.append(
            f"no job of this sweep is queued ({len(recorded)} submitted in all; logs in {sweep.out_dir / 'slurm'})"
        )
    lines += rounds.verdict_lines(spec, sweep.study.get_trials(deepcopy=False))  # the verdicts so far
    return "\n".join(lines)


def cancel(spec: SweepSpec, options: SweepOptions) -> str:
    """scancel the sweep's queued jobs; their running trials are failed and re-queued by the workers."""
    cluster.require_sbatch("--cancel")
    sweep = open_sweep(spec, options, look_only=True)
    active = sorted(_active_jobs(sweep))
    cluster.cancel(active)
    if not active:
        return f"sweep {spec.name}: no job of study {sweep.study_name!r} is queued; nothing to cancel"
    if sweep.parent_run_id:
        runs.finish_parent_run(sweep.parent_run_id, sweep.uri, "KILLED")
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
    study: optuna.Study, retry: RetryHeartbeatStaleTrialCallback, active: set[str] | None, *, own_job: str | None = None
) -> list[int]:
    """FAIL (and re-queue) RUNNING trials claimed by a SLURM job that squeue no longer lists (`active`,
    read from squeue *before* this call, so a job missing from it had told its trial before exiting);
    or, with `own_job` (a requeued job starting again, which has claimed nothing yet), only those
    an earlier run of this very job left behind."""

    def lost(owner: dict | None, trial: FrozenTrial) -> str | None:
        job = (owner or {}).get("slurm_job_id")
        if not job or (own_job is not None and job != own_job):
            return None
        if own_job is not None:
            return f"its SLURM job {job} was requeued (pre-empted or scontrol requeue)"
        if active is None or job in active:
            return None
        return f"its SLURM job {job} ended without finishing it (cancelled, pre-empted, node failure)"

    return reap(study, lost, retry)


# ------------------------------------------------------------------ in the worker job
@dataclass(frozen=True)
class WorkerArgs:
    spec_path: str
    sets: list[str]
    storage: str
    study_name: str
    tracking_uri: str
    heartbeat_s: int
    trainer: Trainer | None
    gpus: int
    cpus: int | None
    max_seeds: int | None = None  # --max-seeds of the coordinator


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
    me = slurm_env.job_id()
    spec = load_spec(args.spec_path, args.sets, args.max_seeds)
    with quiet_optuna():
        storage = open_optuna(args.storage, heartbeat_s=args.heartbeat_s, retries=spec.retries)
        study = optuna.load_study(study_name=args.study_name, storage=storage)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=spec.retries)
        if me:
            reap_lost_jobs(study, retry, None, own_job=me)
        done = threading.Event()
        reaper = threading.Thread(
            target=_reap_loop, args=(study, retry, job_name(args.study_name), done), name="slurm-reaper", daemon=True
        )
        reaper.start()
        cpus = args.cpus or _int(os.environ.get("SLURM_CPUS_PER_TASK"))
        options = SweepOptions(
            storage=args.storage,
            study_name=args.study_name,
            worker=True,
            slots=None if args.gpus else 1,
            tracking_uri=args.tracking_uri,
            heartbeat_s=args.heartbeat_s,
            progress=False,
            trainer=args.trainer,
            cpus=cpus,
            max_seeds=args.max_seeds,
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
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        child.warm_up(wait=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _reap_loop(study: optuna.Study, retry: RetryHeartbeatStaleTrialCallback, name: str, done: threading.Event) -> None:
    while not done.wait(REAP_EVERY_S):
        try:
            reap_lost_jobs(study, retry, set(cluster.active_jobs(name)))
        except Exception:  # squeue busy or absent on this node: the coordinator reaps too
            pass


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None
