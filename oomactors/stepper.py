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

Controlled choice (:mod:`oomactors.schedule`): each actor has a number, its place in spawn
order.  When a scheduler that picks is installed, the batch being run is kept in
:attr:`Stepper.pending`, so at a decision point the actors that could run at this instant
are known (:meth:`Stepper.offered`: the asking one first, then the rest of the batch in
its order, then those made ready since); an actor that awaits :data:`SWITCH` after
setting :attr:`Stepper.target` lets that actor run first and goes on right after it.  With
no departure the order is the seeded one, step for step.  Without such a scheduler
:meth:`Stepper.run_ready` is the plain loop.
"""

from __future__ import annotations

import random
from functools import partial
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Coroutine


def _nothing() -> None:
    pass


class _Suspend:
    """What an actor awaits to hand control back: the stepper receives ``what``.

    Awaiting one costs no Python frame: its ``__await__`` is a partial of the builtin
    ``iter`` (not a method, so called without the instance), whose tuple iterator hands
    ``what`` to the stepper and is done at the next send -- not a generator made and run
    per park.  The await's value is None, as the stepper sends."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


def _suspend(what: str) -> _Suspend:
    kind = type(f"_Suspend_{what}", (_Suspend,), {"__slots__": (), "__await__": partial(iter, (what,))})
    return kind(what)


PARK = _suspend("park")     # parked on a Waiter, which makes it ready again when woken
YIELD = _suspend("yield")   # ready again at once, behind every actor ready now
SWITCH = _suspend("switch")  # controlled: run ``Stepper.target`` first, then go on


class Offered(Sequence):
    """The actors offered at a decision point (:meth:`Stepper.offered`), listed on first
    use.  Valid while the decision is being made: the stepper moves on after it, so a
    scheduler that keeps the actors for later keeps ``list(offered)``."""

    __slots__ = ("_stepper", "_items")

    def __init__(self, stepper: "Stepper") -> None:
        self._stepper = stepper
        self._items: list[int] | None = None

    def _list(self) -> list[int]:
        items = self._items
        if items is None:
            items = self._items = self._stepper.offered_now()
        return items

    def __len__(self) -> int:
        return len(self._list())

    def __getitem__(self, i: Any) -> Any:
        return self._list()[i]

    def __iter__(self) -> Iterator[int]:
        return iter(self._list())

    def __contains__(self, number: object) -> bool:
        return number in self._list()

    def __eq__(self, other: object) -> bool:
        return self._list() == (other._list() if isinstance(other, Offered) else other)

    __hash__ = None  # type: ignore[assignment]  # a list's equality, a list's unhashability

    def __repr__(self) -> str:
        return repr(self._list())


class Stepper:
    """The ready actors, stepped in seeded batches."""

    def __init__(self, seed: int) -> None:
        self.ready: deque[Coroutine[Any, Any, Any]] = deque()
        self.current: Coroutine[Any, Any, Any] | None = None
        # actor -> its number (spawn order); in spawn order, for teardown
        self.live: dict[Coroutine[Any, Any, Any], int] = {}
        self.spawned = 0
        self.rng = random.Random()
        self.seed(seed)
        self.steps = 0
        self.controlled = False   # a scheduler picks who runs: the batch is kept in pending
        self.pending: deque[Coroutine[Any, Any, Any]] = deque()
        self.target: int | None = None   # the actor a SWITCH runs first
        self.batch: list[Coroutine[Any, Any, Any]] = []  # the plain loop's batch (see stop)
        # controlled runs only: told when an actor's slice starts (n, "start") and ends
        # (n, "park" / "yield" / "switch" / "exit"); the exhaustive search's footprints
        self.observe: Any = None
        self._offered = Offered(self)
        # called when an actor that had started ends: returned, raised (before its exception
        # leaves run_ready) or closed at teardown -- the runner's count of running actors
        self.on_exit: Callable[[], None] = _nothing

    def seed(self, seed: int) -> None:
        """The run's seed decides the order within each batch of ready actors."""
        self.rng.seed(f"oomactors-schedule-{seed}")

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.live[coro] = self.spawned
        self.spawned += 1
        self.ready.append(coro)

    def make_ready(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.ready.append(coro)

    def run_ready(self, budget: int) -> None:
        """Step the ready actors, batch after batch, until none is ready or ``budget``
        steps were taken (whole batches: stopping between two changes no order).  An
        exception an actor raises ends that actor and comes out of here."""
        if self.controlled:
            return self._run_controlled(budget)
        ready = self.ready
        shuffle = self.rng.shuffle
        live = self.live
        on_exit = self.on_exit
        steps = 0
        try:
            while ready and steps < budget:
                self.batch = batch = list(ready)
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
                        on_exit()
                        continue
                    except BaseException:
                        live.pop(coro, None)
                        on_exit()
                        raise
                    if what == "yield":
                        ready.append(coro)
        finally:
            self.current = None
            self.steps += steps

    # --- controlled choice ------------------------------------------------------------
    def _run_controlled(self, budget: int) -> None:
        """:meth:`run_ready` with the batch in :attr:`pending`, so a decision point can
        offer its actors and a SWITCH can run one of them first.  The same draws and the
        same order as the plain loop while nobody switches."""
        ready = self.ready
        pending = self.pending
        shuffle = self.rng.shuffle
        live = self.live
        observe = self.observe
        on_exit = self.on_exit
        steps = 0
        try:
            while pending or (ready and steps < budget):
                if not pending:
                    batch = list(ready)
                    ready.clear()
                    if len(batch) > 1:
                        shuffle(batch)
                    steps += len(batch)
                    pending.extend(batch)
                coro = pending.popleft()
                self.current = coro
                if observe is not None:
                    observe(live[coro], "start")
                try:
                    what = coro.send(None)
                except StopIteration:
                    on_exit()
                    if observe is not None:
                        observe(live[coro], "exit")
                    del live[coro]
                    continue
                except BaseException:
                    live.pop(coro, None)
                    on_exit()
                    raise
                if observe is not None:
                    observe(live[coro], what)
                if what == "yield":
                    ready.append(coro)
                elif what == "switch":
                    pending.appendleft(coro)
                    pending.appendleft(self._take(self.target))
        finally:
            self.current = None
            self.steps += steps

    def offered(self) -> "Offered":
        """The actors that could run at this instant, by number: the current one, the
        rest of its batch in order, then those made ready since (the next batch).  Listed
        when first looked at: most decisions are answered without a look.  One object,
        emptied for each decision (valid only while it is made, as :class:`Offered` says)."""
        offered = self._offered
        offered._items = None
        return offered

    def offered_now(self) -> list[int]:
        """:meth:`offered`, listed at once."""
        number = self.live.__getitem__
        if self.current is None:
            return [*map(number, self.pending), *map(number, self.ready)]
        return [number(self.current), *map(number, self.pending), *map(number, self.ready)]

    def _take(self, number: int | None) -> Coroutine[Any, Any, Any]:
        """Remove actor ``number`` from the pending batch or the ready queue."""
        live = self.live
        for queue in (self.pending, self.ready):
            for c in queue:
                if live[c] == number:
                    queue.remove(c)
                    return c
        raise RuntimeError(f"actor {number} is not ready to run")  # pragma: no cover - a bug

    def label(self, number: int) -> str:
        """A readable name of actor ``number`` (its function and, for a task, its pid)."""
        for coro, n in self.live.items():
            if n != number:
                continue
            code = coro.cr_code
            frame = coro.cr_frame
            local = frame.f_locals if frame is not None else {}
            args = [local.get(a) for a in code.co_varnames[:code.co_argcount]]
            if args and code.co_varnames[0] == "self":  # a method: CPU.actor -> cpu0
                owner = args.pop(0)
                name = f"{type(owner).__name__.lower()}{getattr(owner, 'id', '')}"
            else:
                name = code.co_name
            for a in args:
                pid = getattr(a, "pid", None)
                if isinstance(pid, int):
                    return f"{number}:{name}/{pid}"
            return f"{number}:{name}"
        return str(number)

    def stop(self) -> None:
        """Run nobody more (Ctrl-C ended the run): the actor running now goes on to its
        next park, the rest of its batch and every ready actor stay where they are, for
        teardown.  A batch can hold every task of a large machine (100,000 woken in one
        jiffy), too long to step through once the run is over.  Emptying the list that
        :meth:`run_ready` iterates ends its loop without a test per step."""
        self.batch.clear()
        self.pending.clear()
        self.ready.clear()

    def abandon(self) -> None:
        """:meth:`stop`, and leave the started actors to the garbage collector instead of
        closing them: after Ctrl-C, closing every actor of a large machine takes seconds
        (100,000 coroutines unwound frame by frame), and the command is about to leave.
        Those that never started are closed (cheap; else Python warns they were never
        awaited)."""
        self.stop()
        for coro in self.live:
            if not coro.cr_suspended:
                coro.close()
        self.live = {c: n for c, n in self.live.items() if c.cr_suspended}

    def close(self) -> None:
        """Tear every actor down (their ``finally`` blocks run), in spawn order."""
        self.ready.clear()
        self.pending.clear()
        while self.live:
            coro = next(iter(self.live))
            del self.live[coro]
            started = coro.cr_suspended
            coro.close()
            if started:
                self.on_exit()
