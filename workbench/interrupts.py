"""SIGINT and SIGTERM for `workbench run`: stop at a step boundary, checkpoint, end the run KILLED.

A scheduler (SLURM, Kubernetes, systemd) stops a job with SIGTERM, a person with
Ctrl-C (SIGINT): both mean "stop, keep what you have". Inside `graceful()` the
first signal only sets a flag; the training loop sees it after the current step,
saves a checkpoint and raises `Interrupted`, so the run ends KILLED and resumable
with `workbench run --resume RUN_ID`. Outside the training loop (data checks,
evaluation) the first signal raises at once; a second signal always does.

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
from dataclasses import dataclass
from typing import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)
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
        return f"interrupted ({name}){where}: run {self.run_id} marked KILLED{kept}; resume: {resume_command(self.run_id, self.tracking_uri)}"


def resume_command(run_id: str, tracking_uri: str = "") -> str:
    uri = f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else ""
    return f"workbench run --resume {run_id}{uri}"


@dataclass
class _State:
    active: bool = False
    deferring: bool = False
    signum: int | None = None


_state = _State()


def requested() -> int | None:
    """The signal number a graceful stop was asked with (None: keep going)."""
    return _state.signum if _state.active else None


class deferring:  # noqa: N801 - used like a context manager function
    """Inside: a first signal waits for the loop to check `requested()` (a step boundary).
    A signal that arrived just before entering is acted on at once."""

    def __init__(self) -> None:
        self._before: bool | None = None

    def __enter__(self) -> "deferring":
        self._before = _state.deferring
        if _state.active and _state.signum is not None:
            raise Interrupted(_state.signum)
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
    raise Interrupted(signum)


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as above while inside (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    _state.active, _state.deferring, _state.signum = True, False, None
    for sig in HANDLED:
        signal.signal(sig, _handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.active, _state.deferring, _state.signum = False, False, None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Every command: SIGTERM raises `Interrupted` as Ctrl-C raises KeyboardInterrupt, so the
    same cleanup runs (a sweep stops its trials and ends its parent run KILLED) instead of
    the process vanishing with its runs RUNNING. No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
