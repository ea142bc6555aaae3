"""The three things a sweep needs from Optuna below its public API, kept in this one module.

Optuna's ask/tell API assumes that the process which asks for a trial also tells how
it ended, and it records heartbeats only inside ``Study.optimize``. A sweep needs three
things beyond that. Each is a small call on Optuna's internals, and each has its own
test (tests/test_sweeps.py, ``test_optuna_internals_*``), so an Optuna upgrade that
changes one fails there, loudly, not in the middle of a sweep:

* ``take_queued``: pop a queued trial and never create one. ``Study.ask`` pops a
  queued trial, but creates a new one when the queue is empty, so grid workers racing
  for the last queued trial would run trials nobody planned. This is the pop that
  ``ask`` itself uses (``Study._pop_waiting_trial_id``: an atomic WAITING -> RUNNING on
  every storage), without the fallback.
* ``set_user_attr``: record why a trial failed when another process started it (a
  reaper failing the trial of a dead process or of a vanished SLURM job). The public
  ``Trial.set_user_attr`` needs the ``Trial`` that only the trial's owner holds.
* ``heartbeat``: an ask/tell loop must record heartbeats itself (``Study.optimize``
  does it through ``optuna.storages._heartbeat``); without them ``fail_stale_trials``
  on another host cannot tell a dead host's trials from live ones.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial


def take_queued(study: optuna.Study) -> optuna.Trial | None:
    """A queued trial, now RUNNING and ours (atomic across processes and hosts), or None."""
    trial_id = study._pop_waiting_trial_id()
    return None if trial_id is None else optuna.Trial(study, trial_id)


def set_user_attr(study: optuna.Study, trial: FrozenTrial | optuna.Trial, key: str, value: Any) -> None:
    """``trial.set_user_attr(key, value)`` on any unfinished trial of `study`, whoever runs it."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial) -> Iterator[None]:
    """Record `trial`'s heartbeat at once and then every interval until the block ends (RDB
    storages with a heartbeat; nothing otherwise). A beat that fails (a transient database
    error) is tried again at the next interval instead of ending the trial."""
    storage = trial.study._storage
    if not is_heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
