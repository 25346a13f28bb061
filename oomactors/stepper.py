"""The actors' own scheduler: their coroutines stepped directly, not through the host's run queue.

Every actor of a run is an async coroutine, and every place one can wait goes through
:mod:`oomactors.sched` (a :class:`~oomactors.sched.Waiter` parks it; a scheduler's yield
puts it behind everyone ready).  So the run does not need the host's scheduler for its
switches: one host task (trio by default, or asyncio, under anyio) runs :meth:`Stepper.run_ready`,
which sends into each ready coroutine until it parks again.  A wakeup is an append to a
deque instead of a trip through the host's run queue, its outcome objects and its context
switches; measured, that was a quarter of a run's time.

Order: the actors ready at one moment form a batch, run in an order shuffled by the run's
seed (as trio's deterministic mode shuffled its batches), so the seed decides the
interleaving, and the same seed gives the same order in any process and on either host.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Coroutine


class _Suspend:
    """What an actor awaits to hand control back: the stepper receives ``what``."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __await__(self) -> Any:
        return (yield self.what)


PARK = _Suspend("park")     # parked on a Waiter, which makes it ready again when woken
YIELD = _Suspend("yield")   # ready again at once, behind every actor ready now


class Stepper:
    """The ready actors, stepped in seeded batches."""

    def __init__(self, seed: int) -> None:
        self.ready: deque[Coroutine[Any, Any, Any]] = deque()
        self.current: Coroutine[Any, Any, Any] | None = None
        self.live: dict[Coroutine[Any, Any, Any], None] = {}   # in spawn order, for teardown
        self.rng = random.Random()
        self.seed(seed)
        self.steps = 0

    def seed(self, seed: int) -> None:
        """The run's seed decides the order within each batch of ready actors."""
        self.rng.seed(f"oomactors-schedule-{seed}")

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.live[coro] = None
        self.ready.append(coro)

    def make_ready(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.ready.append(coro)

    def run_ready(self, budget: int) -> None:
        """Step the ready actors, batch after batch, until none is ready or ``budget``
        steps were taken (whole batches: stopping between two changes no order).  An
        exception an actor raises ends that actor and comes out of here."""
        ready = self.ready
        shuffle = self.rng.shuffle
        live = self.live
        steps = 0
        try:
            while ready and steps < budget:
                batch = list(ready)
                ready.clear()
                if len(batch) > 1:
                    shuffle(batch)
                steps += len(batch)
                for coro in batch:
                    self.current = coro
                    try:
                        what = coro.send(None)
                    except StopIteration:
                        del live[coro]
                        continue
                    except BaseException:
                        live.pop(coro, None)
                        raise
                    if what == "yield":
                        ready.append(coro)
        finally:
            self.current = None
            self.steps += steps

    def close(self) -> None:
        """Tear every actor down (their ``finally`` blocks run), in spawn order."""
        self.ready.clear()
        while self.live:
            coro = next(iter(self.live))
            del self.live[coro]
            coro.close()
