"""SIGINT, SIGTERM and SIGHUP for `workbench run`: stop at a step boundary, checkpoint, end the run KILLED.

A scheduler (SLURM, Kubernetes, systemd) stops a job with SIGTERM, a person with
Ctrl-C (SIGINT), a closed terminal or ssh session with SIGHUP: all mean "stop,
keep what you have". Inside `graceful()` the
first signal only sets a flag; the training loop sees it after the current step,
saves a checkpoint and raises `Interrupted`, so the run ends KILLED and resumable
with `workbench run --resume RUN_ID`. Outside the training loop (data checks,
evaluation) the first signal raises at once; a second signal always does --
except inside `critical()` (an atomic checkpoint write): there every signal waits
until the write is complete, so no half-written temp file is left behind. Once a
signal has stopped the run, further ones wait while the run is being ended
KILLED (a third one forces the way out), so the run is never left RUNNING.

`Interrupted` is a KeyboardInterrupt, so every `except KeyboardInterrupt` that
marks a run KILLED (train, sweeps) treats SIGTERM like Ctrl-C.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
FORCE_AFTER = 3  # signals during the clean-up after a stop: the third one raises anyway
CHILD_GRACE_S = 60.0  # a forwarded SIGTERM gives a child this long to checkpoint and end its run


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_id: str | None = None
        self.step: int | None = None
        self.steps: int | None = None
        self.checkpoint: str | None = None
        self.tracking_uri: str = ""
        self.quiet = False  # another process (rank 0) reports it

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        """What the person who stopped the run needs: where it stopped and the exact resume command."""
        name = signal.Signals(self.signum).name
        if self.run_id is None:
            return f"interrupted ({name})"
        where = f" at step {self.step}/{self.steps}" if self.step is not None else ""
        kept = f", checkpoint {self.checkpoint}" if self.checkpoint else ", no checkpoint yet"
        return (
            f"interrupted ({name}){where}: run {self.run_id} marked KILLED{kept}; resume: "
            f"{resume_command(self.run_id, self.tracking_uri)}"
        )


def resume_command(run_id: str, tracking_uri: str = "") -> str:
    uri = f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else ""
    return f"workbench run --resume {run_id}{uri}"


@dataclass
class _State:
    active: bool = False
    deferring: bool = False
    signum: int | None = None
    critical: int = 0  # depth of `critical()` sections: signals wait for their end
    pending: int | None = None  # a signal that came inside a critical section
    raised: bool = False  # an `Interrupted` is on its way out: the run is being ended
    after_raise: int = 0  # signals since then


_state = _State()


def requested() -> int | None:
    """The signal number a graceful stop was asked with (None: keep going)."""
    return _state.signum if _state.active else None


class deferring:  # noqa: N801 - used like a context manager function
    """Inside: a first signal waits for the loop to check `requested()` (a step boundary).
    A signal that arrived just before entering is acted on at once."""

    def __init__(self) -> None:
        self._before: bool | None = None

    def __enter__(self) -> deferring:
        self._before = _state.deferring
        if _state.active and _state.signum is not None:
            stop(_state.signum)
        _state.deferring = _state.active
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before is not None:
            _state.deferring, self._before = self._before, None


def _handle(signum: int, frame: object) -> None:
    first = _state.signum is None
    if _state.signum is None:
        _state.signum = signum
    if first and _state.deferring:
        return  # the training loop checkpoints and raises at the end of this step
    if _state.critical:
        _state.pending = signum  # raised when the atomic write is complete
        return
    if _state.raised:  # the run is being ended KILLED: let that finish unless forced
        _state.after_raise += 1
        if _state.after_raise < FORCE_AFTER:
            return
    _raise(signum)


def stop(signum: int) -> None:
    """Raise `Interrupted(signum)`: the run stops; signals after this wait while it is ended."""
    _state.raised = True
    raise Interrupted(signum)


_raise = stop


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Inside, a signal does not interrupt (an atomic write completes or fails on its own);
    one that came meanwhile is acted on at the end, as it would have been at once.
    Used around checkpoint writes; a no-op outside `graceful()`/`sigterm_as_interrupt()`."""
    _state.critical += 1
    try:
        yield
    finally:
        _state.critical -= 1
    if _state.critical == 0 and _state.pending is not None:
        signum, _state.pending = _state.pending, None
        _raise(signum)


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as above while inside (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    _reset(active=True)
    for sig in HANDLED:
        signal.signal(sig, _handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _reset(active=False)


def _reset(active: bool) -> None:
    _state.active, _state.deferring, _state.signum = active, False, None
    _state.pending, _state.raised, _state.after_raise = None, False, 0


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Every command: SIGTERM and SIGHUP raise `Interrupted` as Ctrl-C raises KeyboardInterrupt,
    so the same cleanup runs (a sweep stops its trials and ends its parent run KILLED; data
    generation, a warm start or an evaluation ends its run KILLED) instead of the process
    vanishing with its runs RUNNING. Inside `critical()` the signal waits for the write to
    complete. No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        if _state.critical:
            _state.pending = signum
            return
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_forwarding(command: list[str]) -> int:
    """Run `command` (e.g. torchrun) as a child; SIGINT/SIGTERM to us are passed on to it as
    SIGTERM, once, and we wait for it to stop its workers (killed after CHILD_GRACE_S).
    Returns the child's exit code; a signal never leaves it running without us."""
    process = subprocess.Popen(command)
    if threading.current_thread() is not threading.main_thread():
        return process.wait()
    got: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if not got:
            got.append(signum)
            process.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in HANDLED}
    deadline: float | None = None
    try:
        while True:
            try:
                code = process.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if got and deadline is None:
                    deadline = time.monotonic() + CHILD_GRACE_S
                if deadline is not None and time.monotonic() > deadline:
                    process.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if got and code in (0, -signal.SIGTERM):
        return 128 + got[0]
    return code if code >= 0 else 128 - code
