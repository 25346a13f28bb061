"""Bounded exhaustive search: every schedule with up to N picks, with partial-order reduction.

A schedule here is a set of *picks* (:func:`oomactors.schedule.pick`): at decision point
``index``, one of the other actors offered runs first.  The search is breadth first, by
number of picks: the default run (no pick), then every schedule with one pick, then two,
... up to ``depth``.  Each schedule is extended only by picks at decision points *after*
its last one, taken from its own run (the run agrees with its parent's up to there), so
every schedule of at most ``depth`` picks is generated exactly once.  Holds are not part
of the space (their lengths are unbounded); the seed is the config's own.

**Partial-order reduction.**  An actor *slice* runs from a resumption to the next park,
yield or switch; the stepper runs the slices of one batch in order.  A pick of actor X at
decision j, with X waiting in the current batch, runs X's slice before the rest of the
asker's slice and before the slices the batch would run ahead of X.  If X's slice
commutes with each of those, the pick only reorders independent steps: its run reaches
what the default run reaches, with no more picks, so it is pruned (a sleep-set style
argument, restricted to what is sound under the bound on picks).  Whether two steps
commute is judged from a *footprint* recorded for each stretch of a run
(:class:`Tracker`), conservatively:

* ``*`` (dependent with everything): the stretch emitted any event other than
  ``sched_switch``, or changed the memory state (the zones, nodes, memcgs, every mm, the
  per-CPU lists and counters, vmstat, swap, ``oom_lock`` and its waiters, the reaper's
  list, the pid counters, the machine's random draws);
* ``("cpu", c)``: it changed CPU c (the task on it, its run queue, its previous task, its
  slice) -- and then also ``idle``, since placing a task reads which CPUs are idle -- or
  it began at a decision point of a task on CPU c (the point looks at c's run queue to
  decide on a preemption);
* ``idle``: it changed which CPUs are idle;
* ``ready``: it made another actor ready (the order of wakeups is the next batch's order);
* ``("timer", t)``: it added a sleeper or timer due at jiffy t (sleepers due together are
  woken in the order they were added).

Two stretches are independent when neither is ``*`` and they share no resource.  A
stretch in which the clock advanced is ``*`` too: the last actor to park at an instant
advances the clock and, if its own timer is due then, goes on in the same slice, which
the reordered run would not do.  Picks
of an actor that is in the next batch (made ready since), not the current one, are never
pruned: taking it out reshuffles that batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import interrupt
from .choices import Choice, Schedule, pick
from .schedule import ReplayScheduler, Scheduler

if TYPE_CHECKING:  # pragma: no cover
    from .sched import Sched

ANY = "*"


def _digest(obj: Any) -> tuple:
    """The plain values of ``obj``'s attributes (numbers, strings, lists of numbers; the
    length of other containers): what a step changes when it changes ``obj``."""
    out = []
    for key, v in vars(obj).items():
        if v is None or isinstance(v, (int, float, str)):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.append(tuple(x if isinstance(x, (int, float, str)) or x is None else id(x) for x in v))
        elif isinstance(v, (dict, set, frozenset)) or hasattr(v, "__len__"):
            out.append((key, len(v)))
    return tuple(out)


def memory_state(m: Any) -> int:
    """A hash of the machine's shared state (everything but the actors' own tasks and the
    scheduler's queues, which footprints track by name)."""
    parts: list[Any] = [tuple(m.vmstat.values()), m.swap_free, m.oom_victims, m.oom_lock_holders,
                        id(m.oom_lock_owner), len(m.oom_lock_waiters), len(m.oom_reaper_list), m.next_pid,
                        len(m.tasks), m.nr_threads, m.user_procs_alive, m.panicked, m.finished]
    parts += [_digest(z) for z in m.zones]
    parts += [_digest(n) for n in m.nodes]
    parts += [(tuple(c.pcp), tuple(c.vm_diff)) for c in m.sched.cpus]
    parts += [_digest(mm) for mm in sorted(m.mms, key=lambda mm: mm.id)]
    memcgs = m.memcgs.values() if isinstance(m.memcgs, dict) else m.memcgs
    parts += [_digest(g) for g in (m.root_mem_cgroup, *memcgs) if g is not None]
    rng = getattr(m, "rng", None)
    if rng is not None and hasattr(rng, "getstate"):
        parts.append(hash(rng.getstate()))
    return hash(tuple(parts))


def independent(a: frozenset, b: frozenset) -> bool:
    return ANY not in a and ANY not in b and not (a & b)


@dataclass
class Offer:
    """A decision point with company: where a pick can be made."""

    index: int
    pid: int
    point: str
    offered: list[int]
    pending: int          # offered[1:1+pending] wait in the current batch
    segment: int          # the stretch of the asker's slice that starts here
    slice: int            # that slice's number


class Tracker(Scheduler):
    """Replays ``schedule`` strictly and, after its last pick, notes every decision point
    that offers a choice and (with ``footprints``) what each stretch of the run touched."""

    name = "exhaustive"
    picks = True

    def __init__(self, schedule: Schedule, *, footprints: bool = True) -> None:
        self.replay = ReplayScheduler(schedule, strict=True)
        self.after = max((c.index for c in schedule.choices), default=-1)
        self.footprints = footprints
        self.offers: list[Offer] = []
        self.segs: list[frozenset] = []       # footprint of each stretch
        self.slices: list[tuple[int, int, int]] = []  # (actor, first stretch, last stretch)
        self.on = False
        self.m: Any = None
        self.sched: Any = None
        self._open: tuple | None = None       # (memory state, CPU state, other events, ready, seq, now)
        self._events = [0, 0]                 # sched_switch, other events seen so far
        self._reads: int | None = None        # the CPU whose run queue the open stretch looked at

    def bind(self, sched: "Sched") -> None:
        self.replay.bind(sched)
        self.sched = sched
        self.m = getattr(sched.emit, "__self__", None)  # the machine (Sched.emit is its emit_on)
        sched.stepper.observe = self._observe
        if self.m is not None:
            from .events import EVENT_ID
            switch = EVENT_ID["sched:sched_switch"]
            counts = self._events

            def seen(rec: tuple) -> None:
                counts[rec[1] != switch] += 1
            self.m.sinks.append(seen)

    # --- stretches ----------------------------------------------------------------------
    def _cpus(self) -> tuple:
        sched = self.sched
        return (tuple((c.curr.pid if c.curr is not None else None, c.prev.pid if c.prev is not None else None,
                       tuple(t.pid for t, _ in c.rq), c.slice_end) for c in sched.cpus),
                sched.idle_mask)  # the idle CPUs, a bit each

    def _state(self) -> tuple:
        clock = self.sched.clock
        mem = memory_state(self.m) if self.footprints and self.m is not None else 0
        cpus = self._cpus() if self.footprints else None
        return (mem, cpus, self._events[1], len(self.sched.stepper.ready), clock._seq, clock.now)

    def _begin(self, cpu: int | None = None) -> None:
        self._open = self._state()
        self._reads = cpu

    def _end(self) -> None:
        if self._open is None:
            return
        mem, cpus, others, ready, seq, now_was = self._open
        self._open = None
        if not self.footprints:
            self.segs.append(frozenset((ANY,)))
            return
        clock = self.sched.clock
        fp: set[Any] = set()
        if (others != self._events[1] or now_was != clock.now
                or (self.m is not None and mem != memory_state(self.m))):
            fp.add(ANY)
        if self._reads is not None:
            fp.add(("cpu", self._reads))
        now = self._cpus()
        for c, (before, after) in enumerate(zip(cpus[0], now[0])):
            if before != after:
                fp.update((("cpu", c), "idle"))
        if cpus[1] != now[1]:
            fp.add("idle")
        if len(self.sched.stepper.ready) > ready:
            fp.add("ready")
        if clock._seq != seq:
            fp.update(("timer", d) for d in clock.timers_since(seq))
        self.segs.append(frozenset(fp))

    def _observe(self, actor: int, what: str) -> None:
        """The stepper: ``actor``'s slice starts ("start") or ends (park, yield, switch, exit)."""
        if not self.on:
            return
        if what == "start":
            self.slices.append((actor, len(self.segs), len(self.segs)))
            self._begin()
        else:
            self._end()
            a, first, _ = self.slices[-1]
            self.slices[-1] = (a, first, len(self.segs) - 1)

    # --- decisions ------------------------------------------------------------------------
    def choose(self, index: int, pid: int, point: str, offered: list[int]) -> int:
        if index <= self.after:
            return self.replay.choose(index, pid, point, offered)
        stepper = self.sched.stepper
        if not self.on:  # from here on, the run is the default: note its stretches
            self.on = True
            self.slices.append((offered[0], 0, 0))
        else:
            self._end()
        if len(offered) > 1:
            self.offers.append(Offer(index, pid, point, list(offered), len(stepper.pending),
                                     len(self.segs), len(self.slices) - 1))
        task = self.m.tasks.get(pid) if self.m is not None else None
        cpu = getattr(task, "cpu", None)
        self._begin(cpu.id if cpu is not None else None)
        return 0

    def finish(self, decisions: int) -> None:
        self.replay.finish(decisions)

    # --- the search's use --------------------------------------------------------------
    def _slice_fp(self, n: int, start: int | None = None) -> frozenset | None:
        if n >= len(self.slices):
            return None
        _, first, last = self.slices[n]
        segs = self.segs[first if start is None else start:last + 1]
        if not segs:
            return None
        return frozenset().union(*segs)

    def redundant(self, offer: Offer, target: int) -> bool:
        """Does picking ``target`` there only reorder independent steps of the default run?"""
        if target not in offer.offered[1:1 + offer.pending]:
            return False
        mine = self._slice_fp(offer.slice, offer.segment)
        if mine is None:
            return False
        before = [mine]
        for n in range(offer.slice + 1, len(self.slices)):
            fp = self._slice_fp(n)
            if fp is None:
                return False
            if self.slices[n][0] == target:
                return all(independent(fp, b) for b in before)
            before.append(fp)
        return False

    def children(self, schedule: Schedule, por: bool) -> tuple[list[Schedule], int]:
        """The schedules one pick longer than ``schedule`` (picks after its last one), and
        how many of them the reduction pruned."""
        out: list[Schedule] = []
        pruned = 0
        for offer in self.offers:
            for target in offer.offered[1:]:
                if por and self.redundant(offer, target):
                    pruned += 1
                    continue
                out.append(Schedule(schedule.choices + (Choice(offer.index, offer.pid, offer.point,
                                                               pick(target)),)))
        return out, pruned


__all__ = ["Tracker", "Offer", "independent", "memory_state"]


# --- the search ---------------------------------------------------------------------------


@dataclass
class Expanded:
    """What one run of the search sends back (from a worker, or this process)."""

    invariant: str | None
    coverage: dict[str, Any] | None
    children: list[Schedule]
    pruned: int
    decisions: int
    actors: int


def expand(unit: tuple) -> Expanded:
    """Run ``schedule`` (strictly) and, if ``grow``, list the schedules one pick longer."""
    from .repro import checked_run
    cfg, checks, policy, fixes, seed, schedule, grow, por = unit
    tracker = Tracker(schedule, footprints=grow and por)
    out = checked_run(cfg, seed=seed, checks=checks, scheduler=tracker, policy=policy, fixes=fixes)
    children, pruned = tracker.children(schedule, por) if grow and out.violation is None else ([], 0)
    return Expanded(out.invariant, out.coverage, children, pruned, out.decisions,
                    out.machine.sched.stepper.spawned)


@dataclass
class SearchStats:
    depth: int
    por: bool
    runs: int = 0               # schedules run
    pruned: int = 0             # schedules the reduction left out (never run)
    exhausted: bool = False     # every schedule of at most ``depth`` picks was run (or pruned)
    cut: bool = False           # the run budget ended the search first
    per_depth: list[int] | None = None   # schedules run with 0, 1, 2, ... picks
    decisions: int = 0          # k of the default run
    actors: int = 0             # n of the default run

    def as_json(self) -> dict[str, Any]:
        return {"depth": self.depth, "por": self.por, "runs": self.runs, "pruned": self.pruned,
                "exhausted": self.exhausted, "cut_by_budget": self.cut, "per_depth": self.per_depth or []}


def search(ctx: Any, seed: int, depth: int, por: bool) -> tuple[Schedule | None, SearchStats]:
    """Breadth first over schedules of 0..``depth`` picks, within ``ctx.budget`` runs
    (``ctx``: explore's run context, which counts the runs and their coverage).  Runs are
    evaluated ``ctx.width`` at a time and taken in order, so the result does not depend on
    where they ran.  Returns the first violating schedule (None) and the counts."""
    stats = SearchStats(depth, por, per_depth=[])
    level = [Schedule()]
    found: Schedule | None = None
    for d in range(depth + 1):
        nxt: list[Schedule] = []
        stats.per_depth.append(0)
        for start in range(0, len(level), ctx.width):
            room = ctx.budget - ctx.runs
            if room <= 0:
                stats.cut = True
                break
            batch = level[start:start + min(ctx.width, room)]
            units = [(ctx.cfg, ctx.checks, ctx.policy, ctx.fixes, seed, s, d < depth, por) for s in batch]
            results = ctx.sweep.map(expand, units) if ctx.width > 1 else [expand(u) for u in units]
            interrupt.check()  # Ctrl-C ended a run: it says nothing about the schedule
            for schedule, res in zip(batch, results):
                ctx.count(res.invariant is not None, False, res.coverage)
                stats.runs += 1
                stats.per_depth[-1] += 1
                if not schedule:
                    stats.decisions, stats.actors = res.decisions, res.actors
                if res.invariant is not None:
                    found = schedule
                    break
                # no more than the budget could ever run (a deep search stays in memory)
                nxt.extend(res.children[:max(0, ctx.budget - len(nxt))])
                stats.pruned += res.pruned
            if found is not None:
                break
            # the budget is spent: a cut if any schedule is left unrun (checked here, not only
            # at a batch start, since a last batch that exactly fills the budget, or one that
            # the budget shortened, leaves no next batch to notice it)
            if ctx.runs >= ctx.budget and (start + len(batch) < len(level) or nxt):
                stats.cut = True
                break
        if found is not None or stats.cut:
            break
        level = nxt
        if not level:
            break
    stats.exhausted = found is None and not stats.cut
    return found, stats


def per_depth_text(per_depth: list[int]) -> str:
    """The exhaustive search's runs per number of picks: "1 with no pick, 29 with 1 pick"."""
    return ", ".join(f"{n} with {'no pick' if d == 0 else f'{d} pick' + ('s' if d > 1 else '')}"
                     for d, n in enumerate(per_depth))


__all__ += ["Expanded", "SearchStats", "expand", "per_depth_text", "search"]
