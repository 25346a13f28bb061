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

The schedule format (:class:`Schedule`, :class:`Choice`) lives in :mod:`oomactors.choices`.

**Choosing who runs.**  The actors ready at one instant form a batch that the stepper
(:mod:`oomactors.stepper`) runs in the seed's order.  A scheduler with ``picks`` set is
also told, at each decision point, which actors could run now (``offered``: the asker
first, then the rest of the batch in order, then those made ready since), and may answer
:func:`pick` (actor N runs first): the asker waits at the point while N runs until it
parks (at its own decision points the default is again to go on), then goes on.  Actors are numbered in spawn order.  A
pick is recorded as ``INDEX:POINT@PID=>N``; a replay checks that N is offered there and
otherwise names the choice, the actor expected and the actors offered.  A lenient entry
``INDEX=~J`` (drawn by Hypothesis) runs the J-th other actor offered, cyclically.

**PCT** (Burckhardt et al., ASPLOS 2010) on that surface (:class:`PCTScheduler`): the n
actors of an unperturbed run get random distinct priorities d..d+n-1, d-1 change points
are drawn among the k decision points of that run, the asker at the i-th one drops to
priority i, and at every decision point the highest-priority actor offered runs.  A bug
of depth d -- d ordering constraints between steps, a step running from one decision
point or wakeup to the next -- is found with probability at least 1/(n·k^(d-1)) per run.
What PCT does not control is what is not a choice here: virtual time (an actor asleep
until a later jiffy is not enabled) and the steps an actor takes after a wakeup before
its next decision point.  Holds remain for the random and Hypothesis searches.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, Iterable

from .choices import (YIELD, Choice, Schedule, ScheduleDivergence, _check_action, default_menu,
                      pick, picked)
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .sched import Sched

SCHEDULERS = ("none", "random", "pct", "replay", "hypothesis")


# --- schedulers ----------------------------------------------------------------------------


class Scheduler:
    """Decides, at each decision point, whether the asking actor goes on (0), is held
    back (-1 yield, k > 0 jiffies) or lets another actor run first (:func:`pick`).
    Must be deterministic given its construction.

    A scheduler with ``picks`` set is asked through :meth:`choose`, with the actors
    offered at this instant (actor numbers: the asker's first); otherwise through
    :meth:`decide`, and the run keeps the plain stepper loop."""

    name = "base"
    picks = False

    def bind(self, sched: "Sched") -> None:
        """Called once before the run starts (a scheduler may look at, never change, it)."""

    def decide(self, index: int, pid: int, point: str) -> int:
        return 0

    def choose(self, index: int, pid: int, point: str, offered: list[int]) -> int:
        """``decide``, knowing the actors that could run now (``offered[0]`` is the asker)."""
        return self.decide(index, pid, point)

    def finish(self, decisions: int) -> None:
        """Called after the run ended normally, having passed ``decisions`` decision points."""


class NoneScheduler(Scheduler):
    """The plain model: never departs from the default."""

    name = "none"


class RandomScheduler(Scheduler):
    """Perturb each decision with probability ``p`` (or ``rates[point]``): with
    probability ``switch``, when other actors could run now, one of them (uniformly) runs
    first; otherwise an action drawn from ``menu``.  Its own :class:`random.Random`,
    seeded, so a seed gives one schedule.  ``points`` restricts perturbations to those
    scheduling points."""

    name = "random"

    def __init__(self, seed: int, *, p: float = 0.002, menu: Iterable[int] | None = None,
                 hz: int = 250, rates: dict[str, float] | None = None,
                 points: Iterable[str] | None = None, switch: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise InputError(f"random scheduler: p must be within 0..1, not {p}")
        if not 0.0 <= switch <= 1.0:
            raise InputError(f"random scheduler: switch must be within 0..1, not {switch}")
        self.rng = random.Random(seed)
        self.p = p
        self.menu = tuple(menu) if menu is not None else default_menu(hz)
        for a in self.menu:
            _check_action(a, "random scheduler menu")
        self.rates = dict(rates) if rates else None
        self.points = frozenset(points) if points is not None else None
        self.switch = switch
        self.picks = switch > 0

    def choose(self, index: int, pid: int, point: str, offered: list[int]) -> int:
        if self.points is not None and point not in self.points:
            return 0
        p = self.rates.get(point, self.p) if self.rates is not None else self.p
        if self.rng.random() < p:
            if len(offered) > 1 and self.rng.random() < self.switch:
                return pick(self.rng.choice(offered[1:]))
            return self.rng.choice(self.menu)
        return 0

    def decide(self, index: int, pid: int, point: str) -> int:
        return self.choose(index, pid, point, [])


def pct_log10_bound(n: int, k: int, depth: int) -> float:
    """log10 of PCT's bound 1/(n*k^(d-1)), computed in log space: k^(d-1) overflows a float
    (and takes long as an integer) for the depths a user may type."""
    return -(math.log10(n) + (depth - 1) * math.log10(k))


def pct_float_bound(n: int, k: int, depth: int) -> float:
    """The bound as a float (exactly 1/(n*k^(d-1)) as floats divide), 0.0 when it is below
    what a float holds (the power is then never computed)."""
    return 1.0 / (n * k ** (depth - 1)) if pct_log10_bound(n, k, depth) > -300 else 0.0


def pct_bound(n: int, k: int, depth: int) -> dict[str, Any]:
    """PCT's guarantee for a search: a bug of depth d is found by one run with probability
    at least 1/(n*k^(d-1)) (Burckhardt et al., ASPLOS 2010, theorem 9).  Computed in log
    space: ``log10_bound`` always holds it, ``bound`` is 0.0 when it underflows a float."""
    x = pct_log10_bound(n, k, depth)
    return {"n": n, "k": k, "d": depth, "bound": pct_float_bound(n, k, depth), "log10_bound": round(x, 6)}


def bound_text(pct: dict[str, Any]) -> str:
    """The bound as a number, or as a power of ten when it is below what a float holds."""
    return f"{pct['bound']:.3g}" if pct["bound"] > 0 else f"10^{pct['log10_bound']:.1f}"


class PCTScheduler(Scheduler):
    """PCT (Burckhardt et al., ASPLOS 2010) over the actors' choice surface.

    The actors get random distinct priorities d..d+n-1 (actor numbers 0..n-1, n from an
    unperturbed run; an actor beyond n gets a random non-integer priority in that range);
    d-1 change points are drawn without repetition from the decision indices [0, k); at
    the i-th one (i = 1..d-1, in drawing order) the asking actor's priority drops to i.  At
    every decision point the highest-priority actor offered runs next.  The bound of the
    paper, 1/(n*k^(d-1)) per run, is :attr:`bound`."""

    name = "pct"
    picks = True

    def __init__(self, seed: int, *, k: int, depth: int = 3, n: int = 1, hz: int = 250) -> None:
        if depth < 1:
            raise InputError(f"pct scheduler: depth must be at least 1, not {depth}")
        if k < 1:
            raise InputError(f"pct scheduler: k must be at least 1, not {k}")
        if n is None or n < 1:
            raise InputError(f"pct scheduler: n (actors) must be at least 1, not {n}")
        self.rng = random.Random(seed)
        self.depth = depth
        self.k = k
        self.n = n
        ranks = list(range(depth, depth + n))
        self.rng.shuffle(ranks)
        self.initial: dict[int, float] = dict(enumerate(ranks))   # actor -> initial priority
        self.prio: dict[int, float] = dict(self.initial)
        picks = self.rng.sample(range(k), min(depth - 1, k))
        self.change_at = {idx: i + 1 for i, idx in enumerate(picks)}  # index -> new priority

    @property
    def bound(self) -> float:
        """The paper's lower bound on finding a bug of depth d in one run (0.0 when it is
        below what a float holds: :func:`pct_log10_bound` has it)."""
        return pct_float_bound(self.n, self.k, self.depth)

    def _priority(self, actor: int) -> float:
        p = self.prio.get(actor)
        if p is None:  # more actors than the unperturbed run had
            p = self.prio[actor] = self.depth + self.rng.random() * self.n
        return p

    def choose(self, index: int, pid: int, point: str, offered: list[int]) -> int:
        if not offered:
            return 0
        lowered = self.change_at.get(index)
        if lowered is not None:
            self.prio[offered[0]] = lowered
        best = max(offered, key=self._priority)
        return 0 if best == offered[0] else pick(best)


class ReplayScheduler(Scheduler):
    """Replay a :class:`Schedule` by decision index.

    Entries that name a pid and point are checked: the run must be at that pid and point
    at that index (and a pick's actor must be among those offered), or
    :class:`ScheduleDivergence` says where it went another way.  Lenient entries (index
    and action only) are applied without a check; a lenient pick ``~J`` runs the J-th of
    the other actors offered (cyclically), and nothing when the asker is alone.  With
    ``strict`` (the default) a run that ends before using every entry diverges too.
    """

    name = "replay"

    def __init__(self, schedule: Schedule, *, strict: bool = True) -> None:
        self.schedule = schedule
        self.by_index = {c.index: c for c in schedule.choices}
        self.strict = strict
        self.used = 0
        self.picks = any(c.action <= -2 for c in schedule.choices)
        self.label: Any = str

    def bind(self, sched: "Sched") -> None:
        self.label = sched.stepper.label

    def choose(self, index: int, pid: int, point: str, offered: list[int]) -> int:
        c = self.by_index.get(index)
        if c is None:
            return 0
        if (c.pid is not None and c.pid != pid) or (c.point is not None and c.point != point):
            raise ScheduleDivergence(f"choice #{index}: schedule says pid {c.pid} at {c.point}"
                                     f"{self._runs(c)}, the run is at pid {pid} at {point}")
        self.used += 1
        target = picked(c.action)
        if target is None:
            return c.action
        others = offered[1:]
        if c.pid is None:  # lenient: the J-th other actor offered
            return pick(others[(target - 1) % len(others)]) if others else 0
        if target not in others:
            names = ", ".join(self.label(a) for a in offered) or "none"
            raise ScheduleDivergence(f"choice #{index}: schedule says pid {pid} at {point}{self._runs(c)}, "
                                     f"the run offers actors {names}")
        return c.action

    def _runs(self, c: Choice) -> str:
        target = picked(c.action)
        if target is None:
            return ""
        return f" lets actor {self.label(target) if c.pid is not None else '~' + str(target)} run first"

    def decide(self, index: int, pid: int, point: str) -> int:
        return self.choose(index, pid, point, [])

    def finish(self, decisions: int) -> None:
        if self.strict and self.used < len(self.by_index):
            missed = next(c for c in self.schedule.choices if c.index >= decisions)
            raise ScheduleDivergence(f"choice #{missed.index}: schedule says pid {missed.pid} at "
                                     f"{missed.point}{self._runs(missed)}, the run ended after "
                                     f"{decisions} decision points")


class AnchoredScheduler(Scheduler):
    """Replay choices keyed by (pid, point, n-th time that pid reached that point) rather
    than by global index: used while shrinking, where dropping one choice shifts the
    indices of every later decision but mostly not the later choices' meaning.  A pick
    whose actor is not offered there is left out."""

    name = "anchored"

    def __init__(self, anchors: Iterable[tuple[int, str, int, int]]) -> None:
        self.actions = {(pid, point, occ): action for pid, point, occ, action in anchors}
        self.seen: dict[tuple[int, str], int] = {}
        self.applied: list[tuple[int, str, int, int]] = []  # the anchors the run reached
        self.picks = any(a <= -2 for a in self.actions.values())

    def choose(self, index: int, pid: int, point: str, offered: list[int]) -> int:
        key = (pid, point)
        occ = self.seen.get(key, 0)
        self.seen[key] = occ + 1
        action = self.actions.get((pid, point, occ), 0)
        if action <= -2 and picked(action) not in offered[1:]:
            return 0
        if action:
            self.applied.append((pid, point, occ, action))
        return action

    def decide(self, index: int, pid: int, point: str) -> int:
        return self.choose(index, pid, point, [])


class Anchoring(Scheduler):
    """Wrap a scheduler and note each non-default choice's anchor (pid, point, n-th)."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.name = inner.name
        self.picks = inner.picks
        self.seen: dict[tuple[int, str], int] = {}
        self.anchors: list[tuple[int, str, int, int]] = []
        # a random scheduler restricted to some points answers 0 elsewhere, drawing
        # nothing: there no choice is made and no anchor needs the occurrence counted
        self.only = inner.points if type(inner) is RandomScheduler else None

    def bind(self, sched: "Sched") -> None:
        self.inner.bind(sched)

    def choose(self, index: int, pid: int, point: str, offered: list[int]) -> int:
        if self.only is not None and point not in self.only:
            return 0
        key = (pid, point)
        occ = self.seen.get(key, 0)
        self.seen[key] = occ + 1
        action = self.inner.choose(index, pid, point, offered)
        if action:
            self.anchors.append((pid, point, occ, action))
        return action

    def decide(self, index: int, pid: int, point: str) -> int:
        if self.only is not None and point not in self.only:
            return 0
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
    distinct indices in [0, k), each an action of ``menu`` or a lenient pick (``~1``,
    ``~2``, ``~3``: the first, second, third other actor offered runs first)."""
    from hypothesis import strategies as st
    actions = (tuple(menu) if menu is not None else default_menu(hz)) + (pick(1), pick(2), pick(3))
    entries = st.lists(st.tuples(st.integers(0, max(0, k - 1)), st.sampled_from(actions)),
                       max_size=max_choices, unique_by=lambda e: e[0])
    return entries.map(lambda es: Schedule(tuple(Choice(i, None, None, a) for i, a in es)))


def make_scheduler(name: str, *, seed: int = 0, **opts: Any) -> Scheduler:
    """A scheduler by name: ``none``; ``random`` (``p``, ``menu``, ``rates``, ``points``,
    ``hz``, ``switch``); ``pct`` (``k`` required, ``depth``, ``n``, ``hz``); ``replay``
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


__all__ = ["YIELD", "pick", "picked", "Choice", "Schedule", "Scheduler", "ScheduleDivergence", "NoneScheduler",
           "RandomScheduler", "PCTScheduler", "ReplayScheduler", "AnchoredScheduler",
           "HypothesisScheduler", "sparse_schedules", "make_scheduler", "default_menu"]
