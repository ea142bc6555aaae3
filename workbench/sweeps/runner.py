"""`run_sweep(spec, options) -> SweepResult`: what `workbench sweep NAME` does on this machine.

1. plan the slots and open the sweep (``sweep.open_sweep``: storage, study, MLflow
   parent run); 2. fail and re-queue trials whose sweep process died, queue every
   variant x seed that is still missing; 3. run the slots until the study has
   nothing queued or running; 4. close the parent run. (Trials that share a data set
   may all start at once: ShapesWorld generation takes a lock, so it is generated once.)
Running it again -- after Ctrl-C, kill -9 or a crash -- is how a sweep resumes:
finished trials are not re-run and half-run ones are re-run or resumed.

Trials are forked from a ``forkserver``, which (like ``spawn``) imports the
caller's ``__main__`` in each trial: a script calling ``run_sweep`` must do so
under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from workbench.errors import ConfigError, RunError
from workbench.progress import format_seconds
from workbench.study_attrs import ERROR_ATTR
from workbench.sweeps import child, rounds, runs
from workbench.sweeps.progress import SweepProgress
from workbench.sweeps.scheduler import Scheduler
from workbench.sweeps.slots import plan_slots
from workbench.sweeps.spec import SweepSpec, variant_config
from workbench.sweeps.study import enqueue_missing, grid_key, quiet_optuna, reap_orphans
from workbench.sweeps.sweep import Sweep, SweepOptions, open_sweep
from workbench.sweeps.trial import TrialOutcome
from workbench.urls import redacted

__all__ = ["SweepOptions", "SweepResult", "compute_estimate", "run_sweep"]
CONFIRM_ABOVE_TRIALS = 200  # a bigger sweep starts only with --yes (SweepOptions.yes)


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

    @classmethod
    def of(cls, sweep: Sweep, started: float, **how: object) -> SweepResult:
        """The sweep's state now; `how`: outcomes, interrupted, crashes."""
        return cls(
            sweep.spec,
            sweep.study_name,
            sweep.location,
            sweep.parent_run_id,
            sweep.uri,
            sweep.study.get_trials(deepcopy=False),
            seconds=time.monotonic() - started,
            **how,
        )

    @property
    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @property
    def missing(self) -> list[tuple[str, int]]:
        """Grid variant x seed pairs without a COMPLETE trial (adaptive seeds: of the rounds queued so far)."""
        done = {grid_key(t) for t in self.complete}
        keys = rounds.planned_keys(self.spec, self.trials) if self.spec.adaptive else self.spec.grid_keys
        return [key for key in keys if key not in done]

    @property
    def finished(self) -> bool:
        if self.spec.is_grid:
            return not self.missing and rounds.design_done(self.spec, self.trials)
        return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in self.trials) >= self.spec.search.trials

    def close_parent(self, unfinished: str | None) -> None:
        """End the MLflow parent run: FINISHED when the sweep is, else `unfinished` (None: leave it RUNNING)."""
        status = "FINISHED" if self.finished else unfinished
        if status:
            runs.finish_parent_run(self.parent_run_id, self.tracking_uri, status)

    def problem(self) -> Exception | None:
        """The error the command should end with, if any (a user error first)."""
        user = [o for o in self.outcomes if o.user_error]
        if user:
            return ConfigError(f"trial {user[0].number} ({user[0].variant}, seed {user[0].seed}): {user[0].error}")
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
            f"sweep {spec.name}: study {self.study_name!r} in {redacted(self.storage)}",
            f"MLflow parent run {self.parent_run_id} in {self.tracking_uri}",
        ]
        lines += _grid_table(self) if spec.is_grid else _search_table(self)
        done = len({grid_key(t) for t in self.complete}) if spec.is_grid else len(self.complete)
        state = "interrupted" if self.interrupted else "done"
        lines.append(f"{done}/{spec.total_trials} trials complete ({state} after {format_seconds(self.seconds)})")
        return "\n".join(lines)


def compute_estimate(spec: SweepSpec) -> str:
    """How much training a sweep asks for, in steps and samples (its variants may differ)."""
    configs = [variant_config(spec, v.overrides) for v in spec.variants] if spec.is_grid else [variant_config(spec, {})]
    steps = sum(cfg.train.steps for cfg in configs)
    samples = sum(cfg.train.steps * cfg.train.batch_size for cfg in configs)
    runs_each = len(spec.seeds) if spec.is_grid else spec.search.trials
    seeds = f"{spec.min_seeds}..{len(spec.seeds)}" if spec.adaptive else str(len(spec.seeds))  # adaptive: at most
    shape = f"{len(spec.variants)} variants x {seeds} seeds" if spec.is_grid else f"{spec.search.trials} trials"
    return (
        f"sweep {spec.name!r}: {spec.total_trials} trials ({shape}), {runs_each * steps:,} training steps, "
        f"{runs_each * samples:,} samples"
    )


def run_sweep(spec: SweepSpec, options: SweepOptions | None = None) -> SweepResult:
    options = options or SweepOptions()
    started = time.monotonic()
    with quiet_optuna():
        if not options.worker and spec.total_trials > CONFIRM_ABOVE_TRIALS and not options.yes:
            raise ConfigError(
                f"{compute_estimate(spec)}; a sweep of more than {CONFIRM_ABOVE_TRIALS} trials starts only with --yes"
            )
        slots = plan_slots(options.gpus, options.per_gpu, options.slots, cpu_count=options.cpus)
        sweep = open_sweep(spec, options)
        child.warm_up()  # the trial server's imports overlap the rest of the set-up
        sweep.out_dir.mkdir(parents=True, exist_ok=True)
        reap_orphans(sweep.study, set(), sweep.retry)
        resumed = None
        if not options.worker:
            enqueue_missing(sweep.study, spec)
            resumed = rounds.advance(sweep)  # a coordinator killed between two rounds: queue the next one now
        interrupted, crashes, outcomes = False, [], []
        try:
            with SweepProgress(enabled=options.progress) as progress:
                if resumed is not None:
                    progress.trial_finished(resumed.line())
                scheduler = Scheduler(sweep, slots, progress, poll_s=options.poll_s)
                outcomes = scheduler.run()
                crashes = scheduler.crashes
            interrupted = sweep.interrupted.is_set()
        except KeyboardInterrupt:
            interrupted = True
        result = SweepResult.of(sweep, started, outcomes=outcomes, interrupted=interrupted, crashes=crashes)
        # a worker leaves an unfinished sweep's parent to the coordinator
        result.close_parent(None if options.worker else "KILLED" if interrupted else "FAILED")
        return result


def _grid_table(result: SweepResult) -> list[str]:
    spec = result.spec
    by_variant: dict[str, list[float]] = {v.name: [] for v in spec.variants}
    for trial in result.complete:
        key = grid_key(trial)
        if key is not None and key[0] in by_variant and trial.value is not None:
            by_variant[key[0]].append(trial.value)
    width = max(len(name) for name in by_variant) + 2
    found = rounds.verdicts(spec, result.trials)
    verdict = f"  verdict{' (Δ vs baseline)' if found else ''}" if found else ""
    lines = [f"{'variant':<{width}} seeds  {spec.objective:<16}{verdict}"]
    for name, values in by_variant.items():
        mark = " *" if name == spec.baseline else ""
        said = "" if name not in found else f"  {found[name].verdict} ({found[name].delta:+.4g})"
        planned = f"{spec.min_seeds}..{len(spec.seeds)}" if spec.adaptive else str(len(spec.seeds))
        lines.append(f"{name + mark:<{width}} {len(values)}/{planned:<4} {_mean_std(values):<16}{said}")
    lines.append(
        "(* = baseline; mean ± std over seeds"
        + (f"; verdicts: {spec.design.name(spec.objective_delta)})" if found else ")")
    )
    return lines


def _search_table(result: SweepResult) -> list[str]:
    spec = result.spec
    done = sorted(
        (t for t in result.complete if t.value is not None), key=lambda t: t.value, reverse=spec.direction == "maximize"
    )
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
    return f"{mean:.4g} ± {statistics.stdev(values):.2g}" if len(values) > 1 else f"{mean:.4g}"
