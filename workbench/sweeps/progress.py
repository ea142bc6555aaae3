"""Sweep progress on the terminal: one line per slot, then done/total and an ETA.

On a terminal it is a ``rich`` live display; elsewhere (logs, CI, tests) one plain
line per finished trial, so the output stays readable when piped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from workbench.progress import format_seconds


@dataclass
class SlotView:
    name: str
    trial: int | None = None
    variant: str = ""
    seed: int | None = None
    started: float = 0.0  # time.monotonic()
    phase: str = ""  # what the trial is doing now, e.g. "pre-training 120/300", "eval vqa: fine-tune 40/100"


@dataclass
class Snapshot:
    title: str
    done: int
    total: int
    failed: int
    slots: list[SlotView] = field(default_factory=list)
    eta_s: float | None = None


def render(snapshot: Snapshot, now: float | None = None) -> Group:
    now = time.monotonic() if now is None else now
    lines = []
    for slot in snapshot.slots:
        if slot.trial is None:
            lines.append(Text(f"{slot.name:<8} idle", style="dim"))
        else:
            what = f"trial {slot.trial:>4}  {slot.variant}" + (f"  seed {slot.seed}" if slot.seed is not None else "")
            doing = f"  {slot.phase}" if slot.phase else ""
            lines.append(Text(f"{slot.name:<8} {what}  {format_seconds(now - slot.started)}{doing}"))
    failed = f" · {snapshot.failed} failed" if snapshot.failed else ""
    lines.append(
        Text(
            f"{snapshot.title}: {snapshot.done}/{snapshot.total} done{failed} · ETA {format_seconds(snapshot.eta_s)}",
            style="bold",
        )
    )
    return Group(*lines)


def eta(remaining: int, durations: list[float], slots: int) -> float | None:
    """Mean trial time x remaining trials / concurrent slots (None until a trial has finished here)."""
    if remaining <= 0:
        return 0.0
    if not durations:
        return None
    return sum(durations) / len(durations) * remaining / max(1, slots)


class SweepProgress:
    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.live: Live | None = None

    def __enter__(self) -> SweepProgress:
        if self.enabled and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def update(self, snapshot: Snapshot) -> None:
        if self.live is not None:
            self.live.update(render(snapshot))

    def trial_finished(self, line: str) -> None:
        """One line per finished trial (above the live display, if any)."""
        if self.enabled:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
