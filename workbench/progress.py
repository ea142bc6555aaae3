"""What a run is doing now: a rich bar per phase, a line per finished phase with its time.

A run has phases (data generation, pre-training, one per evaluation task). Each
`phase(...)` prints "<name>: done in <time>" when it ends, shows a bar while it
runs (when bars are on, output is a terminal and it has a known length) and,
when output is not a terminal (a log file, a pipe), a plain line every
PLAIN_EVERY_S instead ("pre-training: 12/20 steps, 0.41 steps/s, ETA 0:19"), and writes its name and count
to a status file when one is set: a sweep's trial child sets one, so the sweep's
live table shows each trial's phase (`read_status`).

Module state, not an object passed down: the layers that do the work (training,
retrieval, fine-tunes) only say `with phase(...)`/`advance()`; the CLI or the
sweep child decides where it shows.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

STATUS_EVERY_S = 1.0  # status file writes at most this often (plus at each phase start/end)
PLAIN_EVERY_S = 10.0  # off a terminal: a progress line this often for the innermost running phase

_bars = True  # rich bars on the terminal
_lines = True  # one line per finished phase
_status_file: Path | None = None
_console: Console | None = None
_current: Phase | None = None


def configure(*, bars: bool | None = None, lines: bool | None = None, status_file: str | Path | None = "") -> None:
    """Where progress goes. `status_file=None` stops writing one; "" leaves it as it is."""
    global _bars, _lines, _status_file
    if bars is not None:
        _bars = bars
    if lines is not None:
        _lines = lines
    if status_file != "":
        _status_file = Path(status_file) if status_file else None


@contextlib.contextmanager
def settings(*, bars: bool, lines: bool | None = None) -> Iterator[None]:
    """Bars (and phase lines) on/off inside (a run with `progress=False`, a DDP rank > 0), restored after."""
    global _bars, _lines
    before = _bars, _lines
    _bars = bars
    _lines = _lines if lines is None else lines
    try:
        yield
    finally:
        _bars, _lines = before


@contextlib.contextmanager
def on_stderr() -> Iterator[None]:
    """Bars and phase lines on stderr inside, leaving stdout to a machine-read result (`bench --json`)."""
    global _console
    before = _console
    _console = Console(highlight=False, stderr=True)
    try:
        yield
    finally:
        _console = before


def console() -> Console:
    global _console
    if _console is None:
        _console = Console(highlight=False)
    return _console


def _bars_shown() -> bool:
    """Bars only on a terminal: in a log file they would be blank lines; the phase lines stay."""
    return _bars and console().is_terminal


def format_seconds(seconds: float | None) -> str:
    """A duration as people read it: `42.0 s` under a minute, then `m:ss` and `h:mm:ss`; `?` when unknown
    (no ETA yet). The one format of every elapsed time and ETA the workbench prints."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def say(text: str) -> None:
    """A line for the person watching (above any live bar)."""
    if _lines:
        console().print(text, markup=False, soft_wrap=True)


class Phase:
    """One phase: its bar (optional), its count, its status line."""

    def __init__(self, name: str, total: int | None, unit: str, fields: dict[str, str]):
        self.name, self.total, self.unit = name, total, unit
        self.done = 0
        self.stage = ""
        self.started = time.perf_counter()
        self._status_at = 0.0
        self._progress: Progress | None = None
        self._fields: dict[str, str] = {}
        self._since: tuple[int, float] | None = None  # (count, time) of the first update: the rate's origin
        self._ticker: threading.Event | None = None
        if _bars_shown() and total:
            self._start_bar(fields)
        if _lines and not console().is_terminal and PLAIN_EVERY_S > 0:
            self._start_ticker()

    def _start_ticker(self) -> None:
        """Plain progress lines from a daemon thread: a phase with no count (data generation)
        or slow steps still shows it is alive, with its count, rate and ETA when it has them."""
        stop = self._ticker = threading.Event()

        def tick() -> None:
            while not stop.wait(PLAIN_EVERY_S):
                if _current is self and _lines:
                    say(self.plain_line())

        threading.Thread(target=tick, name=f"progress {self.name}", daemon=True).start()

    def plain_line(self) -> str:
        """Where the phase is, for a log: count/total, rate, ETA (or the time so far), its fields."""
        name = f"{self.name}: {self.stage}" if self.stage else self.name
        elapsed = time.perf_counter() - self.started
        rate = None
        if self._since is not None and self.done > self._since[0]:
            rate = (self.done - self._since[0]) / max(time.perf_counter() - self._since[1], 1e-9)
        if self.total:
            text = f"{name}: {self.done}/{self.total} {self.unit}"
        elif self.done:
            text = f"{name}: {self.done} {self.unit}"
        else:
            text = f"{name}: running"
        if rate is not None:
            text += f", {rate:.2f} {self.unit}/s"
        if rate and self.total:
            text += f", ETA {format_seconds(max(self.total - self.done, 0) / rate)}"
        else:
            text += f", {format_seconds(elapsed)} so far"
        extra = " ".join(value for value in self._fields.values() if value and "-" not in value.split())
        return f"{text} ({extra})" if extra else text

    def _start_bar(self, fields: dict[str, str]) -> None:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit)]
        columns += [TextColumn(f"{{task.fields[{key}]}}") for key in fields]
        columns += [TimeElapsedColumn(), TimeRemainingColumn()]
        self._progress = Progress(*columns, console=console(), transient=True)
        name = f"{self.name}: {self.stage}" if self.stage else self.name
        self._task = self._progress.add_task(name, total=self.total, completed=self.done, **fields)
        self._progress.start()

    def set_total(self, total: int | None) -> None:
        """The length once known (a phase that learns it after it started)."""
        self.total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total)
        elif _bars_shown() and total:
            self._start_bar({})

    def advance(self, n: int = 1, **fields: str) -> None:
        self.update(self.done + n, **fields)

    def update(self, done: int, **fields: str) -> None:
        if self._since is None:
            self._since = (done, time.perf_counter())
        self.done = done
        self._fields.update(fields)
        if self._progress is not None:
            self._progress.update(self._task, completed=done, **fields)
        now = time.monotonic()
        if now - self._status_at >= STATUS_EVERY_S:
            self._status_at = now
            _write_status(self.status())

    def describe(self, stage: str, total: int | None = None, unit: str | None = None, restart: bool = False) -> None:
        """Name the current stage of the phase (e.g. "fine-tune", "scoring"); `restart` starts
        its count (and bar) again at 0 with `total` (None: unknown) and `unit`."""
        self.stage = stage
        if restart:
            self.total, self.unit, self.done = total, unit or self.unit, 0
            self._since = None
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
                self._start_bar({})
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self.name}: {stage}")
        _write_status(self.status())

    def status(self) -> str:
        count = f" {self.done}/{self.total}" if self.total else (f" {self.done}" if self.done else "")
        stage = f": {self.stage}" if self.stage else ""
        return f"{self.name}{stage}{count}"

    def close(self) -> float:
        if self._ticker is not None:
            self._ticker.set()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        return time.perf_counter() - self.started


@contextlib.contextmanager
def phase(name: str, total: int | None = None, unit: str = "steps", summary=None, **fields: str) -> Iterator[Phase]:
    """A phase of a run. `summary(phase) -> str` adds to its closing line (e.g. the steps done)."""
    global _current
    outer, current = _current, Phase(name, total, unit, fields)
    _current = current
    _write_status(current.status())
    ok = False
    try:
        yield current
        ok = True
    finally:
        seconds = current.close()
        _current = outer
        _write_status(outer.status() if outer else "")
        extra = summary(current) if (summary and ok) else ""
        say(f"{name}: {'done' if ok else 'stopped'} in {format_seconds(seconds)}{f' ({extra})' if extra else ''}")


def current() -> Phase | None:
    """The innermost running phase (for `advance` from code that does not own it)."""
    return _current


def _write_status(text: str) -> None:
    if _status_file is None:
        return
    try:
        tmp = _status_file.with_name(_status_file.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, _status_file)
    except OSError:  # a status line is never worth failing a run
        pass


def read_status(path: Path) -> str:
    """The phase a status file names ("" when there is none yet)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class TrainProgress:
    """The pre-training phase: bar with step, total loss, per-objective losses, samples/s."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, description: str = "pre-training"):
        self._start = start
        with settings(bars=enabled and _bars):
            self._phase_cm = phase(description, total=total, summary=self._summary, loss="loss -", speed="- samples/s")
            self._phase = self._phase_cm.__enter__()
        self._phase.update(start)
        self._closed = False

    def _summary(self, phase: Phase) -> str:
        return f"steps {self._start}->{phase.done}"

    def update(self, step: int, losses: dict[str, float] | None, samples_per_s: float | None) -> None:
        fields = {}
        if losses:
            parts = [
                f"{key.removeprefix('loss/')} {value:.3f}"
                for key, value in losses.items()
                if key.startswith("loss/") and key.count("/") == 1
            ]
            fields["loss"] = f"loss {losses['loss']:.4f}" + (f" ({' '.join(parts)})" if parts else "")
        if samples_per_s is not None:
            fields["speed"] = f"{samples_per_s:.1f} samples/s"
        self._phase.update(step, **fields)

    def close(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if error is None:
            self._phase_cm.__exit__(None, None, None)
        else:
            self._phase_cm.__exit__(type(error), error, error.__traceback__)
