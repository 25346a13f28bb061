"""Controlled scheduling: what an actor does at each named scheduling point.

Every time an actor passes a named scheduling point (:data:`oomactors.sched.POINTS`:
``Sched.point``, ``sleep``, ``block_on``, and ``run`` once it has used up a jiffy of CPU
time) it reaches a *decision point*.  Decision points are numbered from 0 in the order
the run reaches them (``index``); an installed :class:`Scheduler` is asked about each one
and answers an *action*:

* ``0`` -- go on as the plain model would (the default; never recorded);
* ``-1`` (:data:`YIELD`) -- give the CPU up and requeue behind whatever else is runnable
  at this instant: behind the CPU's run queue if it has one, otherwise behind every actor
  the backend has ready to run (the actor is held back by other actors' steps, not by
  time);
* ``k > 0`` -- be held back ``k`` jiffies off the CPU, like an uninterruptible sleep.  A
  hold does not look at signals: a SIGKILL that arrives meanwhile is seen where the model
  would have seen it anyway, right after the hold.

Holds are allowed everywhere, including with ``oom_lock`` held (``may_oom.locked``,
``oom.scan``, ``oom.report``): a preempted lock holder is exactly the interesting case.

A run records only the choices that departed from the default, as a :class:`Schedule`
(``RunResult.schedule``), and replaying the schedule with the same config and seed gives
the same trace bytes (``make_scheduler("replay", schedule=...)``).  A replay checks that
each recorded choice meets the same pid at the same point and raises
:class:`ScheduleDivergence` naming the first choice where the code went another way.

Schedulers (:func:`make_scheduler`): ``none``, ``random``, ``pct``, ``replay``; the
Hypothesis integration (:class:`HypothesisScheduler`) draws a sparse list of
perturbations up front and replays it leniently.

**The compact form** (:meth:`Schedule.dumps`): choices separated by ``"; "``, each
``INDEX:POINT@PID=ACTION`` with ACTION ``y`` (yield) or ``+K`` (held K jiffies), e.g.
``"812:may_oom.locked@7=+5; 1024:oom.scan@7=y"``.  A lenient entry (drawn by Hypothesis,
not recorded from a run) leaves out what it does not check: ``"812=+5"``.  The JSON form
(:meth:`Schedule.to_json`) is a list of ``[index, pid, point, action]`` (pid and point
``null`` in lenient entries).

**PCT, translated.**  The PCT algorithm (Burckhardt et al., ASPLOS 2010) gives the n
threads random distinct priorities d..d+n-1, picks d-1 change points uniformly among the
k steps of a run, lowers the running thread to priority i at the i-th change point, and
always runs the highest-priority enabled thread; a bug of depth d is then found with
probability at least 1/(n·k^(d-1)) per run.  Here the scheduler cannot pick who runs
next: it can only hold back the actor that asks.  So:

* each actor (pid) gets a random initial priority above d the first time it asks;
* d-1 change points are drawn uniformly, without repetition, from the decision indices
  [0, k), with k the number of decision points of an unperturbed run of the same config
  and seed (``oomactors explore`` measures it);
* the actor that reaches the i-th change point drops to priority i and, if any other
  actor has a higher priority, is held there ``starve`` jiffies (HZ): in virtual time the
  actors that must run ahead of it include those asleep on a timer, which a hold that
  only waited for CPUs would never let run first;
* afterwards, a lowered actor that reaches a decision point while some other *enabled* actor (one on
  a CPU or in a run queue) has a higher priority is held back one jiffy -- it does not run
  while a higher-priority actor can;
* runs do not end on their own (memory hogs allocate forever), so after its change point
  a lowered actor is held for at most another ``starve`` jiffies in all, then goes back to
  the default; unbounded starvation would make liveness checkers fire on the scheduler's
  doing.

The initial priorities only matter against lowered actors: among actors that were never
lowered the order is the seed's own interleaving, not enforced by priority.  The
1/(n·k^(d-1)) bound assumes a scheduler that picks every step of a sequential program;
with the seed deciding the base interleaving, time ordering some events by itself, and
starvation bounded, the bound is *not* guaranteed here.  The d-1 change points are what
PCT contributes: a few well-placed priority inversions, drawn uniformly over the run.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple

from .errors import InputError, OomactorsError

if TYPE_CHECKING:  # pragma: no cover
    from .sched import Sched

YIELD = -1

SCHEDULERS = ("none", "random", "pct", "replay", "hypothesis")


def default_menu(hz: int = 250) -> tuple[int, ...]:
    """The actions a random draw picks from: yield, 1, 2 and 5 jiffies, and HZ/10."""
    return tuple(dict.fromkeys((YIELD, 1, 2, 5, max(1, hz // 10))))


class ScheduleDivergence(OomactorsError):
    """A replayed schedule no longer fits the run (the code or the config changed)."""

    exit_status = 2


class Choice(NamedTuple):
    """One non-default decision: at decision point ``index``, task ``pid`` at ``point``
    did ``action`` (-1 yield, k > 0 held k jiffies).  ``pid``/``point`` are None in a
    lenient entry (drawn, not recorded): a replay does not check them."""

    index: int
    pid: int | None
    point: str | None
    action: int

    def text(self) -> str:
        act = "y" if self.action == YIELD else f"+{self.action}"
        if self.pid is None or self.point is None:
            return f"{self.index}={act}"
        return f"{self.index}:{self.point}@{self.pid}={act}"


_ENTRY = re.compile(r"^(\d+)(?::([A-Za-z0-9_.]+)@(\d+))?=(y|\+\d+)$")


def _check_action(action: Any, where: str) -> int:
    if isinstance(action, bool) or not isinstance(action, int) or action == 0 or action < YIELD:
        raise InputError(f"{where}: action must be -1 (yield) or a positive number of jiffies, "
                         f"not {action!r}")
    return action


@dataclass(frozen=True)
class Schedule:
    """The recorded non-default choices of a run, in decision order."""

    choices: tuple[Choice, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(sorted(self.choices, key=lambda c: c.index)))

    def __len__(self) -> int:
        return len(self.choices)

    def __iter__(self):
        return iter(self.choices)

    def __bool__(self) -> bool:
        return bool(self.choices)

    @property
    def lenient(self) -> bool:
        """True if some entry does not name its pid and point."""
        return any(c.pid is None or c.point is None for c in self.choices)

    # --- the compact text form ---------------------------------------------------
    def dumps(self) -> str:
        return "; ".join(c.text() for c in self.choices)

    @classmethod
    def loads(cls, text: str, source: str = "schedule") -> "Schedule":
        from .sched import POINTS
        out: list[Choice] = []
        seen: set[int] = set()
        for n, raw in enumerate(re.split(r"[;\s]+", text.strip())):
            if not raw:
                continue
            m = _ENTRY.match(raw)
            if m is None:
                raise InputError(f"{source}: entry {n} {raw!r}: expected INDEX:POINT@PID=ACTION "
                                 f"or INDEX=ACTION (ACTION y or +K)")
            index = int(m[1])
            point = m[2]
            if point is not None and point not in POINTS:
                raise InputError(f"{source}: entry {n} {raw!r}: unknown scheduling point {point!r}")
            if index in seen:
                raise InputError(f"{source}: entry {n} {raw!r}: decision {index} given twice")
            seen.add(index)
            action = YIELD if m[4] == "y" else int(m[4][1:])
            _check_action(action, f"{source}: entry {n} {raw!r}")
            out.append(Choice(index, int(m[3]) if m[3] is not None else None, point, action))
        return cls(tuple(out))

    # --- JSON --------------------------------------------------------------------
    def to_json(self) -> list[list[Any]]:
        """A JSON-able list of ``[index, pid, point, action]``."""
        return [[c.index, c.pid, c.point, c.action] for c in self.choices]

    @classmethod
    def from_json(cls, data: Any, source: str = "schedule") -> "Schedule":
        """From :meth:`to_json`'s list (or a JSON text of it, or the compact text form)."""
        from .sched import POINTS
        if isinstance(data, str):
            stripped = data.strip()
            if not stripped.startswith("["):
                return cls.loads(stripped, source)
            try:
                data = json.loads(stripped)
            except ValueError as e:
                raise InputError(f"{source}: not JSON: {e}") from e
        if not isinstance(data, list):
            raise InputError(f"{source}: expected a list of [index, pid, point, action]")
        out: list[Choice] = []
        seen: set[int] = set()
        for n, item in enumerate(data):
            where = f"{source}[{n}]"
            if not isinstance(item, list) or len(item) != 4:
                raise InputError(f"{where}: expected [index, pid, point, action]")
            index, pid, point, action = item
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise InputError(f"{where}: index must be a non-negative integer")
            if index in seen:
                raise InputError(f"{where}: decision {index} given twice")
            seen.add(index)
            if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
                raise InputError(f"{where}: pid must be an integer or null")
            if point is not None and point not in POINTS:
                raise InputError(f"{where}: unknown scheduling point {point!r}")
            out.append(Choice(index, pid, point, _check_action(action, where)))
        return cls(tuple(out))

    def without_anchors(self) -> "Schedule":
        """The same choices as lenient entries (index and action only)."""
        return Schedule(tuple(Choice(c.index, None, None, c.action) for c in self.choices))


# --- schedulers ----------------------------------------------------------------------------


class Scheduler:
    """Decides, at each decision point, whether the asking actor goes on (0) or is held
    back (-1 yield, k > 0 jiffies).  Must be deterministic given its construction."""

    name = "base"

    def bind(self, sched: "Sched") -> None:
        """Called once before the run starts (a scheduler may look at, never change, it)."""

    def decide(self, index: int, pid: int, point: str) -> int:
        return 0

    def finish(self, decisions: int) -> None:
        """Called after the run ended normally, having passed ``decisions`` decision points."""


class NoneScheduler(Scheduler):
    """The plain model: never departs from the default."""

    name = "none"


class RandomScheduler(Scheduler):
    """Perturb each decision with probability ``p`` (or ``rates[point]``), drawing the
    action from ``menu``; its own :class:`random.Random`, seeded, so a seed gives one
    schedule.  ``points`` restricts perturbations to those scheduling points."""

    name = "random"

    def __init__(self, seed: int, *, p: float = 0.002, menu: Iterable[int] | None = None,
                 hz: int = 250, rates: dict[str, float] | None = None,
                 points: Iterable[str] | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise InputError(f"random scheduler: p must be within 0..1, not {p}")
        self.rng = random.Random(seed)
        self.p = p
        self.menu = tuple(menu) if menu is not None else default_menu(hz)
        for a in self.menu:
            _check_action(a, "random scheduler menu")
        self.rates = dict(rates) if rates else None
        self.points = frozenset(points) if points is not None else None

    def decide(self, index: int, pid: int, point: str) -> int:
        if self.points is not None and point not in self.points:
            return 0
        p = self.rates.get(point, self.p) if self.rates is not None else self.p
        if self.rng.random() < p:
            return self.rng.choice(self.menu)
        return 0


class PCTScheduler(Scheduler):
    """PCT translated to holds (see the module docstring for what is and is not kept)."""

    name = "pct"

    def __init__(self, seed: int, *, k: int, depth: int = 3, n: int | None = None,
                 starve: int | None = None, hz: int = 250) -> None:
        if depth < 1:
            raise InputError(f"pct scheduler: depth must be at least 1, not {depth}")
        if k < 1:
            raise InputError(f"pct scheduler: k must be at least 1, not {k}")
        self.rng = random.Random(seed)
        self.depth = depth
        self.k = k
        self.n = n  # informational: priorities are drawn as actors appear
        self.starve = hz if starve is None else starve
        picks = self.rng.sample(range(k), min(depth - 1, k))
        # the i-th change point (1-based, in drawing order) lowers to priority i
        self.change_at = {idx: i + 1 for i, idx in enumerate(picks)}
        self.prio: dict[int, float] = {}
        self.left: dict[int, int] = {}  # lowered pid -> jiffies it may still be held
        self.sched: Sched | None = None

    def bind(self, sched: "Sched") -> None:
        self.sched = sched

    def _priority(self, pid: int) -> float:
        p = self.prio.get(pid)
        if p is None:  # distinct with probability 1: a random permutation of d..d+n-1
            p = self.prio[pid] = self.depth + self.rng.random()
        return p

    def decide(self, index: int, pid: int, point: str) -> int:
        mine = self._priority(pid)
        lowered = self.change_at.get(index)
        if lowered is not None:
            mine = self.prio[pid] = lowered
            self.left[pid] = self.starve
            # in virtual time the actors that run ahead of a lowered one include those
            # asleep on a timer: hold it ``starve`` jiffies at once, while anyone else
            # has a higher priority
            if any(p > mine for q, p in self.prio.items() if q != pid):
                return self.starve
        if mine >= self.depth or self.left.get(pid, 0) <= 0 or self.sched is None:
            return 0
        for cpu in self.sched.cpus:
            others = [cpu.curr] if cpu.curr is not None else []
            others += [t for t, _ in cpu.rq]
            for t in others:
                if t.pid != pid and self._priority(t.pid) > mine:
                    self.left[pid] -= 1
                    return 1
        return 0


class ReplayScheduler(Scheduler):
    """Replay a :class:`Schedule` by decision index.

    Entries that name a pid and point are checked: the run must be at that pid and point
    at that index, or :class:`ScheduleDivergence` says where it went another way.
    Lenient entries (index and action only) are applied without a check.  With
    ``strict`` (the default) a run that ends before using every entry diverges too.
    """

    name = "replay"

    def __init__(self, schedule: Schedule, *, strict: bool = True) -> None:
        self.schedule = schedule
        self.by_index = {c.index: c for c in schedule.choices}
        self.strict = strict
        self.used = 0

    def decide(self, index: int, pid: int, point: str) -> int:
        c = self.by_index.get(index)
        if c is None:
            return 0
        if (c.pid is not None and c.pid != pid) or (c.point is not None and c.point != point):
            raise ScheduleDivergence(f"choice #{index}: schedule says pid {c.pid} at {c.point}, "
                                     f"the run is at pid {pid} at {point}")
        self.used += 1
        return c.action

    def finish(self, decisions: int) -> None:
        if self.strict and self.used < len(self.by_index):
            missed = next(c for c in self.schedule.choices if c.index >= decisions)
            raise ScheduleDivergence(f"choice #{missed.index}: schedule says pid {missed.pid} at "
                                     f"{missed.point}, the run ended after {decisions} decision points")


class AnchoredScheduler(Scheduler):
    """Replay choices keyed by (pid, point, n-th time that pid reached that point) rather
    than by global index: used while shrinking, where dropping one choice shifts the
    indices of every later decision but mostly not the later choices' meaning."""

    name = "anchored"

    def __init__(self, anchors: Iterable[tuple[int, str, int, int]]) -> None:
        self.actions = {(pid, point, occ): action for pid, point, occ, action in anchors}
        self.seen: dict[tuple[int, str], int] = {}
        self.applied: list[tuple[int, str, int, int]] = []  # the anchors the run reached

    def decide(self, index: int, pid: int, point: str) -> int:
        key = (pid, point)
        occ = self.seen.get(key, 0)
        self.seen[key] = occ + 1
        action = self.actions.get((pid, point, occ), 0)
        if action:
            self.applied.append((pid, point, occ, action))
        return action


class Anchoring(Scheduler):
    """Wrap a scheduler and note each non-default choice's anchor (pid, point, n-th)."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.name = inner.name
        self.seen: dict[tuple[int, str], int] = {}
        self.anchors: list[tuple[int, str, int, int]] = []

    def bind(self, sched: "Sched") -> None:
        self.inner.bind(sched)

    def decide(self, index: int, pid: int, point: str) -> int:
        key = (pid, point)
        occ = self.seen.get(key, 0)
        self.seen[key] = occ + 1
        action = self.inner.decide(index, pid, point)
        if action:
            self.anchors.append((pid, point, occ, action))
        return action

    def finish(self, decisions: int) -> None:
        self.inner.finish(decisions)


class HypothesisScheduler(ReplayScheduler):
    """Choices drawn from Hypothesis data.

    Drawing at every decision point would overrun Hypothesis' buffer (runs pass 10^4 to
    10^5 decision points) and shrink poorly, so the perturbations are drawn up front as a
    sparse list of (index in [0, k), action from the menu) and replayed leniently.  The
    list shrinks towards fewer and smaller holds at earlier points.
    """

    name = "hypothesis"

    def __init__(self, data: Any, *, k: int, max_choices: int = 8, menu: Iterable[int] | None = None,
                 hz: int = 250) -> None:
        schedule = data.draw(sparse_schedules(k=k, max_choices=max_choices, menu=menu, hz=hz),
                             label="schedule")
        super().__init__(schedule, strict=False)


def sparse_schedules(*, k: int, max_choices: int = 8, menu: Iterable[int] | None = None,
                     hz: int = 250) -> Any:
    """A Hypothesis strategy of lenient schedules: up to ``max_choices`` perturbations at
    distinct indices in [0, k), each an action of ``menu``."""
    from hypothesis import strategies as st
    actions = tuple(menu) if menu is not None else default_menu(hz)
    entries = st.lists(st.tuples(st.integers(0, max(0, k - 1)), st.sampled_from(actions)),
                       max_size=max_choices, unique_by=lambda e: e[0])
    return entries.map(lambda es: Schedule(tuple(Choice(i, None, None, a) for i, a in es)))


def make_scheduler(name: str, *, seed: int = 0, **opts: Any) -> Scheduler:
    """A scheduler by name: ``none``; ``random`` (``p``, ``menu``, ``rates``, ``points``,
    ``hz``); ``pct`` (``k`` required, ``depth``, ``n``, ``starve``, ``hz``); ``replay``
    (``schedule`` required, ``strict``).  ``hypothesis`` needs Hypothesis data: build a
    :class:`HypothesisScheduler` directly."""
    if name == "none":
        return NoneScheduler()
    if name == "random":
        return RandomScheduler(seed, **opts)
    if name == "pct":
        if "k" not in opts:
            raise InputError("pct scheduler: k (decision points of an unperturbed run) is needed")
        return PCTScheduler(seed, **opts)
    if name == "replay":
        schedule = opts.pop("schedule", None)
        if schedule is None:
            raise InputError("replay scheduler: a schedule is needed")
        if not isinstance(schedule, Schedule):
            schedule = Schedule.from_json(schedule)
        return ReplayScheduler(schedule, **opts)
    if name == "hypothesis":
        raise InputError("hypothesis scheduler: build HypothesisScheduler(data, k=...) inside a "
                         "Hypothesis test, or use `oomactors explore --scheduler hypothesis`")
    raise InputError(f"unknown scheduler {name!r} (known: {', '.join(SCHEDULERS)})")


__all__ = ["YIELD", "Choice", "Schedule", "Scheduler", "ScheduleDivergence", "NoneScheduler",
           "RandomScheduler", "PCTScheduler", "ReplayScheduler", "AnchoredScheduler",
           "HypothesisScheduler", "sparse_schedules", "make_scheduler", "default_menu"]
