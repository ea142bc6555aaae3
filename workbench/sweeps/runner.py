"""`run_sweep(spec, options) -> SweepResult`: what `workbench sweep NAME` does.

1. plan the slots and open the storage and study (a study built from another
   version of the spec is refused; a ``--worker`` waits for the coordinator's
   study, parent run and queue, so hosts may start in any order); 2. open the
   MLflow parent run (or reopen it on resume; workers join the one the study
   names); 3. fail and re-queue trials whose sweep process died, queue every
   variant x seed that is still missing; 4. run the slots until the study has
   nothing queued or running; 5. close the parent run. (Trials that share a data
   set may all start at once: ShapesWorld generation takes a lock, so it is
   generated once.)
Running it again -- after Ctrl-C, kill -9 or a crash -- is how a sweep resumes:
finished trials are not re-run and half-run ones are re-run or resumed.

Trials are forked from a ``forkserver``, which (like ``spawn``) imports the
caller's ``__main__`` in each trial: a script calling ``run_sweep`` must do so
under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from workbench import tracking
from workbench.errors import ConfigError
from workbench.errors import RunError
from workbench.sweeps import child, runs
from workbench.sweeps.execute import SweepContext, TrialOutcome
from workbench.sweeps.progress import SweepProgress, format_seconds
from workbench.sweeps.scheduler import Scheduler
from workbench.sweeps.slots import plan_slots
from workbench.sweeps.spec import SweepSpec, variant_config
from workbench.strict_yaml import brief
from workbench.sweeps.study import (
    ERROR_ATTR,
    PARENT_ATTR,
    QUEUED_ATTR,
    REPORT_ATTR,
    TRACKING_ATTR,
    claim_parent_run,
    default_storage,
    describe_storage,
    enqueue_missing,
    grid_key,
    open_storage,
    open_study,
    reap_orphans,
    study_exists,
)


COORDINATOR_WAIT_S = 120.0
CONFIRM_ABOVE_TRIALS = 200  # a bigger sweep starts only with --yes (SweepOptions.yes)
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=,+-]{0,99}")  # also a folder name: no '/', no leading '.'


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
    trainer: str = "workbench.train:run"  # "module:function" called in each child (tests use a cheap one)
    poll_s: float = 1.0  # how often an idle slot looks for work
    yes: bool = False  # start a sweep of more than CONFIRM_ABOVE_TRIALS trials
    cpus: int | None = None  # CPUs the slots share (default: this process's affinity); a SLURM job's --cpus-per-task


@dataclass
class SweepResult:
    spec: SweepSpec
    study_name: str
    storage: str
    parent_run_id: str
    tracking_uri: str
    trials: list[FrozenTrial]
    outcomes: list[TrialOutcome] = field(default_factory=list)
    interrupted: bool = False
    crashes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @property
    def missing(self) -> list[tuple[str, int]]:
        """Grid variant x seed pairs without a COMPLETE trial."""
        if not self.spec.is_grid:
            return []
        done = {grid_key(t) for t in self.complete}
        return [(v.name, s) for v in self.spec.variants for s in self.spec.seeds if (v.name, s) not in done]

    @property
    def finished(self) -> bool:
        if self.spec.is_grid:
            return not self.missing
        return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in self.trials) >= self.spec.search.trials

    def problem(self) -> Exception | None:
        """The error the command should end with, if any (a user error first)."""
        user = [o for o in self.outcomes if o.user_error]
        if user:
            first = user[0]
            return ConfigError(f"trial {first.number} ({first.variant}, seed {first.seed}): {first.error}")
        if self.crashes:
            return RunError(f"sweep {self.study_name!r} stopped: {self.crashes[0]}")
        if self.interrupted or self.finished:
            return None
        failed = [t for t in self.trials if t.state == TrialState.FAIL and t.user_attrs.get(ERROR_ATTR)]
        why = f"; last error: {failed[-1].user_attrs[ERROR_ATTR]}" if failed else ""
        left = len(self.missing) if self.spec.is_grid else self.spec.search.trials - len(self.complete)
        return RunError(
            f"sweep {self.study_name!r}: {left} trial(s) did not complete after {self.spec.retries} retries{why}; "
            f"run `workbench sweep {self.spec.ref}` again to retry them"
        )

    def summary(self) -> str:
        spec = self.spec
        lines = [
            f"sweep {spec.name}: study {self.study_name!r} in {describe_storage(self.storage)}",
            f"MLflow parent run {self.parent_run_id} in {self.tracking_uri}",
        ]
        lines += _grid_table(self) if spec.is_grid else _search_table(self)
        total = spec.total_trials
        done = len({grid_key(t) for t in self.complete}) if spec.is_grid else len(self.complete)
        state = "interrupted" if self.interrupted else "done"
        lines.append(f"{done}/{total} trials complete ({state} after {format_seconds(self.seconds)})")
        return "\n".join(lines)


def check_study_name(name: str) -> str:
    """The study name is also the trial-log folder `<out_dir>/sweeps/<name>`: no '/', no '..'."""
    if not STUDY_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"--study-name: {brief(name)} is not a study name — allowed: up to 100 letters, digits and _ . = , + - "
            "(not starting with '.', no '/' or '..': it names a folder under train.out_dir/sweeps)"
        )
    return name


def compute_estimate(spec: SweepSpec) -> str:
    """How much training a sweep asks for, in steps and samples (its variants may differ)."""
    configs = [variant_config(spec, v.overrides) for v in spec.variants] if spec.is_grid else [variant_config(spec, {})]
    per_trial = [cfg.train.steps for cfg in configs]
    samples = [cfg.train.steps * cfg.train.batch_size for cfg in configs]
    runs_each = len(spec.seeds) if spec.is_grid else spec.search.trials
    shape = f"{len(spec.variants)} variants x {len(spec.seeds)} seeds" if spec.is_grid else f"{spec.search.trials} trials"
    return (
        f"sweep {spec.name!r}: {spec.total_trials} trials ({shape}), {runs_each * sum(per_trial):,} training steps, "
        f"{runs_each * sum(samples):,} samples"
    )


def check_size(spec: SweepSpec, yes: bool) -> None:
    if spec.total_trials > CONFIRM_ABOVE_TRIALS and not yes:
        raise ConfigError(
            f"{compute_estimate(spec)}; a sweep of more than {CONFIRM_ABOVE_TRIALS} trials starts only with --yes"
        )


def run_sweep(spec: SweepSpec, options: SweepOptions | None = None) -> SweepResult:
    options = options or SweepOptions()
    _quiet_optuna()
    started = time.monotonic()
    study_name = check_study_name(options.study_name or spec.name)
    if not options.worker:
        check_size(spec, options.yes)
    base_cfg = variant_config(spec, spec.variants[0].overrides if spec.is_grid else {})
    slots = plan_slots(options.gpus, options.per_gpu, options.slots, cpu_count=options.cpus)
    location = options.storage or default_storage(base_cfg.train.out_dir)
    tracking.check_store(options.tracking_uri or base_cfg.tracking.uri)  # before anything is created
    if options.resume and "://" not in location and not Path(location).is_file():
        raise ConfigError(f"no study {study_name!r} in {location} to join or resume (no journal file); "
                          f"start it first: workbench sweep {spec.ref}")
    storage = open_storage(location, heartbeat_s=options.heartbeat_s, retries=spec.retries)  # a typo fails here, at once
    child.warm_up()
    study_name = options.study_name or spec.name
    if options.worker:
        study = _join_when_ready(spec, storage, study_name, location, timeout_s=COORDINATOR_WAIT_S)
    else:
        study = open_study(spec, storage, study_name, create=not options.resume, location=location)
    uri = tracking.resolve_uri(options.tracking_uri or study.user_attrs.get(TRACKING_ATTR) or base_cfg.tracking.uri)

    parent_run_id = open_parent_run(spec, study, storage, uri, base_cfg.tracking.experiment, location)
    if options.worker:
        tracking.closed(parent_run_id)  # the coordinator owns the parent run: a crashed worker leaves it alone

    work_dir = Path(base_cfg.train.out_dir).resolve() / "sweeps" / study_name
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = SweepContext(
        spec=spec,
        study=study,
        storage=storage,
        study_name=study_name,
        tracking_uri=uri,
        experiment_id=runs.experiment_of(parent_run_id, uri),
        parent_run_id=parent_run_id,
        work_dir=work_dir,
        retry=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=spec.retries),
        trainer=options.trainer,
    )
    if not options.worker and study.user_attrs.get(REPORT_ATTR) is None:
        study.set_user_attr(REPORT_ATTR, report_location(parent_run_id))
    reap_orphans(study, storage, set(), ctx.retry)
    if spec.is_grid and not options.worker:
        enqueue_missing(study, spec)
        if not study.user_attrs.get(QUEUED_ATTR):
            study.set_user_attr(QUEUED_ATTR, True)  # workers may start now

    interrupted, crashes, outcomes = False, [], []
    try:
        with SweepProgress(enabled=options.progress) as progress:
            scheduler = Scheduler(ctx, slots, progress, poll_s=options.poll_s)
            outcomes = scheduler.run()
            crashes = scheduler.crashes
        interrupted = ctx.interrupted.is_set()
    except KeyboardInterrupt:
        interrupted = True
    result = SweepResult(
        spec=spec,
        study_name=study_name,
        storage=location,
        parent_run_id=parent_run_id,
        tracking_uri=uri,
        trials=study.get_trials(deepcopy=False),
        outcomes=outcomes,
        interrupted=interrupted,
        crashes=crashes,
        seconds=time.monotonic() - started,
    )
    _close_parent(result, options.worker)
    return result


def open_parent_run(spec: SweepSpec, study, storage, uri: str, experiment: str, location: str) -> str:
    """The sweep's MLflow parent run: created by exactly one of any number of coordinators
    (local or SLURM-submitting), reopened by the others and on resume."""

    def create_parent() -> str:
        run_id = runs.create_parent_run(
            spec, study.study_name, uri=uri, experiment=experiment, storage=describe_storage(location)
        )
        study.set_user_attr(TRACKING_ATTR, uri)
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id

    parent_run_id, created = claim_parent_run(study, storage, create_parent)
    if not created:
        runs.reopen_parent_run(parent_run_id, uri)
    return parent_run_id


def report_location(parent_run_id: str) -> str:
    """Where `workbench report ablations` logs the sweep's page: an artifact of the parent run."""
    return f"runs:/{parent_run_id}/reports/report.html"


def _join_when_ready(
    spec: SweepSpec, storage: optuna.storages.BaseStorage, study_name: str, location: str, timeout_s: float
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

    while not study_exists(storage, study_name):
        wait(f"no study {study_name!r} in {describe_storage(location)} to join")
    study = open_study(spec, storage, study_name, create=False, location=location)

    def ready() -> bool:
        attrs = study.user_attrs
        return PARENT_ATTR in attrs and (not spec.is_grid or bool(attrs.get(QUEUED_ATTR)))

    while not ready():
        wait(f"study {study_name!r} has no MLflow parent run or trial queue")
    return study


def _close_parent(result: SweepResult, worker: bool) -> None:
    if result.finished:
        status = "FINISHED"
    elif worker:
        return  # the coordinator decides how an unfinished sweep ends
    elif result.interrupted:
        status = "KILLED"
    else:
        status = "FAILED"
    runs.finish_parent_run(result.parent_run_id, result.tracking_uri, status)


def _grid_table(result: SweepResult) -> list[str]:
    spec = result.spec
    by_variant: dict[str, list[float]] = {v.name: [] for v in spec.variants}
    for trial in result.complete:
        key = grid_key(trial)
        if key is not None and key[0] in by_variant and trial.value is not None:
            by_variant[key[0]].append(trial.value)
    width = max(len(name) for name in by_variant) + 2
    lines = [f"{'variant':<{width}} seeds  {spec.objective}"]
    for name, values in by_variant.items():
        mark = " *" if name == spec.baseline else ""
        lines.append(f"{name + mark:<{width}} {len(values)}/{len(spec.seeds):<4} {_mean_std(values)}")
    lines.append("(* = baseline; mean ± std over seeds)")
    return lines


def _search_table(result: SweepResult) -> list[str]:
    spec = result.spec
    done = [t for t in result.complete if t.value is not None]
    done.sort(key=lambda t: t.value, reverse=spec.direction == "maximize")
    lines = [f"best trials by {spec.objective} ({spec.direction}):"]
    for trial in done[:5]:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        lines.append(f"  trial {trial.number}: {trial.value:.4g}  {params}")
    pruned = sum(t.state == TrialState.PRUNED for t in result.trials)
    if pruned:
        lines.append(f"  ({pruned} pruned)")
    return lines


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def _quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and experimental-feature warnings would bury the progress display."""
    optuna.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
