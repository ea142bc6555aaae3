"""Run one claimed Optuna trial in a child process and tell the study how it ended.

Order of business for a trial: map it to config overrides (``space``); if a
FINISHED MLflow child already exists for its variant x seed (the sweep died
after training but before telling Optuna), reuse it instead of training again;
else start the child (which resumes or retires earlier half-run attempts), wait
(feeding the pruner for TPE searches), and tell the study:
COMPLETE, PRUNED, or FAIL (re-queued unless it was a config/data error).
The trial's heartbeat runs throughout (RDB storages).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from workbench.study_attrs import ERROR_ATTR, LOG_ATTR, PID_ATTR, RUN_ATTR
from workbench.sweeps import child, optuna_internals, runs
from workbench.sweeps.pruning import feed_pruner, prunes
from workbench.sweeps.slots import Slot
from workbench.sweeps.space import TrialPlan, space
from workbench.sweeps.spec import SweepSpec
from workbench.sweeps.study import fail, lineage_root
from workbench.sweeps.sweep import Sweep


@dataclass
class TrialOutcome:
    number: int
    variant: str
    seed: int
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None = None
    run_id: str | None = None
    error: str | None = None
    user_error: bool = False
    reused: bool = False  # completed from an already FINISHED MLflow run, not trained again
    seconds: float = 0.0


def run_trial(
    sweep: Sweep, slot: Slot, trial: optuna.Trial, on_plan: Callable[[TrialPlan], None] | None = None
) -> TrialOutcome:
    started = time.monotonic()
    frozen = (
        None
        if sweep.spec.is_grid
        else next(t for t in sweep.study.get_trials(deepcopy=False) if t.number == trial.number)
    )
    lineage = None if frozen is None else lineage_root(frozen)  # names a TPE trial's runs after its first attempt
    plan = space(sweep.spec, trial, lineage=lineage)
    if on_plan is not None:
        on_plan(plan)
    try:
        with optuna_internals.heartbeat(trial):
            outcome = _run(sweep, slot, trial, plan)
    except UpdateFinishedTrialError:
        outcome = _failed_elsewhere(trial, plan)
    outcome.seconds = time.monotonic() - started
    return outcome


def _failed_elsewhere(trial: optuna.Trial, plan: TrialPlan) -> TrialOutcome:
    """Another process failed the trial as stale while it ran (a slow storage, a paused host):
    its retry is queued already and reuses this run if it finished. This slot goes on."""
    error = "failed as stale by another sweep process while it ran; its retry carries on"
    return TrialOutcome(trial.number, plan.variant, plan.seed, "FAIL", error=error)


def _run(sweep: Sweep, slot: Slot, trial: optuna.Trial, plan: TrialPlan) -> TrialOutcome:
    earlier = runs.child_runs(sweep.uri, sweep.experiment_id, sweep.parent_run_id, variant=plan.variant, seed=plan.seed)
    finished = [run for run in earlier if run.info.status == "FINISHED"]
    if finished:
        metrics = dict(finished[0].data.metrics)
        outcome = _complete(sweep, trial, plan, finished[0].info.run_id, metrics, metrics.get("train/loss/total"))
        outcome.reused = True
        return outcome
    name = f"trial-{trial.number:04d}"
    job = child.TrialJob(
        base=sweep.spec.base,
        overrides={
            **sweep.spec.overrides,
            **plan.overrides,
            "tracking.uri": sweep.uri,
            "tracking.run_name": f"{sweep.study_name}/{plan.variant}/seed{plan.seed}",
        },
        result_path=str(sweep.out_dir / f"{name}.json"),
        log_path=str(sweep.out_dir / f"{name}.log"),
        cwd=sweep.cwd,
        env={**os.environ, **slot.env},
        sweep_pid=os.getpid(),
        trainer=sweep.trainer,
        parent_run_id=sweep.parent_run_id,
        tags=runs.trial_tags(sweep.study_name, plan, trial.number),
        earlier_runs=[
            {"run_id": r.info.run_id, "status": r.info.status}
            for r in earlier
            if r.info.status in ("RUNNING", "KILLED", "FAILED")
        ],
        threads=slot.threads,
    )
    trial.set_user_attr(LOG_ATTR, job.log_path)
    process = child.start(job)
    try:
        trial.set_user_attr(PID_ATTR, process.pid)
        pruned = _wait(sweep, trial, process)
    finally:
        child.stop(process)  # nothing to stop once it has exited; an error here must not orphan it
    return _tell(sweep, trial, plan, child.read_result(job, process.exitcode), pruned)


def _wait(sweep: Sweep, trial: optuna.Trial, process: Any) -> bool:
    """Wait for the child; stop it on Ctrl-C or when pruned. Returns whether it was pruned."""
    monitor = _PruneMonitor(sweep, trial) if prunes(sweep.spec) else None
    while True:
        process.join(monitor.interval if monitor else 0.5)
        if not process.is_alive():
            return False
        if sweep.interrupted.is_set():
            child.stop(process)
            return False
        if monitor is not None and monitor.should_prune():
            child.stop(process)
            return True


class _PruneMonitor:
    """Reads the running trial's MLflow metric and feeds it to the study's pruner."""

    def __init__(self, sweep: Sweep, trial: optuna.Trial):
        self.sweep, self.trial = sweep, trial
        self.pruner = sweep.spec.search.pruner
        self.interval = self.pruner.interval_s
        self.flip = self.pruner.direction != sweep.spec.direction
        self.reported: set[int] = set()
        self.run_id: str | None = None

    def should_prune(self) -> bool:
        sweep = self.sweep
        try:
            if self.run_id is None:
                found = runs.child_runs(sweep.uri, sweep.experiment_id, sweep.parent_run_id, trial=self.trial.number)
                if not found:
                    return False
                self.run_id = found[0].info.run_id
            history = runs.metric_history(sweep.uri, self.run_id, self.pruner.metric)
            return feed_pruner(self.trial, history, self.reported, flip=self.flip)
        except Exception:  # the store is busy, or the trial was failed elsewhere: look again next interval
            return False


def objective_value(spec: SweepSpec, metrics: dict[str, float], final_loss: float | None) -> float | None:
    if spec.objective in metrics:
        return float(metrics[spec.objective])
    if spec.objective == "train/loss/total" and final_loss is not None and math.isfinite(final_loss):
        return float(final_loss)
    return None


def _tell(sweep: Sweep, trial: optuna.Trial, plan: TrialPlan, result: dict[str, Any], pruned: bool) -> TrialOutcome:
    if pruned:
        sweep.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        return TrialOutcome(trial.number, plan.variant, plan.seed, "PRUNED", run_id=result.get("run_id"))
    status = result.get("status")
    if status == "FINISHED":
        metrics = {**_logged(sweep, result["run_id"]), **result.get("metrics", {})}
        return _complete(sweep, trial, plan, result["run_id"], metrics, result.get("final_loss"))
    error = result.get("error") or f"the trainer returned status {status}"
    user_error = status == "USER_ERROR"
    if user_error:
        sweep.no_new_trials.set()  # the same mistake would fail every other trial too
    if sweep.interrupted.is_set():
        error = "interrupted (Ctrl-C)"
    fail(sweep.study, trial, error, retry=None if user_error else sweep.retry)
    return TrialOutcome(
        trial.number, plan.variant, plan.seed, "FAIL", run_id=result.get("run_id"), error=error, user_error=user_error
    )


def _logged(sweep: Sweep, run_id: str) -> dict[str, float]:
    """What the trial's run logged in all its sessions: a trial resumed after its sweep was killed
    during evaluation only evaluates, and its training loss is in the run, not in its result."""
    try:
        return runs.logged_metrics(sweep.uri, run_id)
    except Exception:  # noqa: BLE001 - the store is busy: the result's own metrics are all there is
        return {}


def _complete(
    sweep: Sweep, trial: optuna.Trial, plan: TrialPlan, run_id: str, metrics: dict[str, float], final_loss: float | None
) -> TrialOutcome:
    value = objective_value(sweep.spec, metrics, final_loss)
    trial.set_user_attr(RUN_ATTR, run_id)
    for key in dict.fromkeys(
        [sweep.spec.objective, *sweep.spec.metrics]
    ):  # one attribute per metric: sortable, plottable
        if key in metrics:
            trial.set_user_attr(key, float(metrics[key]))
    if value is None:
        error = f"run {run_id} has no metric {sweep.spec.objective!r} (it has: {', '.join(sorted(metrics)) or 'none'})"
        fail(sweep.study, trial, error, retry=None)
        return TrialOutcome(trial.number, plan.variant, plan.seed, "FAIL", run_id=run_id, error=error)
    if trial.user_attrs.get(ERROR_ATTR) is not None:
        trial.set_user_attr(ERROR_ATTR, None)
    if sweep.study.tell(trial, value, skip_if_finished=True).state != TrialState.COMPLETE:
        return _failed_elsewhere(trial, plan)
    return TrialOutcome(trial.number, plan.variant, plan.seed, "COMPLETE", value=value, run_id=run_id)
