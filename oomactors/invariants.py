"""Invariant checkers that run after every event of a simulation.

Each checker is a callable ``check(machine, record)`` that raises
:class:`InvariantViolation` naming the event where the rule broke.

* :func:`page_conservation` -- every page of every zone is in exactly one place: a buddy
  free list (whose block counts must add up to ``nr_free``), a CPU's per-CPU list, or one
  owner counter; and the owners' own books (each mm's per-zone counters, the page-cache
  mappers, the swap slots) agree with the zones'.  With memory cgroups, each memcg's
  memory and swap counters equal the pages charged to its subtree (its mms' anon, shmem and
  mapped page cache, its unmapped page cache, its __GFP_ACCOUNT pages; its mms' swap
  entries), and usage stays within memory.max but for what force charges put past it.
* :func:`commit_accounting` -- Committed_AS equals the charges the live mms carry (their
  accounted mappings and shmem objects): every charge is given back exactly once, by
  munmap or exit_mmap, and a refused request leaves nothing behind.
* :class:`OomLockExclusion` -- ``oom_lock`` is a mutex: nobody acquires it while another
  task holds it, and only the holder releases it (read from the event stream alone).
* :func:`no_unkillable_killed` -- no task whose ``oom_score_adj`` is -1000
  (OOM_SCORE_ADJ_MIN) gets the OOM killer's SIGKILL, whoever chose it (the kernel's scan,
  a kill policy, ``oom_kill_allocating_task``, a memory.oom.group sweep), nor does a
  process sharing a victim's mm.  Kernel rule: ``oom_badness()`` returns LONG_MIN for
  OOM_SCORE_ADJ_MIN, so ``select_bad_process()`` never picks such a task;
  ``out_of_memory()`` checks it before killing current under
  ``sysctl_oom_kill_allocating_task``; ``oom_kill_memcg_member()`` skips it; and
  ``__set_oom_adj()`` keeps the value equal across processes sharing an mm.  (2.4's
  page-fault "VM: killing process" is not an OOM-killer kill and predates the knob.)
* :class:`MemcgEventsConsistent` -- memory.events ``oom_kill`` and ``oom_group_kill``
  agree with the kills: each kill raises ``oom_kill`` once on the victim's memcg
  (``.local``) and once on every ancestor below the root, each memory.oom.group sweep
  raises ``oom_group_kill`` likewise on the group's memcg and kills only, and every
  killable process of, that subtree; the machine's counters equal the stream's.  Kernel
  rule: ``__oom_kill_process()`` calls ``memcg_memory_event_mm(mm, MEMCG_OOM_KILL)`` once
  per kill, ``oom_kill_process()`` calls ``memcg_memory_event(oom_group,
  MEMCG_OOM_GROUP_KILL)`` before ``mem_cgroup_scan_tasks(oom_group,
  oom_kill_memcg_member)``, and ``memcg_memory_event()`` counts on the memcg's
  ``events_local`` and on its ``events`` up the hierarchy, the root excluded.

The OOM killer's own rules (the race catalogue: README "Race catalogue", ``configs/races/``;
the code is in :mod:`oomactors.oom_invariants`):

* :class:`SinglePendingVictim` (``single_pending_victim``) -- one victim at a time: no OOM
  kill while an earlier victim that the same OOM would scan is still pending (its
  ``signal->oom_mm`` set, no MMF_OOM_SKIP on it), and no mm is killed by two separate
  kill decisions.  "Scanned" is what ``oom_evaluate_task()`` looks at: a global OOM's
  killable, cpuset/mempolicy-eligible processes, a memcg OOM's subtree; so victims of a
  disjoint memcg or cpuset do not count.  Processes sharing the victim's mm and the
  members of a memory.oom.group sweep are part of the same kill.  Kernel rule:
  ``oom_evaluate_task()`` aborts the scan (``oc->chosen = (void *)-1``) on a victim whose
  mm has no MMF_OOM_SKIP; ``oom_lock`` serialises kill decisions; ``oom_kill_process()``
  does not kill again a victim that is already exiting (``task_will_free_mem()``).
  Exempt: ``oom_kill_allocating_task``, which kills current without a scan by design.
* :class:`NoUnnecessaryKill` (``no_unnecessary_kill``) -- no OOM kill while the
  allocation's last attempt at the HIGH watermark would have succeeded: evaluated when
  ``out_of_memory()`` is entered from ``__alloc_pages_may_oom()`` (the state that attempt
  saw) with the request's order, chunk, zonelist and cpuset, over the zones the task may
  allocate from *now* (a bind policy as a cpuset update rebound it), and charged to any
  kill that OOM call makes.  Kernel rule: "this is only to catch a parallel oom killing,
  we must fail if we're still under heavy pressure" (the HIGH-watermark
  ``get_page_from_freelist()`` under ``oom_lock``), and ``check_retry_cpuset()`` before the
  OOM killer.  A memcg OOM is judged by the memcg's margin instead, when
  ``out_of_memory()`` is entered from ``mem_cgroup_out_of_memory()``: no kill while the
  charge would fit below the limit (kernel rule: the last-minute margin check after
  ``oom_lock`` is taken, 5.9).  Not checked: the page-fault OOM (no allocation; 5.10
  kills there without any last attempt, 5.16 stopped it).
* :class:`VictimExitBound` (``victim_exit_bound``, ``victim_exit_bound:BOUND``) -- every
  victim (``oom:mark_victim``) exits or gets MMF_OOM_SKIP on its mm within the bound
  (default 10 s).  Kernel rule: the oom_reaper unmaps a victim, or gives up after
  MAX_OOM_REAP_RETRIES (10) trylocks HZ/10 apart, and sets MMF_OOM_SKIP either way: about
  1 s, plus OOM_REAPER_DELAY (2 s) from 5.18, plus the victims queued before it.  Eras
  without a reaper (2.4, 2.6.36) make no such promise: a victim in D state breaks it.
* :class:`AllocProgressBound` (``alloc_progress_bound``, ``alloc_progress_bound:BOUND``)
  -- every page-allocator request that enters the slow path returns (a page, or a
  failure) or has its task SIGKILLed within the bound (default 30 s); at the end of a run
  that ended in a deadlock any open request is a violation.  Kernel rule: the slow path
  loops only while the OOM killer makes progress (``did_some_progress``); the reaper and
  MMF_OOM_SKIP guarantee that it does.  memcg charge loops are not covered.
* :class:`NoReapDuringExit` (``no_reap_during_exit``) -- the oom_reaper is not unmapping a
  victim's memory (between ``oom:start_task_reaping`` and ``oom:finish_task_reaping``)
  while a thread of the victim runs its own exit (PF_EXITING).  Kernel rule (5.18+,
  ``OOM_REAPER_DELAY``): the reaper waits 2 s so that a victim able to exit does so
  first; its exit path reads the robust futex list in the memory the reaper would zap.
  Only checked in eras with the delay (``profile.reaper_delay_s``); 5.10 reaps at once.
* :class:`NoFaultAfterReap` (``no_fault_after_reap``) -- no anonymous fault maps new pages
  into an mm once the oom_reaper has begun to unmap it (MMF_UNSTABLE; read from
  ``sim:fault_unstable``).  Kernel rule (4.13+): ``check_stable_address_space()`` in the
  anonymous fault fails it with SIGBUS, since a page mapped there is zero-filled where
  the victim's data was, and a victim thread still running would read the zeros back.
* :class:`NoMemcgOomByDyingTask` (``no_memcg_oom_by_dying_task``) -- a task that is
  already dying (an OOM victim, SIGKILLed or exiting) when it enters ``out_of_memory()``
  from ``mem_cgroup_out_of_memory()`` kills nobody and does not end in "no killable
  processes".  Kernel rule (5.1+): the wait for ``oom_lock`` is killable and
  ``should_force_charge()`` is asked again once the lock is held, so a dying task's charge
  goes through instead.

A bounded checker's bound is part of its name: ``alloc_progress_bound:2s`` (any duration
with a unit) is a fresh checker with that bound wherever a name is accepted, and its
violations carry that name.

Every checker's violation carries ``invariant`` (its name in :data:`INVARIANTS`): raise
``violation(name, msg, rec)``, or decorate a checker with :func:`named`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

from .events import EVENT_ID, EVENTS
from .kernel.mmzone import OWNERS

if TYPE_CHECKING:  # pragma: no cover
    from .machine import Machine


class InvariantViolation(AssertionError):
    """A rule broke.  ``invariant`` names the checker (a key of :data:`INVARIANTS`) and
    ``record`` is the event after which it was found (when the checker knows it)."""

    invariant: str | None = None
    record: tuple | None = None


def violation(name: str, msg: str, rec: tuple | None = None) -> InvariantViolation:
    """The exception a checker raises: ``raise violation("my_rule", "t=..: what broke", rec)``."""
    exc = InvariantViolation(msg)
    exc.invariant = name
    exc.record = rec
    return exc


def named(name: str) -> Callable[[Any], Any]:
    """Decorate a checker function (or a checker class's ``__call__``) so that every
    :class:`InvariantViolation` it raises carries ``invariant = name`` -- for checkers that
    raise a bare ``InvariantViolation(msg)``."""

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def checked(*args: Any) -> None:
            try:
                fn(*args)
            except InvariantViolation as exc:
                if exc.invariant is None:
                    exc.invariant = name
                if exc.record is None:
                    exc.record = args[-1]
                raise
        checked.invariant = name  # type: ignore[attr-defined]
        return checked

    def deco(obj: Any) -> Any:
        if isinstance(obj, type):
            obj.__call__ = wrap(obj.__call__)
            obj.invariant = name
            return obj
        return wrap(obj)

    return deco


@named("page_conservation")
def page_conservation(m: "Machine", rec: tuple) -> None:
    cpus = m.sched.cpus
    for z in m.zones:
        g = z.gid
        blocks = sum(c << o for o, c in enumerate(z.free_area))
        if blocks != z.nr_free:
            raise InvariantViolation(f"t={rec[0]} {z}: buddy blocks hold {blocks} pages, nr_free={z.nr_free}")
        pcp = sum(c.pcp[g] for c in cpus)
        owned = sum(z.nr[k] for k in OWNERS)
        if z.nr_free + pcp + owned != z.managed:
            raise InvariantViolation(
                f"t={rec[0]} {z}: free {z.nr_free} + pcp {pcp} + owned {owned} != managed {z.managed} "
                f"({dict(z.nr)})")
        if min(z.nr.values()) < 0 or z.nr_free < 0:
            raise InvariantViolation(f"t={rec[0]} {z}: a negative counter {dict(z.nr)}")
        for kind, attr in (("anon", "anon"), ("shmem", "shmem"), ("pagetables", "pgtables")):
            total = sum(getattr(mm, attr)[g] for mm in m.mms)
            if total != z.nr[kind]:
                raise InvariantViolation(f"t={rec[0]} {z}: mms hold {total} {kind} pages, zone says {z.nr[kind]}")
        if sum(z.file_owner.values()) != z.nr["file"]:
            raise InvariantViolation(f"t={rec[0]} {z}: page-cache mappers disagree with nr_file")
    swapped = sum(mm.swapents + mm.shmem_swap for mm in m.mms)
    if swapped + m.swap_free != m.total_swap_pages:
        raise InvariantViolation(f"t={rec[0]}: swap entries {swapped} + free {m.swap_free} != {m.total_swap_pages}")
    if len(getattr(m, "memcgs", ())) > 1:
        _memcg_conservation(m, rec)


def _memcg_conservation(m: "Machine", rec: tuple) -> None:
    from .kernel.memcontrol import for_each_mem_cgroup_tree
    memcgs = list(m.memcgs.values())
    mem = {c: c.kmem + sum(c.file) for c in memcgs}
    swap = dict.fromkeys(memcgs, 0)
    for mm in m.mms:
        c = mm.memcg
        if c is not None:
            mem[c] += sum(mm.anon) + sum(mm.shmem) + sum(mm.file)
            swap[c] += mm.swapents + mm.shmem_swap
    for z in m.zones:
        for c in memcgs:
            if c.file[z.gid] != (z.file_owner.get(c, 0) if not c.is_root else 0):
                raise InvariantViolation(f"t={rec[0]} {z}: {c} holds {c.file[z.gid]} unmapped page-cache "
                                         f"pages, the file LRU says {z.file_owner.get(c, 0)}")
    # children come after their parent in pre-order: sum the subtrees bottom-up
    for c in reversed(for_each_mem_cgroup_tree(m.root_mem_cgroup)):
        if c.memory.usage != mem[c] or c.swap.usage != swap[c]:
            raise InvariantViolation(f"t={rec[0]}: {c} charged memory {c.memory.usage} swap {c.swap.usage}, "
                                     f"its subtree holds {mem[c]} and {swap[c]} pages")
        if c.parent is not None:
            mem[c.parent] += mem[c]
            swap[c.parent] += swap[c]
            if c.memory.usage > c.memory.max + c.memory.forced:
                raise InvariantViolation(f"t={rec[0]}: {c} usage {c.memory.usage} above memory.max "
                                         f"{c.memory.max} without a force charge")
            if c.swap.usage > c.swap.max:
                raise InvariantViolation(f"t={rec[0]}: {c} swap {c.swap.usage} above swap.max {c.swap.max}")


@named("commit_accounting")
def commit_accounting(m: "Machine", rec: tuple) -> None:
    carried = sum(mm.vm_accounted + mm.shmem_accounted for mm in m.mms)
    if carried != m.vm_committed_as or min((min(mm.vm_accounted, mm.shmem_accounted) for mm in m.mms),
                                           default=0) < 0:
        raise InvariantViolation(f"t={rec[0]}: Committed_AS {m.vm_committed_as} != {carried} "
                                 f"pages charged to live mms")


@named("oom_lock_exclusion")
class OomLockExclusion:
    """Nobody takes oom_lock while someone holds it; only the holder lets it go."""

    def __init__(self) -> None:
        self.holder: int | None = None
        self._acq = EVENT_ID["sim:oom_lock_acquired"]
        self._rel = EVENT_ID["sim:oom_lock_released"]
        self.event_ids = frozenset((self._acq, self._rel))  # the only events it reads

    def __call__(self, m: "Machine", rec: tuple) -> None:
        eid = rec[1]
        if eid == self._acq:
            if self.holder is not None:
                raise InvariantViolation(f"t={rec[0]}: pid {rec[3]} acquired oom_lock held by pid {self.holder}")
            self.holder = rec[3]
        elif eid == self._rel:
            if self.holder != rec[3]:
                raise InvariantViolation(f"t={rec[0]}: pid {rec[3]} released oom_lock held by {self.holder}")
            self.holder = None


OOM_SCORE_ADJ_MIN = -1000
_KILL = EVENT_ID["sim:oom_kill"]
_KILL_SHARED = EVENT_ID["sim:oom_kill_shared"]
_KILL_FIELDS = EVENTS[_KILL].fields
_KILL_ADJ = 4 + _KILL_FIELDS.index("oom_score_adj")
_KILL_MEMCG = 4 + _KILL_FIELDS.index("task_memcg")


def no_unkillable_killed(m: "Machine", rec: tuple) -> None:
    """No task whose oom_score_adj is OOM_SCORE_ADJ_MIN (-1000) gets the OOM killer's SIGKILL:
    neither as the victim (``sim:oom_kill``, whoever chose it: the kernel's selection, a
    kill policy, oom_kill_allocating_task, a memory.oom.group sweep) nor as a process
    sharing the victim's mm (``sim:oom_kill_shared``; oom_score_adj is kept equal across
    processes sharing an mm, so such a process could only be hit by a broken choice)."""
    eid = rec[1]
    if eid == _KILL:
        adj = rec[_KILL_ADJ]
        if adj == OOM_SCORE_ADJ_MIN:
            raise violation("no_unkillable_killed",
                            f"t={rec[0]}: the OOM killer killed pid {rec[3]} ({rec[5]}) whose "
                            f"oom_score_adj is {adj} (OOM_SCORE_ADJ_MIN)", rec)
    elif eid == _KILL_SHARED:
        task = m.tasks.get(rec[3])
        if task is not None and task.signal.oom_score_adj == OOM_SCORE_ADJ_MIN:
            raise violation("no_unkillable_killed",
                            f"t={rec[0]}: the OOM killer sent SIGKILL to pid {rec[3]} ({rec[4]}), sharing "
                            f"the mm of victim {rec[5]}, whose oom_score_adj is {OOM_SCORE_ADJ_MIN}", rec)


def _memcg_chain(path: str) -> list[tuple[str, int]]:
    """The ``(path, local)`` pairs one memory.events increment on ``path`` emits: ``local``
    1 on the memcg itself, 0 on every ancestor below the root (the root counts nothing)."""
    out: list[tuple[str, int]] = []
    local = 1
    while path not in ("/", ""):
        out.append((path, local))
        local = 0
        path = path.rsplit("/", 1)[0]
    return out


def _in_subtree(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


class MemcgEventsConsistent:
    """memory.events' ``oom_kill`` and ``oom_group_kill`` agree with the kills.

    * every ``sim:oom_kill`` is preceded by exactly one ``oom_kill`` memcg event on the
      victim's memcg (``local`` = 1) and one on each ancestor below the root (``local`` =
      0), with no other ``oom_kill`` memcg event since the previous kill;
    * every ``sim:memcg_oom_group`` (a memory.oom.group sweep) is preceded by exactly such a
      chain of ``oom_group_kill`` events on the group's memcg; the kills of the sweep hit
      only tasks of that memcg's subtree, and by the end of that ``out_of_memory`` every
      process of the subtree that still has an mm and an oom_score_adj above -1000 has
      been sent SIGKILL;
    * the machine's counters (``memory.events`` and ``memory.events.local``, what the run
      summary reports) equal the counts read from the stream, at every kill and at the end
      of the run, and no memcg event is left without its kill at the end.
    """

    _EVENT = EVENT_ID["sim:memcg_event"]
    _GROUP = EVENT_ID["sim:memcg_oom_group"]
    _RETURN = EVENT_ID["sim:out_of_memory_return"]
    _END = EVENT_ID["sim:run_end"]
    NAMES = ("oom_kill", "oom_group_kill")

    def __init__(self) -> None:
        self.pending: dict[str, list[tuple[str, int]]] = {n: [] for n in self.NAMES}
        self.counts: dict[tuple[str, str], int] = {}        # (path, name) -> memory.events
        self.counts_local: dict[tuple[str, str], int] = {}  # (path, name) -> memory.events.local
        self.group: tuple[int, str] | None = None  # (pid running the sweep, group path)

    def __call__(self, m: "Machine", rec: tuple) -> None:
        eid = rec[1]
        if eid == self._EVENT:
            path, name, local = rec[4], rec[5], rec[6]
            if name in self.pending:
                self.pending[name].append((path, local))
                self.counts[path, name] = self.counts.get((path, name), 0) + 1
                if local:
                    self.counts_local[path, name] = self.counts_local.get((path, name), 0) + 1
        elif eid == _KILL:
            path = rec[_KILL_MEMCG] or "/"
            self._consume(rec, "oom_kill", path, f"the kill of pid {rec[3]} in {path}")
            if self.group is not None and not _in_subtree(path, self.group[1]):
                raise self._fail(rec, f"pid {rec[3]} in {path} was killed by the memory.oom.group "
                                      f"sweep of {self.group[1]}")
            self._books(m, rec)
        elif eid == self._GROUP:
            path = rec[4]
            if self.pending["oom_group_kill"] or (getattr(m.policy, "name", "linux") == "linux"
                                                   and getattr(getattr(m, "profile", None),
                                                               "oom_group_kill_event", True)):
                self._consume(rec, "oom_group_kill", path, f"the oom.group sweep of {path}")
            # else a kill policy's whole-cgroup kill (not memory.oom.group), or an era before
            # 5.17 (no oom_group_kill counter): no memory.events
            self.group = (rec[3], path)
        elif eid == self._RETURN and self.group is not None and rec[3] == self.group[0]:
            self._sweep_done(m, rec, self.group[1])
            self.group = None
        elif eid == self._END:
            for name, left in self.pending.items():
                if left:
                    raise self._fail(rec, f"memcg {name} events {left} have no matching kill")
            self._books(m, rec)

    def _fail(self, rec: tuple, msg: str) -> InvariantViolation:
        return violation("memcg_events_consistent", f"t={rec[0]}: {msg}", rec)

    def _consume(self, rec: tuple, name: str, path: str, what: str) -> None:
        got, self.pending[name] = self.pending[name], []
        want = _memcg_chain(path)
        if got != want:
            raise self._fail(rec, f"{what}: memory.events {name} went up on {got}, expected {want}")

    def _sweep_done(self, m: "Machine", rec: tuple, top: str) -> None:
        for p in m.processes():
            path = p.memcg.path if p.memcg is not None else "/"
            if not _in_subtree(path, top) or p.is_global_init or p.is_kthread:
                continue
            if p.signal.oom_score_adj == OOM_SCORE_ADJ_MIN:
                continue
            if any(t.mm is not None for t in p.signal.threads) and not p.signal.group_exit:
                raise self._fail(rec, f"pid {p.pid} ({p.comm}) in {path} survived the "
                                      f"memory.oom.group sweep of {top}")

    def _books(self, m: "Machine", rec: tuple) -> None:
        for path, c in m.memcgs.items():
            if c.is_root:
                continue
            for name in self.NAMES:
                seen = self.counts.get((path, name), 0)
                seen_local = self.counts_local.get((path, name), 0)
                if c.events[name] != seen or c.events_local[name] != seen_local:
                    raise self._fail(rec, f"{path} memory.events {name}={c.events[name]} "
                                          f"(local {c.events_local[name]}), the event stream says "
                                          f"{seen} (local {seen_local})")


# --- the OOM killer's own rules (the race catalogue's checkers): oomactors/oom_invariants.py --
from .oom_invariants import (AllocProgressBound, NoFaultAfterReap, NoMemcgOomByDyingTask,  # noqa: E402
                             NoReapDuringExit, NoUnnecessaryKill, SinglePendingVictim, VictimExitBound,
                             parse_bound)


def default_checkers() -> list:
    return [page_conservation, commit_accounting, OomLockExclusion()]


# name -> factory of a fresh checker (stateful checkers must not be shared between runs).
# ``oomactors explore --check NAME`` and the reproducer files use these names.
INVARIANTS: dict[str, Callable[[], Callable[["Machine", tuple], None]]] = {
    "page_conservation": lambda: page_conservation,
    "commit_accounting": lambda: commit_accounting,
    "oom_lock_exclusion": OomLockExclusion,
    "no_unkillable_killed": lambda: no_unkillable_killed,
    "memcg_events_consistent": MemcgEventsConsistent,
    "single_pending_victim": SinglePendingVictim,
    "no_unnecessary_kill": NoUnnecessaryKill,
    "victim_exit_bound": VictimExitBound,
    "alloc_progress_bound": AllocProgressBound,
    "no_reap_during_exit": NoReapDuringExit,
    "no_fault_after_reap": NoFaultAfterReap,
    "no_memcg_oom_by_dying_task": NoMemcgOomByDyingTask,
}


class _Registry(dict):
    """:data:`INVARIANTS`, which also knows ``NAME:BOUND`` for the checkers that take a time
    bound (``victim_exit_bound:3s``, ``alloc_progress_bound:500ms``): a fresh checker with
    that bound, wherever a name is accepted (``--check``, explore, reproducers)."""

    BOUNDED = {"victim_exit_bound": VictimExitBound, "alloc_progress_bound": AllocProgressBound}

    def _bounded(self, key: object) -> Callable[[], Callable[["Machine", tuple], None]] | None:
        if not isinstance(key, str) or ":" not in key:
            return None
        name, _, bound = key.partition(":")
        cls = self.BOUNDED.get(name)
        if cls is None:
            return None
        parse_bound(bound)  # InputError now, not at the first run
        return lambda: cls(bound)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self._bounded(key) is not None

    def __missing__(self, key: object) -> Callable[[], Callable[["Machine", tuple], None]]:
        factory = self._bounded(key)
        if factory is None:
            raise KeyError(key)
        return factory


INVARIANTS = _Registry(INVARIANTS)
