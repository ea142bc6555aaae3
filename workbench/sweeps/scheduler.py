"""Slot threads: each takes the next trial, runs it in a child process, repeats.

One thread per slot, all in the sweep process; the work happens in the children,
the threads only wait on them. Taking a trial (reap orphans, pop the queue or ask
TPE, claim) is serialised by one lock so that this process never pops a trial
twice even on a storage without row locks. A slot with nothing to take waits
until every queued and running trial of the study is finished, since a running
one may still fail and be re-queued.
"""

from __future__ import annotations

import threading
import time
import traceback

import optuna

from workbench.progress import read_status
from workbench.sweeps import child, rounds
from workbench.sweeps.progress import SlotView, Snapshot, SweepProgress, eta
from workbench.sweeps.slots import Slot
from workbench.sweeps.space import TrialPlan
from workbench.sweeps.study import fail, open_trials, reap_orphans, take, tally
from workbench.sweeps.sweep import Sweep
from workbench.sweeps.trial import TrialOutcome, run_trial

COUNT_EVERY_S = 2.0  # how often the display re-counts the study (other workers finish trials too)


class Scheduler:
    def __init__(self, sweep: Sweep, slots: list[Slot], progress: SweepProgress, poll_s: float = 1.0):
        self.sweep = sweep
        self.slots = slots
        self.progress = progress
        self.poll_s = poll_s
        self.outcomes: list[TrialOutcome] = []
        self.crashes: list[str] = []  # unexpected errors in the sweep itself (not in a trial)
        self._take_lock = threading.Lock()
        self._changed = threading.Condition()
        self._running_here: set[int] = set()
        self._views = {slot.name: SlotView(slot.name) for slot in slots}

    # -------------------------------------------------------------- main thread
    def run(self) -> list[TrialOutcome]:
        threads = [
            threading.Thread(target=self._slot_loop, args=(slot,), name=f"slot-{slot.name}", daemon=True)
            for slot in self.slots
        ]
        for thread in threads:
            thread.start()
        counted_at, counted_outcomes, counts = 0.0, 0, (0, 0)
        try:
            while any(thread.is_alive() for thread in threads):
                if time.monotonic() - counted_at > COUNT_EVERY_S or len(self.outcomes) != counted_outcomes:
                    counted_outcomes = len(self.outcomes)
                    counts, counted_at = self.count(), time.monotonic()
                self.progress.update(self.snapshot(*counts))
                time.sleep(0.25)
        except KeyboardInterrupt:
            self.sweep.interrupted.set()
            self.sweep.no_new_trials.set()
            self._notify()
            for thread in threads:  # each stops its child (SIGTERM: the run is marked KILLED)
                thread.join()
        self.progress.update(self.snapshot(*self.count()))
        return self.outcomes

    def count(self) -> tuple[int, int]:
        """(done, failed) over the whole study (other processes run its trials too)."""
        return tally(self.sweep.spec, self.sweep.study.get_trials(deepcopy=False))

    def snapshot(self, done: int, failed: int) -> Snapshot:
        durations = [o.seconds for o in self.outcomes if o.state == "COMPLETE" and not o.reused]
        total = self.sweep.spec.total_trials
        return Snapshot(
            title=self.sweep.study_name,
            done=done,
            total=total,
            failed=failed,
            slots=[self._with_phase(view) for view in self._views.values()],
            eta_s=eta(total - done - failed, durations, len(self.slots)),
        )

    def _with_phase(self, view: SlotView) -> SlotView:
        """A copy of the slot's view with its trial's current phase (written by the trial child)."""
        shown = SlotView(**vars(view))
        if view.trial is not None:
            shown.phase = read_status(child.phase_path(self.sweep.out_dir / f"trial-{view.trial:04d}.json"))
        return shown

    # -------------------------------------------------------------- slot threads
    def _slot_loop(self, slot: Slot) -> None:
        while not self.sweep.no_new_trials.is_set():
            try:
                trial = self._take()
            except Exception:  # the storage is unreachable: stop the sweep, say why
                self._crash(f"taking a trial on {slot.name}", traceback.format_exc())
                return
            if trial is not None:
                self._run(slot, trial)
            elif open_trials(self.sweep.spec, self.sweep.study.get_trials(deepcopy=False)) == 0:
                if (
                    not self._advance()
                    and open_trials(self.sweep.spec, self.sweep.study.get_trials(deepcopy=False)) == 0
                ):
                    return  # nothing queued, running or left to decide (another slot may just have queued a round)
            else:
                with self._changed:
                    self._changed.wait(self.poll_s)

    def _run(self, slot: Slot, trial: optuna.Trial) -> None:
        view = self._views[slot.name]
        view.trial, view.started = trial.number, time.monotonic()

        def show(plan: TrialPlan) -> None:
            view.variant, view.seed = plan.variant, plan.seed

        try:
            outcome = run_trial(self.sweep, slot, trial, on_plan=show)
            self.outcomes.append(outcome)
            self.progress.trial_finished(_line(slot, outcome))
        except Exception:  # a bug or an unreachable store: stop taking trials, re-queue this one
            detail = traceback.format_exc()
            self._crash(f"trial {trial.number} on {slot.name}", detail)
            try:
                fail(self.sweep.study, trial, f"sweep error: {detail.strip().splitlines()[-1]}", retry=self.sweep.retry)
            except Exception:  # the storage itself is gone; a later run reaps the trial (dead owner)
                pass
        finally:
            with self._take_lock:
                self._running_here.discard(trial.number)
            view.trial, view.variant, view.seed = None, "", None
            self._notify()

    def _take(self) -> optuna.Trial | None:
        with self._take_lock:
            reap_orphans(self.sweep.study, self._running_here, self.sweep.retry)
            trial = take(self.sweep.study, self.sweep.spec)
            if trial is not None:
                self._running_here.add(trial.number)
            return trial

    def _advance(self) -> bool:
        """Nothing is queued or running: decide the comparisons and (adaptive seeds) queue the next round."""
        try:
            with self._take_lock:
                added = rounds.advance(self.sweep)
        except Exception:  # the storage or the tracking store is unreachable: stop, say why
            self._crash("deciding the next round of seeds", traceback.format_exc())
            return False
        if added is not None:
            self.progress.trial_finished(added.line())
        return added is not None

    def _crash(self, where: str, detail: str) -> None:
        self.crashes.append(f"{where}: {detail.strip().splitlines()[-1]}")
        self.progress.trial_finished(f"sweep error in {where}:\n{detail}")
        self.sweep.no_new_trials.set()
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()


def _line(slot: Slot, outcome: TrialOutcome) -> str:
    what = f"trial {outcome.number} {outcome.variant} seed {outcome.seed}"
    if outcome.state == "COMPLETE":
        how = "reused finished run" if outcome.reused else f"{outcome.seconds:.0f} s"
        return f"{slot.name}: {what}: COMPLETE {outcome.value:.4g} ({how})"
    if outcome.state == "PRUNED":
        return f"{slot.name}: {what}: PRUNED"
    return f"{slot.name}: {what}: FAIL — {outcome.error}"
