"""Virtual time: the jiffies clock, its timers and the parked actors' waiters.

Time is an integer count of jiffies.  Sleepers park on a heap of deadlines; when every
actor is blocked, the clock driver jumps to the earliest deadline and wakes everyone
due then -- one wakeup per sleeper, never one backend timer per actor per jiffy.  The
heap holds each deadline once, with the list of its sleepers in the order they were
added (a few dozen per jiffy share one): the order of a heap of (deadline, sequence)
pairs, without a tuple and a sift of pair comparisons per sleep.

:mod:`oomactors.sched` builds the CPUs and the named scheduling points on this clock (and
re-exports its names).
"""

from __future__ import annotations

import heapq
from typing import Any, Callable

from . import interrupt as _interrupt
from .stepper import PARK, YIELD, Stepper

NSEC_PER_SEC = 1_000_000_000


class Waiter:
    """One parked actor, woken at most once (by the clock, a signal or a lock hand-over).

    Waiters keep the clock's count of running actors: when the last running actor parks,
    the clock advances right there, so a jiffy costs one pass of the backend's scheduler.
    """

    __slots__ = ("clock", "task", "woken", "value", "parked")

    def __init__(self, clock: "Clock") -> None:
        self.clock = clock
        self.task: Any = None   # the parked actor's coroutine
        self.woken = False
        self.value: Any = None
        self.parked = False

    def wake(self, value: Any = None) -> bool:
        if self.woken:
            return False
        self.woken = True
        self.value = value
        if self.parked:
            self.parked = False
            self.clock.active += 1
            self.clock.backend.unpark(self)
        return True

    async def wait(self) -> Any:
        if self.must_park():
            await self.clock.backend.park(self)
        return self.value

    def must_park(self) -> bool:
        """Count this actor out of the running ones; False if it was woken already (the
        clock, advanced because it was the last one running, reached its own deadline)."""
        if self.woken:
            return False
        clock = self.clock
        self.parked = True
        clock.active -= 1
        if clock.active <= 0:
            clock.idle()
            return not self.woken
        return True



class _Backend:
    """The host (anyio's backend: trio or asyncio) and the actors' own stepper.

    Parking is a yield to the :class:`~oomactors.stepper.Stepper`, unparking an append to
    its ready deque: the host's scheduler is not involved in the actors' switches."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.stepper = Stepper(seed)

    async def park(self, w: Waiter) -> None:
        w.task = self.stepper.current
        await PARK

    def unpark(self, w: Waiter) -> None:
        if w.task is not None:
            self.stepper.ready.append(w.task)
            w.task = None

    async def checkpoint(self) -> None:
        """Behind every actor ready to run now."""
        await YIELD


class Clock:
    """The virtual jiffies clock, its heap of sleepers and its count of running actors."""

    def __init__(self, hz: int, backend: _Backend) -> None:
        self.hz = hz
        self.jiffy_ns = NSEC_PER_SEC // hz
        self.now = 0
        self.backend = backend
        # deadline -> [seq of its last entry, entry, entry, ...] (a Waiter or a _Call, in
        # the order they were added), and the heap of those deadlines
        self._timers: dict[int, list[Any]] = {}
        self._deadlines: list[int] = []
        self._seq = 0                # entries added so far
        self.sleeps = 0
        self.active = 0              # actors that are running or runnable
        self.limit: int | None = None  # the run ends here
        self.ended: str | None = None
        self.should_stop: Callable[[], bool] = lambda: False
        self.repairs = 0             # idle moments found by the backend, not by the count
        self.on_interrupt: Callable[[], None] = lambda: None  # the machine stops recording

    def interrupt(self) -> None:
        """Ctrl-C (:mod:`oomactors.interrupt`) was asked for: the run ends at the current
        time.  Nothing advances the clock any more, so every actor parks at its next sleep
        and the runner tears them all down."""
        self.ended = "interrupted"
        self.on_interrupt()

    def waiter(self) -> Waiter:
        return Waiter(self)

    async def sleep_until(self, deadline: int, w: Waiter | None = None) -> Waiter:
        if w is None:
            w = Waiter(self)
        self.add_sleeper(deadline, w)
        await w.wait()
        return w

    def add_sleeper(self, deadline: int, w: Waiter) -> None:
        self.sleeps += 1
        self._add(deadline, w)

    def arm(self, deadline: int, w: Waiter) -> bool:
        """:meth:`add_sleeper` and ``w.must_park()`` of a waiter not woken yet, in one frame:
        True if the caller must park (Backend.park), False if the clock, advanced because
        this was the last actor running, has reached the deadline already."""
        self.sleeps += 1
        seq = self._seq = self._seq + 1
        timers = self._timers.get(deadline)
        if timers is None:
            self._timers[deadline] = [seq, w]
            heapq.heappush(self._deadlines, deadline)
        else:
            timers[0] = seq
            timers.append(w)
        w.parked = True
        self.active -= 1
        if self.active <= 0:
            self.idle()
            return not w.woken
        return True

    def _add(self, deadline: int, entry: Any) -> None:
        """Put ``entry`` last among those due at ``deadline`` (never before now)."""
        self._seq += 1
        timers = self._timers.get(deadline)
        if timers is None:
            self._timers[deadline] = [self._seq, entry]
            heapq.heappush(self._deadlines, deadline)
        else:
            timers[0] = self._seq
            timers.append(entry)

    def timers_since(self, seq: int) -> list[int]:
        """The deadlines that hold an entry added after the ``seq``-th (still pending)."""
        return [d for d, timers in self._timers.items() if timers[0] > seq]

    def idle(self) -> None:
        """Every actor is parked: jump to the next deadline, or end the run.  A deadline
        that only held callbacks (:meth:`call_at`) woke nobody: jump on to the next one."""
        while self.ended is None:
            if _interrupt._requested:  # polled whenever virtual time would advance
                self.interrupt()
                return
            if self.should_stop():
                self.ended = "idle"
                return
            deadline = self.next_deadline()
            if deadline is None:
                self.ended = "deadlock"
                return
            if self.limit is not None and deadline > self.limit:
                self.now = self.limit
                self.ended = "duration"
                return
            now = self.now = max(self.now, deadline)
            deadlines = self._deadlines
            all_timers = self._timers
            ready = self.backend.stepper.ready
            while deadlines and deadlines[0] <= now:
                d = deadlines[0]
                timers = all_timers[d]
                i = 1
                while i < len(timers):  # a callback may add to this very list (due now)
                    w = timers[i]
                    i += 1
                    if type(w) is not Waiter:
                        w.wake()
                    elif not w.woken:  # Waiter.wake() and Backend.unpark without their frames
                        w.woken = True
                        w.value = None
                        if w.parked:
                            w.parked = False
                            self.active += 1
                            if w.task is not None:
                                ready.append(w.task)
                                w.task = None
                heapq.heappop(deadlines)
                del all_timers[d]
            if self.active:
                return

    def next_deadline(self) -> int | None:
        """The earliest deadline with an entry not woken yet (those woken before their
        time, by a signal or a hand-over, are dropped here)."""
        deadlines = self._deadlines
        while deadlines:
            d = deadlines[0]
            timers = self._timers[d]
            i = 1
            while i < len(timers) and timers[i].woken:
                i += 1
            if i < len(timers):
                del timers[1:i]
                return d
            heapq.heappop(deadlines)
            del self._timers[d]
        return None

    def call_at(self, deadline: int, fn: Callable[[], None]) -> None:
        """Call ``fn`` when the clock reaches ``deadline``, from the clock itself (before
        any actor runs at that time).  No actor is involved, so the backend's schedule is
        the same with or without it: for observers, such as the PSI samples."""
        self._add(deadline, _Call(fn))


class _Call:
    """A heap entry of :meth:`Clock.call_at`: waking it runs the callback."""

    __slots__ = ("fn", "woken")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.woken = False

    def wake(self, value: Any = None) -> bool:
        if self.woken:
            return False
        self.woken = True
        self.fn()
        return True
