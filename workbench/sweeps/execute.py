"""Run one claimed Optuna trial in a child process and tell the study how it ended.

Order of business for a trial: map it to config overrides (``space``); if a
FINISHED MLflow child already exists for its variant x seed (the sweep died
after training but before telling Optuna), reuse it instead of training again;
else start the child (which resumes or retires earlier half-run attempts), wait
(feeding the pruner for TPE searches), and tell the study:
COMPLETE, PRUNED, or FAIL (re-queued unless it was a config/data error).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from workbench.sweeps import child, runs
from workbench.sweeps.pruning import feed_pruner, prunes
from workbench.sweeps.slots import Slot
from workbench.sweeps.space import TrialPlan, space
from workbench.sweeps.spec import SweepSpec
from workbench.sweeps.study import ERROR_ATTR, Heartbeat, fail, lineage_root, trial_id

RUN_ATTR = "workbench.mlflow_run_id"
LOG_ATTR = "workbench.log"
PID_ATTR = "workbench.child_pid"


@dataclass
class SweepContext:
    """What every slot thread shares."""

    spec: SweepSpec
    study: optuna.Study
    storage: BaseStorage
    study_name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    work_dir: Path  # trial logs and results
    retry: RetryHeartbeatStaleTrialCallback
    trainer: str = "workbench.train:run"
    cwd: str = field(default_factory=os.getcwd)
    no_new_trials: threading.Event = field(default_factory=threading.Event)  # a config error: finish what runs
    interrupted: threading.Event = field(default_factory=threading.Event)  # Ctrl-C: stop what runs


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
    ctx: SweepContext, slot: Slot, trial: optuna.Trial, on_plan: Callable[[TrialPlan], None] | None = None
) -> TrialOutcome:
    started = time.monotonic()
    frozen = ctx.storage.get_trial(trial_id(ctx.storage, ctx.study, trial.number))
    plan = space(ctx.spec, trial, lineage=lineage_root(frozen))
    if on_plan is not None:
        on_plan(plan)
    earlier = runs.child_runs(
        ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, variant=plan.variant, seed=plan.seed
    )
    finished = [run for run in earlier if run.info.status == "FINISHED"]
    if finished:
        run = finished[0]
        metrics = dict(run.data.metrics)
        outcome = _complete(ctx, trial, plan, run.info.run_id, metrics, metrics.get("train/loss/total"))
        outcome.reused = True
        return outcome

    name = f"trial-{trial.number:04d}"
    job = child.TrialJob(
        base=ctx.spec.base,
        overrides=_overrides(ctx, plan),
        result_path=str(ctx.work_dir / f"{name}.json"),
        log_path=str(ctx.work_dir / f"{name}.log"),
        cwd=ctx.cwd,
        env={**os.environ, **slot.env},
        sweep_pid=os.getpid(),
        trainer=ctx.trainer,
        parent_run_id=ctx.parent_run_id,
        tags=runs.trial_tags(ctx.study_name, plan, trial.number),
        earlier_runs=[
            {"run_id": run.info.run_id, "status": run.info.status}
            for run in earlier
            if run.info.status in ("RUNNING", "KILLED", "FAILED")
        ],
        threads=slot.threads,
    )
    trial.set_user_attr(LOG_ATTR, job.log_path)
    with Heartbeat(ctx.storage, ctx.study, trial.number):
        process = child.start(job)
        trial.set_user_attr(PID_ATTR, process.pid)
        pruned = _wait(ctx, trial, process)
        result = child.read_result(job, process.exitcode)
    outcome = _tell(ctx, trial, plan, result, pruned)
    outcome.seconds = time.monotonic() - started
    return outcome


def _overrides(ctx: SweepContext, plan: TrialPlan) -> dict[str, Any]:
    return {
        **ctx.spec.overrides,
        **plan.overrides,
        "tracking.uri": ctx.tracking_uri,
        "tracking.run_name": f"{ctx.study_name}/{plan.variant}/seed{plan.seed}",
    }


def _wait(ctx: SweepContext, trial: optuna.Trial, process: Any) -> bool:
    """Wait for the child; stop it on Ctrl-C or when pruned. Returns whether it was pruned."""
    monitor = _PruneMonitor(ctx, trial) if prunes(ctx.spec) else None
    interval = monitor.interval if monitor else 0.5
    while True:
        process.join(interval)
        if not process.is_alive():
            return False
        if ctx.interrupted.is_set():
            child.stop(process)
            return False
        if monitor is not None and monitor.should_prune():
            child.stop(process)
            return True


class _PruneMonitor:
    """Reads the running trial's MLflow metric and feeds it to the study's pruner."""

    def __init__(self, ctx: SweepContext, trial: optuna.Trial):
        self.ctx, self.trial = ctx, trial
        self.pruner = ctx.spec.search.pruner
        self.interval = self.pruner.interval_s
        self.flip = self.pruner.direction != ctx.spec.direction
        self.reported: set[int] = set()
        self.run_id: str | None = None

    def should_prune(self) -> bool:
        try:
            if self.run_id is None:
                found = runs.child_runs(
                    self.ctx.tracking_uri, self.ctx.experiment_id, self.ctx.parent_run_id, trial=self.trial.number
                )
                if not found:
                    return False
                self.run_id = found[0].info.run_id
            history = runs.metric_history(self.ctx.tracking_uri, self.run_id, self.pruner.metric)
        except Exception:  # the store is busy; look again next interval
            return False
        return feed_pruner(self.trial, history, self.reported, flip=self.flip)


def objective_value(spec: SweepSpec, metrics: dict[str, float], final_loss: float | None) -> float | None:
    if spec.objective in metrics:
        return float(metrics[spec.objective])
    if spec.objective == "train/loss/total" and final_loss is not None and math.isfinite(final_loss):
        return float(final_loss)
    return None


def _tell(ctx: SweepContext, trial: optuna.Trial, plan: TrialPlan, result: dict[str, Any], pruned: bool) -> TrialOutcome:
    if pruned:
        ctx.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        return TrialOutcome(trial.number, plan.variant, plan.seed, "PRUNED", run_id=result.get("run_id"))
    status = result.get("status")
    if status == "FINISHED":
        return _complete(ctx, trial, plan, result["run_id"], result.get("metrics", {}), result.get("final_loss"))
    error = result.get("error") or f"the trainer returned status {status}"
    user_error = status == "USER_ERROR"
    if user_error:
        ctx.no_new_trials.set()  # the same mistake would fail every other trial too
    if ctx.interrupted.is_set():
        error = "interrupted (Ctrl-C)"
    fail(ctx.study, ctx.storage, trial.number, error, retry=None if user_error else ctx.retry)
    return TrialOutcome(
        trial.number, plan.variant, plan.seed, "FAIL", run_id=result.get("run_id"), error=error, user_error=user_error
    )


def _complete(
    ctx: SweepContext,
    trial: optuna.Trial,
    plan: TrialPlan,
    run_id: str,
    metrics: dict[str, float],
    final_loss: float | None,
) -> TrialOutcome:
    value = objective_value(ctx.spec, metrics, final_loss)
    trial.set_user_attr(RUN_ATTR, run_id)
    for key in dict.fromkeys([ctx.spec.objective, *ctx.spec.metrics]):  # one attribute per metric: sortable, plottable
        if key in metrics:
            trial.set_user_attr(key, float(metrics[key]))
    if value is None:
        error = f"run {run_id} has no metric {ctx.spec.objective!r} (it has: {', '.join(sorted(metrics)) or 'none'})"
        fail(ctx.study, ctx.storage, trial.number, error, retry=None)
        return TrialOutcome(trial.number, plan.variant, plan.seed, "FAIL", run_id=run_id, error=error)
    if ERROR_ATTR in trial.user_attrs:
        trial.set_user_attr(ERROR_ATTR, None)
    ctx.study.tell(trial, value, skip_if_finished=True)  # finished meanwhile = failed as stale: its retry reuses this run
    return TrialOutcome(trial.number, plan.variant, plan.seed, "COMPLETE", value=value, run_id=run_id)
