"""Search schedules for an invariant violation, shrink it, and write a reproducer.

:func:`explore` runs one config many times, each run under a different controlled
schedule (:mod:`oomactors.schedule`) and, unless ``vary_seed=False``, a different seed,
with the named invariant checkers (:data:`oomactors.invariants.INVARIANTS`) watching
every event.  The first run is always the unperturbed one: it may find the violation by
itself, and it measures k, the number of decision points a run passes (PCT's change
points and the Hypothesis strategy draw indices below k), and how often each scheduling
point is reached.

Search strategies:

* ``random`` -- swarm-style: each run perturbs a random subset of the scheduling points
  the first run reached, with a random intensity (1 to 16 expected perturbations per run,
  spread evenly over the chosen points, so rare points such as ``may_oom.locked`` get as
  much attention as ``fault.cpu``), drawing actions from yield, 1, 2, 5 and HZ/10
  jiffies;
* ``pct`` -- :class:`oomactors.schedule.PCTScheduler` with depth ``depth``, the k above
  and n, the actors of the first run; the result states the paper's bound 1/(n*k^(d-1));
* ``exhaustive`` -- every schedule of at most ``depth`` picks, breadth first, with a
  partial-order reduction (:mod:`oomactors.exhaustive`); the first violation is not
  shrunk (no schedule of fewer picks had one);
* ``hypothesis`` -- :func:`hypothesis.find` over a sparse schedule (a few (index, action)
  perturbations with indices below k) and a seed offset; Hypothesis' shrinker gives the
  minimal schedule.

Shrinking (random and pct): the seed alone is tried first; then the choices are
delta-debugged (ddmin: keep one chunk or drop one, halves, quarters, ... down to single
choices) and each hold is made as small as it can be (a yield if that will do, else a
binary search for the shortest hold that still fails), keeping the *same* invariant
violated.  While shrinking, choices are replayed by anchor -- (pid, point, n-th time that
pid reached that point) -- rather than by index, since dropping one choice shifts the
index of every later decision.  The result is recorded from the last failing run, so
``oomactors run --replay`` replays it strictly by index, byte for byte.

Reproducer files and replays live in :mod:`oomactors.repro` (re-exported here).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import interrupt
from .config import SEED_MAX, Config
from .coverage import Coverage
from .errors import InputError, OomactorsError
from .repro import (EVENTS_KEPT, FORMAT, Outcome, Repro, check_names, checked_run, event_lines,
                    load_repro, make_repro, policy_spec, replay_repro, reproduce_command,
                    write_repro)
from .schedule import (AnchoredScheduler, Anchoring, PCTScheduler, RandomScheduler,
                       ReplayScheduler, Schedule, Scheduler, bound_text, pct_bound, sparse_schedules)

SEARCHES = ("random", "pct", "hypothesis", "exhaustive")

Progress = Callable[[int, int, int, str], None]  # (runs done, runs planned, violations, phase)

__all__ = ["EVENTS_KEPT", "FORMAT", "SEARCHES", "ExploreResult", "Outcome", "Repro", "Violation",
           "bound_text", "pct_bound", "check_names", "checked_run", "event_lines", "explore", "load_repro", "make_repro",
           "policy_spec", "replay_repro", "reproduce_command", "write_repro"]


# --- results ----------------------------------------------------------------------------------


@dataclass
class Violation:
    invariant: str
    message: str
    seed: int
    t: int | None          # jiffies of the event after which it was found
    found_at: int          # the search run (1-based) that found it


@dataclass
class ExploreResult:
    runs: int                          # search runs (the unperturbed first run included)
    violation: Violation | None
    schedule: Schedule | None          # the shrunk schedule (None: nothing found)
    seconds: float                     # wall time of the search and the shrinking
    repro: dict[str, Any] | None
    found_schedule: Schedule | None = None  # the schedule as found, before shrinking
    shrink_runs: int = 0
    decisions: int = 0                 # k: decision points of the unperturbed run
    scheduler: str = "random"
    checks: list[str] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)  # over the search runs
    vacuous: dict[str, tuple[str, ...]] = field(default_factory=dict)  # invariant -> guarded branches
    actors: int = 0                    # n: actors of the unperturbed run
    pct: dict[str, Any] | None = None  # PCT's n, k, d and its per-run bound (pct searches)
    exhaustive: dict[str, Any] | None = None  # schedules run and pruned, exhausted (exhaustive)

    def as_json(self, repro_path: str | None = None) -> dict[str, Any]:
        result = None
        if self.violation is not None:
            v = self.violation
            result = {"invariant": v.invariant, "message": v.message, "seed": v.seed,
                      "t": v.t, "found_at_run": v.found_at, "shrink_runs": self.shrink_runs,
                      "schedule": self.schedule.dumps() if self.schedule is not None else "",
                      "choices": len(self.schedule or ()),
                      "found_choices": len(self.found_schedule or ()),
                      "repro": repro_path,
                      "reproduce": reproduce_command(repro_path) if repro_path else None}
        out = {"runs": self.runs, "seconds": round(self.seconds, 3), "scheduler": self.scheduler,
               "checks": self.checks, "decisions": self.decisions, "actors": self.actors, "result": result,
               "coverage": self.coverage, "vacuous": {k: list(v) for k, v in self.vacuous.items()}}
        if self.pct is not None:
            out["pct"] = self.pct
        if self.exhaustive is not None:
            out["exhaustive"] = self.exhaustive
        return out


# --- the search -----------------------------------------------------------------------------


class _Census(Scheduler):
    """The default schedule, counting how often each point is asked about."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}

    def decide(self, index: int, pid: int, point: str) -> int:
        self.hits[point] = self.hits.get(point, 0) + 1
        return 0


def _swarm(rng: random.Random, hits: dict[str, int], hz: int) -> RandomScheduler:
    """A random scheduler over a random subset of the points, at a random intensity."""
    seen = sorted(p for p, h in hits.items() if h)
    chosen = [p for p in seen if rng.random() < 0.5] or [rng.choice(seen)]
    target = rng.choice((1, 2, 4, 8, 16))  # expected perturbations in the run
    per = target / len(chosen)
    rates = {p: min(0.5, per / hits[p]) for p in chosen}
    return RandomScheduler(rng.getrandbits(32), p=0.0, rates=rates, points=chosen, hz=hz)


class _Ctx:
    """The fixed part of every run of one exploration."""

    def __init__(self, cfg: Config, checks: list[str], policy: Any, fixes: dict[str, bool] | None,
                 progress: Progress | None, budget: int, sweep: Any = None) -> None:
        self.sweep = sweep
        self.cfg = cfg
        self.checks = checks
        self.policy = policy
        self.fixes = fixes
        self.progress = progress
        self.budget = budget
        self.runs = 0
        self.shrink_runs = 0
        self.found = 0
        self.coverage = Coverage()   # of the search runs (not the shrinking)

    def run(self, seed: int, scheduler: Scheduler, *, shrinking: bool = False) -> Outcome:
        out = checked_run(self.cfg, seed=seed, checks=self.checks, scheduler=scheduler,
                          policy=self.policy, fixes=self.fixes)
        interrupt.check()  # Ctrl-C ended the run: it says nothing about the schedule
        self.count(out.violation is not None, shrinking, out.coverage)
        return out

    def confirm(self, seed: int, scheduler: Scheduler) -> Outcome:
        """A replay of a result already found, for its events: neither a search run nor a
        shrinking run, so neither budget counts it."""
        out = checked_run(self.cfg, seed=seed, checks=self.checks, scheduler=scheduler, policy=self.policy,
                          fixes=self.fixes)
        interrupt.check()
        return out

    def count(self, violated: bool, shrinking: bool, coverage: dict[str, Any] | None = None) -> None:
        if shrinking:
            self.shrink_runs += 1
        else:
            self.runs += 1
            if coverage is not None:
                self.coverage.merge(coverage)
            if violated:
                self.found += 1
        if self.progress is not None:
            self.progress(self.runs, self.budget, self.found, "shrink" if shrinking else "search")

    @property
    def width(self) -> int:
        """Runs evaluated at once (1: one after the other, in this process)."""
        return self.sweep.width if self.sweep is not None and self.sweep.parallel else 1

    def unit(self, seed: int, scheduler: Scheduler) -> tuple:
        return (self.cfg, self.checks, self.policy, self.fixes, seed, scheduler)

    def search_batch(self, batch: list[tuple[int, Scheduler]]) -> int | None:
        """Run the (seed, scheduler) pairs, counted as if one after the other up to the
        first violation; its position in ``batch`` (None: none violated)."""
        found = self.sweep.map(_violated, [self.unit(sd, sc) for sd, sc in batch])
        for i, (invariant, coverage) in enumerate(found):
            self.count(invariant is not None, False, coverage)
            if invariant is not None:
                return i
        return None

    def first_success(self, candidates: list[list[tuple[int, str, int, int]]], seed: int, target: str,
                      budget: int) -> tuple[list[tuple[int, str, int, int]], Any] | None:
        """The first candidate, in order, whose anchored run still violates ``target``,
        within the shrink budget: (the anchors its run used, its outcome).  Evaluated in
        batches of :attr:`width` runs, counted as the sequential search would count them."""
        for start in range(0, len(candidates), self.width):
            room = budget - self.shrink_runs
            batch = candidates[start:start + min(self.width, max(0, room))]
            if not batch:
                return None
            here = len(batch) == 1  # one run at a time (or the hold search): in this process
            if here:
                sched = AnchoredScheduler(batch[0])
                got = self.run(seed, sched, shrinking=True)
                results = [(got.invariant, sched.applied, got)]
            else:
                results = self.sweep.map(_anchored, [self.unit(seed, AnchoredScheduler(c)) for c in batch])
            for invariant, applied, got in results:
                if not here:
                    self.count(invariant is not None, True)
                if invariant == target:
                    return applied, got
        return None


def explore(cfg: Config, checks: list[str], scheduler: str = "random", budget: int = 100,
            seed: int = 0, policy: Any = None, progress: Progress | None = None, *,
            fixes: dict[str, bool] | None = None, shrink_budget: int = 100, depth: int = 3,
            vary_seed: bool = True, max_choices: int = 8, jobs: int = 1,
            cluster: str | None = None, por: bool = True) -> ExploreResult:
    """Search up to ``budget`` runs for a violation of one of ``checks``; shrink it.

    Run i (from 0) uses seed ``cfg.run.seed + i`` (always ``cfg.run.seed`` without
    ``vary_seed``); ``seed`` drives the scheduler draws.  ``progress(runs, budget,
    violations, phase)`` is called after every run.  ``exhaustive`` runs every schedule of
    at most ``depth`` picks on ``cfg.run.seed`` (:mod:`oomactors.exhaustive`; ``por``: with
    the partial-order reduction), within ``budget`` runs.  ``jobs`` local processes or a Dask
    ``cluster`` (:mod:`oomactors.sweep`) evaluate search and shrinking runs a batch at a
    time; the result is the same as one at a time (the Hypothesis search stays serial).
    """
    checks = check_names(checks)
    if scheduler not in SEARCHES:
        raise InputError(f"unknown scheduler {scheduler!r} for explore (known: {', '.join(SEARCHES)})")
    if budget < 1:
        raise InputError(f"budget must be at least 1, not {budget}")
    from .sweep import Sweep

    with Sweep(jobs, cluster) as sweep:
        return _explore(cfg, checks, scheduler, budget, seed, policy, progress, fixes, shrink_budget,
                        depth, vary_seed, max_choices, sweep, por)


def _explore(cfg: Config, checks: list[str], scheduler: str, budget: int, seed: int, policy: Any,
             progress: Progress | None, fixes: dict[str, bool] | None, shrink_budget: int, depth: int,
             vary_seed: bool, max_choices: int, sweep: Any, por: bool = True) -> ExploreResult:
    t0 = time.perf_counter()
    ctx = _Ctx(cfg, checks, policy, fixes, progress, budget, sweep)
    base = cfg.run.seed
    hz = cfg.kernel.hz
    extra: dict[str, Any] = {}
    found: tuple[int, Outcome, list[tuple[int, str, int, int]]] | None = None
    if scheduler == "exhaustive":
        from .exhaustive import search
        hit, stats = search(ctx, base, depth, por)
        k, extra["actors"] = max(1, stats.decisions), max(1, stats.actors)
        extra["exhaustive"] = stats.as_json()
        if hit is not None:  # that run again, here, for its events (no shrinking: no fewer picks did it)
            out = checked_run(cfg, seed=base, checks=checks, scheduler=ReplayScheduler(hit), policy=policy,
                              fixes=fixes)
            interrupt.check()
            if out.violation is None:  # pragma: no cover - a determinism bug
                raise OomactorsError(f"run {ctx.runs} violated on a worker but not here")
            found = (base, out, [])
        first = None
    else:
        census = _Census()
        first = ctx.run(base, census)
        k = max(1, first.decisions)
        n = extra["actors"] = max(1, first.machine.sched.stepper.spawned)
        if scheduler == "pct":
            if depth - 1 > k:  # PCT draws min(d-1, k) change points: a larger d is not the d used
                raise InputError(f"--depth: PCT draws d-1 change points among the k={k} decision points of a "
                                 f"run, so d can be at most k+1={k + 1}, not {depth}")
            extra["pct"] = pct_bound(n, k, depth)
    if first is None:
        pass
    elif first.violation is not None:
        found = (base, first, [])
    elif scheduler == "hypothesis":
        found = _search_hypothesis(ctx, base, k, hz, seed, vary_seed, max_choices, shrink_budget)
    else:
        # run i's scheduler is drawn from rng after run i-1's, so drawing a batch ahead
        # gives each run the scheduler it has one at a time; the lowest violating run wins
        rng = random.Random(seed)
        i = 1
        while i < budget and found is None:
            batch = []
            for j in range(i, min(budget, i + ctx.width)):
                inner = (_swarm(rng, census.hits, hz) if scheduler == "random"
                         else PCTScheduler(rng.getrandbits(32), k=k, n=n, depth=depth, hz=hz))
                batch.append(((base + j) & SEED_MAX if vary_seed else base, inner))  # seeds stay below 2^64
            i += len(batch)
            if ctx.width == 1:
                anchoring = Anchoring(batch[0][1])
                out = ctx.run(batch[0][0], anchoring)
                if out.violation is not None:
                    found = (batch[0][0], out, anchoring.anchors)
                continue
            hit = ctx.search_batch([(sd, Anchoring(sc)) for sd, sc in batch])  # sends copies
            if hit is not None:
                # that run again, here: its events and the anchors of its choices
                run_seed, anchoring = batch[hit][0], Anchoring(batch[hit][1])
                out = checked_run(cfg, seed=run_seed, checks=checks, scheduler=anchoring, policy=policy,
                                  fixes=fixes)
                interrupt.check()
                if out.violation is None:  # pragma: no cover - a determinism bug
                    raise OomactorsError(f"run {ctx.runs} violated on a worker but not here")
                found = (run_seed, out, anchoring.anchors)
    coverage = ctx.coverage.as_dict()
    vacuous = ctx.coverage.vacuous(checks) if found is None else {}
    if found is None:
        return ExploreResult(ctx.runs, None, None, time.perf_counter() - t0, None, decisions=k,
                             scheduler=scheduler, checks=checks, coverage=coverage, vacuous=vacuous,
                             **extra)
    run_seed, out, anchors = found
    found_at = ctx.runs
    found_schedule = out.schedule
    if scheduler not in ("hypothesis", "exhaustive") and out.schedule:
        out = _shrink(ctx, run_seed, out, anchors, shrink_budget)
    # the result is replayed strictly by index, as `oomactors run --replay` will (a check of
    # the result, not a shrinking run: --shrink-budget does not count it)
    check = ctx.confirm(run_seed, ReplayScheduler(out.schedule, strict=True))
    if check.invariant != out.invariant:  # pragma: no cover - a determinism bug
        raise OomactorsError(f"the shrunk schedule did not replay: {check.invariant} != {out.invariant}")
    v = check.violation
    assert v is not None
    rec = getattr(v, "record", None)
    violation = Violation(v.invariant, str(v), run_seed, rec[0] if rec else None, found_at)
    repro = make_repro(cfg, seed=run_seed, schedule=check.schedule, invariant=v.invariant,
                       message=str(v), events=event_lines(check.records, hz), policy=policy,
                       fixes=fixes, checks=checks, scheduler=scheduler)
    return ExploreResult(ctx.runs, violation, check.schedule, time.perf_counter() - t0, repro,
                         found_schedule=found_schedule, shrink_runs=ctx.shrink_runs, decisions=k,
                         scheduler=scheduler, checks=checks, coverage=coverage, **extra)


# --- shrinking ------------------------------------------------------------------------------


def _shrink(ctx: _Ctx, seed: int, out: Outcome, anchors: list[tuple[int, str, int, int]],
            budget: int) -> Outcome:
    """ddmin, then smaller holds.  Each step tries its candidates in order and takes the
    first that still violates the same invariant (:meth:`_Ctx.first_success`, which may
    evaluate a few at once: the result is the one-at-a-time result)."""
    target = out.invariant
    assert target is not None
    best: Any = out
    items = list(anchors)

    def first(cands: list[list[tuple[int, str, int, int]]]) -> list[tuple[int, str, int, int]] | None:
        nonlocal best
        hit = ctx.first_success(cands, seed, target, budget)
        if hit is None:
            return None
        used, best = hit
        return used

    if first([[]]) is not None:
        return best
    # ddmin over the choices
    n = 2
    while len(items) >= 2 and ctx.shrink_runs < budget:
        size = math.ceil(len(items) / n)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        # one chunk alone (with two chunks that is the other's complement, tried next)
        used = first(chunks) if len(chunks) > 2 else None
        if used is not None:
            items = used
            n = 2
            continue
        comps = [[x for j, c in enumerate(chunks) if j != i for x in c] for i in range(len(chunks))]
        used = first(comps)
        if used is not None:
            items = used
            n = max(n - 1, 2)
            continue
        if n >= len(items):
            break
        n = min(2 * n, len(items))
    # smaller holds: a yield where one will do, else the shortest hold that still fails
    # (a binary search between 0 and the hold: h fails and h-1 does not, unless the budget
    # ran out first)
    for anchor in [a[:3] for a in items]:
        def at() -> int | None:
            return next((j for j, a in enumerate(items) if a[:3] == anchor), None)

        def try_action(action: int) -> bool:
            nonlocal items
            j = at()
            if j is None:
                return False
            used = first([items[:j] + [(*anchor, action)] + items[j + 1:]])
            if used is not None:
                items = used
            return used is not None

        j = at()
        if j is None or items[j][3] <= 0 or try_action(-1):
            continue
        lo, hi = 0, items[j][3]
        while hi - lo > 1 and ctx.shrink_runs < budget:
            mid = (lo + hi) // 2
            if try_action(mid):
                hi = mid
            else:
                lo = mid
    return best


@dataclass
class _Found:
    """What a worker sends back of a run that violated an invariant while shrinking."""

    invariant: str | None
    schedule: Schedule


def _violated(unit: tuple) -> tuple[str | None, dict[str, Any] | None]:
    """A search run on a worker: the invariant it violated, if any, and its coverage."""
    cfg, checks, policy, fixes, seed, scheduler = unit
    out = checked_run(cfg, seed=seed, checks=checks, scheduler=scheduler, policy=policy, fixes=fixes)
    return out.invariant, out.coverage


def _anchored(unit: tuple) -> tuple[str | None, list[tuple[int, str, int, int]], _Found]:
    """A shrinking run on a worker: its invariant, the anchors it used, its schedule."""
    cfg, checks, policy, fixes, seed, scheduler = unit
    out = checked_run(cfg, seed=seed, checks=checks, scheduler=scheduler, policy=policy, fixes=fixes)
    return out.invariant, scheduler.applied, _Found(out.invariant, out.schedule)


# --- Hypothesis -----------------------------------------------------------------------------


def _schedule_strategy(k: int, hz: int, max_choices: int) -> Any:
    """``oomactors.testing.strategies.schedules`` (sparse, lenient schedules below k)."""
    try:
        from .testing.strategies import schedules
    except ImportError:  # pragma: no cover - the testing package ships with oomactors
        return sparse_schedules(k=k, max_choices=max_choices, hz=hz)
    return schedules(k, max_choices, hz=hz)


def _search_hypothesis(ctx: _Ctx, base: int, k: int, hz: int, seed: int, vary_seed: bool,
                       max_choices: int, shrink_budget: int):
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis import strategies as st
    from hypothesis.errors import NoSuchExample

    from .explore_hypothesis import seed_only_draws

    offsets = st.integers(0, max(0, ctx.budget - 1)) if vary_seed else st.just(0)
    strategy = st.tuples(offsets, _schedule_strategy(k, hz, max_choices))
    cache: dict[tuple[int, str], bool] = {}
    target: dict[str, Any] = {}

    def condition(example: tuple[int, Schedule]) -> bool:
        off, schedule = example
        key = (off, schedule.dumps())
        if key in cache:
            return cache[key]
        shrinking = "name" in target
        if (ctx.shrink_runs if shrinking else ctx.runs) >= (shrink_budget if shrinking else ctx.budget):
            return False  # out of budget: answer without running (the cache keeps replays stable)
        out = ctx.run(base + off, ReplayScheduler(schedule, strict=False), shrinking=shrinking)
        ok = out.violation is not None and target.setdefault("name", out.invariant) == out.invariant
        if ok:
            target.setdefault("first", (base + off, out))
        cache[key] = ok
        return ok

    # hypothesis' own seed is derived from ours: the search is a function of `seed`
    conf = settings(max_examples=ctx.budget, database=None, derandomize=False, deadline=None,
                    phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    try:
        with seed_only_draws():
            off, schedule = find(strategy, condition, settings=conf, random=random.Random(seed))
    except NoSuchExample:
        return None
    run_seed = (base + off) & SEED_MAX
    out = ctx.confirm(run_seed, ReplayScheduler(schedule, strict=False))  # its events, uncounted
    if out.invariant != target.get("name"):  # pragma: no cover - a determinism bug
        raise OomactorsError("the Hypothesis example did not replay")
    return run_seed, out, []
