"""A run as it happens, on a terminal: the kernel console lines as they are printed, and a
progress bar (simulated time, events, kills) once the run has taken more than a moment.

It is an event sink (``sim.run(..., sinks=[live])``): it sees exactly the events the run
emits, in order, and never looks into the machine, so what it shows is what the trace
says, and the run is the same with or without it.  Wall-clock time is read only to decide
when the bar appears, outside the simulation.
"""

from __future__ import annotations

import time
from typing import Any

from .events import EVENT_ID
from .report import ConsoleText

_KILLS = frozenset(EVENT_ID[n] for n in ("sim:oom_kill", "userspace:kill", "userspace:cgroup_kill"))


class LiveRun:
    """The sink.  ``console`` is the rich Console to print on (stdout's by default);
    ``delay`` the wall-clock seconds before the bar appears (short runs never show one)."""

    CHECK_EVERY = 2048  # events between two looks at the wall clock

    def __init__(self, *, hz: int, duration: int, console: Any = None, delay: float = 1.5) -> None:
        from rich.console import Console

        self.hz = hz
        self.duration = max(1, duration)
        self.console = console if console is not None else Console(highlight=False)
        self.text = ConsoleText(hz=hz)
        self._console_ids = self.text.ids
        self.events = 0
        self.kills = 0
        self.now = 0
        self.delay = delay
        self._started = time.monotonic()
        self._next = 0 if delay <= 0 else self.CHECK_EVERY
        self.progress: Any = None
        self._bar: Any = None
        self.lines = 0

    def __call__(self, rec: tuple) -> None:
        self.events += 1
        eid = rec[1]
        if eid in self._console_ids:
            for line in self.text.feed(rec):
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)
                self.lines += 1
        if eid in _KILLS:
            self.kills += 1
        if self.events >= self._next:
            self._next = self.events + self.CHECK_EVERY
            self.now = rec[0]
            self._tick()

    def _tick(self) -> None:
        if self.progress is None:
            if time.monotonic() - self._started < self.delay:
                return
            self._start_bar()
        self.progress.update(self._bar, completed=self.now, events=self.events, kills=self.kills,
                             sim=self.now / self.hz)

    def _start_bar(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("simulating"), BarColumn(),
            TextColumn("{task.fields[sim]:.2f}/{task.fields[end]:.2f} s simulated"),
            TextColumn("{task.fields[events]} events, {task.fields[kills]} kills"),
            TimeElapsedColumn(), console=self.console, transient=True)
        self._bar = self.progress.add_task("run", total=self.duration, sim=0.0, end=self.duration / self.hz,
                                           events=0, kills=0)
        self.progress.start()

    def close(self) -> None:
        """Take the bar away (the run ended, or was interrupted)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
