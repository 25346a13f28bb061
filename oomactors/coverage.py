"""What runs reached: decision points, kernel branches, OOM invocations and kills.

A search that never reaches the code its invariants guard proves nothing: an
``oom_lock_exclusion`` search of a config where no allocation ever fails says "no
violation" about a lock nobody took.  :class:`Coverage` counts, over one run or many, the
scheduling points passed and the kernel branches taken, named in the kernel's words
(:data:`BRANCHES`: ``out_of_memory``'s exits, ``__alloc_pages_may_oom``'s bail-outs, the
kill path's turns, the oom_reaper's outcomes).  Most are read off the event stream (a
sink); the bail-outs of ``__alloc_pages_may_oom``, which emit nothing of their own, are
counted by the kernel model in ``Machine.branches``.  :data:`GUARDS` says which branches
each invariant watches: a search whose runs reached none of them is *vacuous*.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .events import EVENT_ID
from .oom_invariants import NoReapDuringExit

# name -> what the kernel does there (the kernel's own words where it has them)
BRANCHES: dict[str, str] = {
    "__alloc_pages_slowpath": "an allocation entered the slow path",
    "may_oom: trylock failed": "__alloc_pages_may_oom lost the oom_lock trylock (someone else is handling OOM)",
    "may_oom: coredump": "PF_DUMPCORE: coredumps can quickly deplete all memory reserves",
    "may_oom: costly order": "the OOM killer will not help higher order allocs",
    "may_oom: retry_mayfail or thisnode": "__GFP_RETRY_MAYFAIL / __GFP_THISNODE: the caller has a fallback",
    "may_oom: lowmem": "the OOM killer does not needlessly kill tasks for lowmem",
    "may_oom: high watermark page": "the last get_page_from_freelist at the HIGH watermark caught a parallel kill",
    "may_oom: nofail fallback": "__GFP_NOFAIL: the cpuset fallback after out_of_memory",
    "out_of_memory": "out_of_memory() was called",
    "out_of_memory: oom_killer_disabled": "the OOM killer is disabled (suspend)",
    "out_of_memory: checklist_24": "2.4's out_of_memory() decided this is not an OOM yet",
    "out_of_memory: notifier_freed": "an OOM notifier freed memory",
    "out_of_memory: current_exiting": "current is exiting: mark it a victim and let it use reserves",
    "out_of_memory: no_fs": "no compensation for IO-less reclaim (!__GFP_FS)",
    "out_of_memory: killed_allocating_task": "vm.oom_kill_allocating_task killed current",
    "out_of_memory: victim_pending": "oom_evaluate_task aborted on a pending victim",
    "out_of_memory: no_killable": "Out of memory and no killable processes",
    "out_of_memory: killed": "select_bad_process chose a victim and it was killed",
    "oom_kill_process: sacrifice child": "Kill process ... score ... or sacrifice child",
    "oom_kill_process: memory.oom.group": "the victim's memcg is killed as a group",
    "__oom_kill_process": "SIGKILL to the victim",
    "__oom_kill_process: mm shared": "SIGKILL to a process sharing the victim's mm",
    "oom_reaper: reaped": "the oom_reaper unmapped a victim's memory",
    "oom_reaper: unable to reap": "the oom_reaper gave up on a victim (mmap_lock held) and set MMF_OOM_SKIP",
    "oom_reaper: skipped": "the oom_reaper skipped a victim already MMF_OOM_SKIP",
    "MMF_OOM_SKIP": "MMF_OOM_SKIP was set on a victim's mm",
    "check_retry_cpuset": "a cpuset update made the slow path restart",
    "warn_alloc": "an allocation failed (page allocation failure)",
    "mem_cgroup_out_of_memory": "a memcg OOM",
    "memcg oom: dying at oom_lock": "a task was dying when it got (or gave up waiting for) oom_lock in mem_cgroup_out_of_memory",
    "check_stable_address_space": "an anonymous fault completed in an mm the oom_reaper had begun to unmap (MMF_UNSTABLE)",
    "panic": "the kernel panicked",
}

# invariant -> the branches it watches: a search that reached none of them is vacuous
GUARDS: dict[str, tuple[str, ...]] = {
    "oom_lock_exclusion": ("out_of_memory", "may_oom: trylock failed"),
    "single_pending_victim": ("__oom_kill_process",),
    "no_unnecessary_kill": ("__oom_kill_process",),
    "no_unkillable_killed": ("__oom_kill_process",),
    "memcg_events_consistent": ("__oom_kill_process",),
    "victim_exit_bound": ("__oom_kill_process",),
    "alloc_progress_bound": ("__alloc_pages_slowpath",),
    "no_reap_during_exit": ("oom_reaper: reaped", "oom_reaper: unable to reap"),
    "no_fault_after_reap": ("check_stable_address_space",),
    "no_memcg_oom_by_dying_task": ("memcg oom: dying at oom_lock",),
    # page_conservation and commit_accounting watch every event: never vacuous
}

# What must hold of a run's machine for an invariant to promise anything at all (its
# checker returns early otherwise): a search none of whose runs met it is vacuous however
# many guarded branches it reached.  invariant -> (what it needs, in words; the test), as
# the checker itself states them.
PRECONDITIONS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    c.invariant: (c.needs, c.applies) for c in (NoReapDuringExit,)
}


def _by_event() -> dict[int, str]:
    plain = {
        "sim:slowpath_enter": "__alloc_pages_slowpath",
        "sim:oom_lock_contended": "may_oom: trylock failed",
        "sim:out_of_memory_enter": "out_of_memory",
        "sim:oom_sacrifice": "oom_kill_process: sacrifice child",
        "sim:memcg_oom_group": "oom_kill_process: memory.oom.group",
        "sim:oom_kill": "__oom_kill_process",
        "sim:oom_kill_shared": "__oom_kill_process: mm shared",
        "sim:reaper_reaped": "oom_reaper: reaped",
        "sim:reaper_unable": "oom_reaper: unable to reap",
        "oom:skip_task_reaping": "oom_reaper: skipped",
        "sim:mmf_oom_skip": "MMF_OOM_SKIP",
        "sim:cpuset_retry": "check_retry_cpuset",
        "sim:page_alloc_failure": "warn_alloc",
        "sim:no_killable": "out_of_memory: no_killable",   # before a panic, which returns nothing
        "sim:memcg_oom_meminfo": "mem_cgroup_out_of_memory",
        "sim:panic": "panic",
        "sim:fault_unstable": "check_stable_address_space",   # mapped or SIGBUS
    }
    return {EVENT_ID[name]: branch for name, branch in plain.items() if name in EVENT_ID}


_PLAIN = _by_event()
_OOM_RETURN = EVENT_ID["sim:out_of_memory_return"]


class Coverage:
    """Counts of points, branches, OOM invocations and kills; a sink for one run's events
    (``sim.run(..., sinks=[cov])``), then :meth:`add_machine` for what is not evented."""

    def __init__(self) -> None:
        self.points: dict[str, int] = {}
        self.branches: dict[str, int] = {}
        self.preconditions: dict[str, int] = {}   # invariant -> runs that met its precondition
        self.runs = 0

    def __call__(self, rec: tuple) -> None:
        kind = rec[1]
        branch = _PLAIN.get(kind)
        if branch is None and kind == _OOM_RETURN and rec[5] != "no_killable":  # counted above
            branch = "out_of_memory: " + str(rec[5]).split(":", 1)[0]
        if branch is not None:
            self.branches[branch] = self.branches.get(branch, 0) + 1

    def checker(self) -> Callable[[Any, tuple], None]:
        """The same counting as a checker that reads only the events it counts (a run's
        checkers are dispatched by event kind; a sink sees every event).  Put it first
        among the checkers: then it counts an event a later checker stops the run at, as
        the sink would."""
        count = self.__call__

        def check(m: Any, rec: tuple) -> None:
            count(rec)

        check.event_ids = frozenset(_PLAIN) | {_OOM_RETURN}  # type: ignore[attr-defined]
        check.reads_psi = False  # type: ignore[attr-defined]
        return check

    def add_machine(self, m: Any) -> None:
        """The scheduling points and the un-evented branches of a finished run."""
        self.runs += 1
        for name, n in m.sched.point_hits.items():
            if n:
                self.points[name] = self.points.get(name, 0) + n
        for name, n in getattr(m, "branches", {}).items():
            if n:
                self.branches[name] = self.branches.get(name, 0) + n
        for name, (_, holds) in PRECONDITIONS.items():
            if holds(m):
                self.preconditions[name] = self.preconditions.get(name, 0) + 1

    def merge(self, other: "Coverage | dict[str, Any]") -> None:
        data = other.as_dict() if isinstance(other, Coverage) else other
        self.runs += data["runs"]
        for key in ("points", "branches", "preconditions"):
            mine = getattr(self, key)
            for name, n in data.get(key, {}).items():
                mine[name] = mine.get(name, 0) + n

    @property
    def oom_invocations(self) -> int:
        return self.branches.get("out_of_memory", 0)

    @property
    def kills(self) -> int:
        return self.branches.get("__oom_kill_process", 0)

    def vacuous(self, checks: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """The invariants (of ``checks``) whose guarded branches no run reached, with them."""
        out = {}
        for name in checks:
            base = name.split(":", 1)[0]
            if base in PRECONDITIONS and self.runs and not self.preconditions.get(base):
                out[name] = (PRECONDITIONS[base][0],)
                continue
            guarded = GUARDS.get(base, ())
            if guarded and not any(self.branches.get(b) for b in guarded):
                out[name] = guarded
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "points": dict(sorted(self.points.items())),
                "branches": {b: self.branches[b] for b in BRANCHES if self.branches.get(b)},
                "oom_invocations": self.oom_invocations, "kills": self.kills,
                "preconditions": dict(sorted(self.preconditions.items()))}
