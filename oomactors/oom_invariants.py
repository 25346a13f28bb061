"""The OOM killer's own rules, as invariant checkers: the race catalogue's.

Registered by name in :data:`oomactors.invariants.INVARIANTS` and documented, each with
the kernel rule it encodes, in the :mod:`oomactors.invariants` docstring:
``single_pending_victim``, ``no_unnecessary_kill``, ``victim_exit_bound[:BOUND]``,
``alloc_progress_bound[:BOUND]``, ``no_reap_during_exit``, ``no_fault_after_reap`` and
``no_memcg_oom_by_dying_task``.  Records are
``(t, event_id, cpu, pid, *fields)``; a checker also reads the machine at the moment of
the event (who is a victim, which mm has MMF_OOM_SKIP, what the zones hold).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .events import EVENT_ID, EVENTS

if TYPE_CHECKING:  # pragma: no cover
    from .invariants import InvariantViolation
    from .machine import Machine


def violation(name: str, msg: str, rec: tuple) -> "InvariantViolation":
    # imported here: oomactors.invariants imports this module to register the checkers
    from .invariants import violation as make
    return make(name, msg, rec)


_F = {kind.name: kind.fields for kind in EVENTS}


def _field(event: str, name: str) -> int:
    """Index of a named field in a record of ``event`` (after t, id, cpu, pid)."""
    return 4 + _F[event].index(name)


_KILL = EVENT_ID["sim:oom_kill"]
_OOM_ENTER = EVENT_ID["sim:out_of_memory_enter"]
_OOM_RETURN = EVENT_ID["sim:out_of_memory_return"]
_MARK = EVENT_ID["oom:mark_victim"]
_RUN_END = EVENT_ID["sim:run_end"]
_SLOW_ENTER = EVENT_ID["sim:slowpath_enter"]
_SLOW_EXIT = EVENT_ID["sim:slowpath_exit"]
_EXIT = EVENT_ID["sched:sched_process_exit"]
_SIGNAL = EVENT_ID["signal:signal_generate"]
_KILL_CUR = _field("sim:oom_kill", "cur_pid")
_KILL_MSG = _field("sim:oom_kill", "message")
_KILL_COMM = _field("sim:oom_kill", "comm")
_KILL_OOM_MEMCG = _field("sim:oom_kill", "oom_memcg")
_ALLOCATING_TASK = "Out of memory (oom_kill_allocating_task)"


def parse_bound(bound: str) -> Any:
    """A checker's time bound (``"2s"``, ``"500ms"``, ``"40 jiffies"``); InputError if bad."""
    from .errors import InputError
    from .units import parse_duration
    try:
        d = parse_duration(bound)
    except ValueError as e:
        raise InputError(f"invariant bound {bound!r}: {e}") from None
    if not (d.ns or d.jiffies):
        raise InputError(f"invariant bound {bound!r}: must be greater than 0")
    return d


def _oom_scan(m: "Machine", cur_pid: int, memcg_path: str) -> list:
    """The processes oom_evaluate_task would look at for this OOM: a memcg OOM's subtree, or
    every killable process that is cpuset/mempolicy-eligible for a global one."""
    from .kernel.memcontrol import mem_cgroup_scan_tasks
    from .kernel.oom_kill import OomControl, oom_cpuset_eligible, oom_unkillable_task
    if memcg_path:
        return [p for p in mem_cgroup_scan_tasks(m, m.memcgs[memcg_path]) if not oom_unkillable_task(p)]
    cur = m.tasks.get(cur_pid)
    alloc = m.oom_alloc.get(cur_pid)
    oc = alloc[0] if alloc is not None else OomControl([], None, None, 0, 0)  # #PF: gfp 0
    return [p for p in m.processes() if not oom_unkillable_task(p)
            and (cur is None or oom_cpuset_eligible(m, p, oc, cur))]


class SinglePendingVictim:
    """One OOM victim at a time: no new victim while an earlier one is still pending."""

    invariant = "single_pending_victim"

    def __init__(self) -> None:
        self.killing: dict[int, set[int]] = {}      # pid in out_of_memory -> mm ids its kill hit
        self.killed: dict[int, tuple[int, int, str]] = {}  # mm id -> (t, pid, comm) of its kill

    def __call__(self, m: "Machine", rec: tuple) -> None:
        eid = rec[1]
        if eid == _OOM_ENTER:
            self.killing[rec[3]] = set()
        elif eid == _OOM_RETURN:
            self.killing.pop(rec[3], None)
        elif eid == _KILL:
            self._kill(m, rec)

    def _kill(self, m: "Machine", rec: tuple) -> None:
        from .kernel.task import MMF_OOM_SKIP
        victim = m.tasks[rec[3]]
        mm = victim.mm
        cur_pid = rec[_KILL_CUR]
        this = self.killing.setdefault(cur_pid, set())
        if mm is None:  # pragma: no cover - __oom_kill_process only kills a task with an mm
            return
        earlier = self.killed.get(mm.id)
        again = earlier is not None and mm.id not in this
        this.add(mm.id)
        self.killed[mm.id] = (rec[0], rec[3], victim.comm)
        if rec[_KILL_MSG] == _ALLOCATING_TASK:
            # oom_kill_allocating_task kills current without a scan and without the OOM
            # exclusion rules (the sysctl's intent): a reaped victim that allocates again is
            # killed again
            return
        if again:
            raise violation(self.invariant,
                            f"t={rec[0]}: pid {rec[3]} ({victim.comm}) killed by pid {cur_pid}, but its mm "
                            f"was already killed at t={earlier[0]} (pid {earlier[1]} {earlier[2]}): a "
                            f"second kill decision for one victim", rec)
        for p in _oom_scan(m, cur_pid, rec[_KILL_OOM_MEMCG]):
            om = p.signal.oom_mm
            if om is None or om.flags & MMF_OOM_SKIP or om.id in this:
                continue
            since = self.killed.get(om.id)
            when = f" (killed at t={since[0]})" if since is not None else ""
            scope = f"memcg {rec[_KILL_OOM_MEMCG]}" if rec[_KILL_OOM_MEMCG] else "a global OOM"
            raise violation(self.invariant,
                            f"t={rec[0]}: pid {rec[3]} ({victim.comm}) killed in {scope} by pid {cur_pid} "
                            f"while victim pid {p.pid} ({p.comm}){when} is still pending: its mm has "
                            f"no MMF_OOM_SKIP", rec)


class NoUnnecessaryKill:
    """No OOM kill while the allocation's last-minute check would have succeeded: the
    last attempt at the HIGH watermark (a global OOM) or the memcg's margin (a memcg OOM)."""

    invariant = "no_unnecessary_kill"

    def __init__(self) -> None:
        self.found: dict[int, str] = {}   # pid in out_of_memory -> the zone that had room

    def __call__(self, m: "Machine", rec: tuple) -> None:
        eid = rec[1]
        if eid == _OOM_ENTER:
            alloc = m.oom_alloc.get(rec[3])
            charge = m.memcg_oom_charge.get(rec[3])
            room = (_high_wmark_room(m, m.tasks[rec[3]], *alloc) if alloc is not None
                    else _memcg_room(*charge) if charge is not None else None)
            if room is not None:
                self.found[rec[3]] = f"{room} at t={rec[0]}"
            else:
                self.found.pop(rec[3], None)
        elif eid == _OOM_RETURN:
            self.found.pop(rec[3], None)
        elif eid == _KILL:
            room = self.found.get(rec[_KILL_CUR])
            if room is not None:
                raise violation(self.invariant,
                                f"t={rec[0]}: pid {rec[3]} ({rec[5]}) killed by pid {rec[_KILL_CUR]} while "
                                f"{room} ({'the memcg margin check' if room.startswith('memcg') else 'the last attempt at the HIGH watermark'} would have succeeded)",
                                rec)


def _memcg_room(memcg: Any, nr: int) -> str | None:
    """What mem_cgroup_out_of_memory's last-minute margin check (5.9) would find now: room
    below the limit for the charge, or None."""
    from .kernel.memcontrol import mem_cgroup_margin
    margin = mem_cgroup_margin(memcg)
    if margin >= nr:
        return f"memcg {memcg.path} had a margin of {margin} pages below its limit for {nr} pages"
    return None


def _high_wmark_room(m: "Machine", cur: Any, oc: Any, ac: Any, nr: int) -> str | None:
    """What __alloc_pages_may_oom's last get_page_from_freelist (HIGH watermark, cpuset
    enforced, no reclaim) would find now: the first zone that passes, or None."""
    from .kernel import gfp as G
    from .kernel.page_alloc import (ALLOC_CPUSET, ALLOC_WMARK_HIGH, __cpuset_zone_allowed,
                                    zone_watermark_fast)
    from .kernel.mempolicy import policy_nodemask
    gfp = (oc.gfp_mask | G.__GFP_HARDWALL) & ~G.__GFP_DIRECT_RECLAIM
    flags = ALLOC_WMARK_HIGH | ALLOC_CPUSET
    nm = ac.nodemask
    if nm is not None and cur.mempolicy is not None:
        # the request's nodemask is the MPOL_BIND policy's as it was when the slow path began;
        # a cpuset update rebinds the policy: where the task may allocate is its policy now
        nm = policy_nodemask(m, cur, oc.gfp_mask, cur.mempolicy)
    hz = ac.highest_zoneidx
    for z in ac.zonelist:
        if z.idx > hz or (nm is not None and z.node.nid not in nm):
            continue
        if m.cpusets_enabled and not __cpuset_zone_allowed(cur, z, gfp):
            continue
        if zone_watermark_fast(z, oc.order, z.high_wmark, hz, flags, nr):
            return (f"{z} had {z.vm_free} free pages, HIGH watermark {z.high_wmark} + lowmem reserve "
                    f"{z.lowmem_reserve[hz]} for {nr} x order-{oc.order}")
    return None


class _Deadlines:
    """Things that must end within ``bound`` of their start; ``expired`` finds the late ones.
    Subclasses say what starts and ends a thing, and what a late one means."""

    invariant = ""
    default_bound = "10s"

    def __init__(self, bound: str | None = None) -> None:
        # a checker with its own bound is named NAME:BOUND (what explore and reproducers record)
        if bound is not None:
            self.invariant = f"{type(self).invariant}:{bound}"
        self.bound_spec = parse_bound(self.default_bound if bound is None else bound)
        self.bound = 0                      # jiffies, known at the first event
        self.open: dict[Any, tuple[int, str]] = {}   # key -> (start, description)
        self.deadline: int | None = None

    def start(self, key: Any, t: int, what: str) -> None:
        if key not in self.open:
            self.open[key] = (t, what)
            if self.deadline is None or t + self.bound < self.deadline:
                self.deadline = t + self.bound

    def done(self, m: "Machine", key: Any, started: int) -> bool:
        return False

    def check(self, m: "Machine", rec: tuple) -> None:
        if not self.bound:
            from .units import to_jiffies
            self.bound = max(1, to_jiffies(self.bound_spec, m.hz))
        if rec[1] == _RUN_END:
            self.sweep(m, rec, stuck=rec[4] == "deadlock")
        elif self.deadline is not None and rec[0] > self.deadline:
            self.sweep(m, rec, stuck=False)

    def sweep(self, m: "Machine", rec: tuple, stuck: bool) -> None:
        now = rec[0]
        for key, (t0, what) in list(self.open.items()):
            if self.done(m, key, t0):
                del self.open[key]
            elif stuck or now - t0 > self.bound:
                why = "the run ended in a deadlock" if stuck and now - t0 <= self.bound else \
                    f"{(now - t0) / m.hz:.3f}s > bound {self.bound / m.hz:g}s"
                raise violation(self.invariant, f"t={now}: {what} since t={t0}: {why}", rec)
        self.deadline = min((t0 + self.bound for t0, _ in self.open.values()), default=None)


class VictimExitBound(_Deadlines):
    """Every OOM victim exits or gets MMF_OOM_SKIP within ``bound`` (default 10 s)."""

    invariant = "victim_exit_bound"
    default_bound = "10s"

    def __call__(self, m: "Machine", rec: tuple) -> None:
        if rec[1] == _MARK:
            sig = m.tasks[rec[3]].signal
            mm = sig.oom_mm
            if mm is not None:
                self.start((sig, mm), rec[0], f"victim pid {rec[3]} ({rec[4]}) has neither exited nor "
                                               f"got MMF_OOM_SKIP")
        self.check(m, rec)

    def done(self, m: "Machine", key: Any, started: int) -> bool:
        from .kernel.task import MMF_OOM_SKIP
        sig, mm = key
        return bool(mm.flags & MMF_OOM_SKIP) or not sig.live_threads()


class AllocProgressBound(_Deadlines):
    """Every page-allocator request that enters the slow path completes, fails, or has its
    task killed within ``bound`` (default 30 s): no hang, no livelock."""

    invariant = "alloc_progress_bound"
    default_bound = "30s"

    def __call__(self, m: "Machine", rec: tuple) -> None:
        eid = rec[1]
        if eid == _SLOW_ENTER:
            self.open.pop(rec[3], None)   # a new request of the same task (the last one ended)
            self.start(rec[3], rec[0], f"pid {rec[3]} ({m.tasks[rec[3]].comm}): an order-{rec[4]} "
                                       f"{rec[5]} request is still in the page allocator")
        elif eid in (_SLOW_EXIT, _EXIT):
            self.open.pop(rec[3], None)
        elif eid == _SIGNAL and self.open:
            # a SIGKILL ends the wait (the task is killed); an ignored or handled SIGTERM
            # does not: the request still has to finish
            sig = m.tasks[rec[3]].signal
            for pid in [p for p in self.open if m.tasks[p].signal is sig and m.tasks[p].sigkill]:
                del self.open[pid]
        self.check(m, rec)


class NoReapDuringExit:
    """The oom_reaper does not unmap a victim's memory while the victim runs its own exit."""

    invariant = "no_reap_during_exit"
    _START = EVENT_ID["oom:start_task_reaping"]
    _FINISH = EVENT_ID["oom:finish_task_reaping"]

    def __init__(self) -> None:
        self.reaping: dict[int, tuple[Any, int]] = {}   # victim pid -> (its signal, start)

    # an era without OOM_REAPER_DELAY makes no such promise (5.10 reaps at once); a search
    # none of whose runs could break it is vacuous (oomactors/coverage.py)
    needs = "a kernel profile with OOM_REAPER_DELAY (reaper_delay_s > 0; this one reaps at once)"

    @staticmethod
    def applies(m: "Machine") -> bool:
        return bool(m.profile.reaper_delay_s)

    def __call__(self, m: "Machine", rec: tuple) -> None:
        if not self.applies(m):
            return
        eid = rec[1]
        if eid == self._START:
            self.reaping[rec[3]] = (m.tasks[rec[3]].signal, rec[0])
        elif eid == self._FINISH:
            self.reaping.pop(rec[3], None)
            return
        if not self.reaping:
            return
        from .kernel.task import PF_EXITING
        for pid, (sig, t0) in self.reaping.items():
            for t in sig.threads:
                if t.flags & PF_EXITING and not t.dead:
                    raise violation(self.invariant,
                                    f"t={rec[0]}: the oom_reaper is unmapping the memory of victim pid "
                                    f"{pid} ({t.comm}) (since t={t0}) while pid {t.pid} runs its own "
                                    f"exit: its exit path (the robust futex list) reads that memory", rec)


class NoFaultAfterReap:
    """No anonymous fault maps a page into an mm the oom_reaper has begun to unmap."""

    invariant = "no_fault_after_reap"
    _FAULT = EVENT_ID["sim:fault_unstable"]
    _RESULT = _field("sim:fault_unstable", "result")

    def __call__(self, m: "Machine", rec: tuple) -> None:
        if rec[1] == self._FAULT and rec[self._RESULT] == "mapped":
            raise violation(self.invariant,
                            f"t={rec[0]}: pid {rec[3]} ({rec[4]}) mapped {rec[5]} new anonymous pages into "
                            f"its mm after the oom_reaper began to unmap it (MMF_UNSTABLE): zero-filled "
                            f"pages where its data was, which its threads still running read back "
                            f"(a write(2) from that memory puts zeros in a file)", rec)


class NoMemcgOomByDyingTask:
    """A task already dying when it enters the memcg OOM killer neither kills nor finds
    "no killable processes": it lets its charge through instead."""

    invariant = "no_memcg_oom_by_dying_task"
    _NO_KILLABLE = EVENT_ID["sim:no_killable"]

    def __init__(self) -> None:
        self.dying: dict[int, int] = {}   # pid in a memcg out_of_memory, dying at entry -> t

    def __call__(self, m: "Machine", rec: tuple) -> None:
        eid = rec[1]
        if eid == _OOM_ENTER:
            if rec[3] in m.memcg_oom_charge:
                from .kernel.memcontrol import should_force_charge
                if should_force_charge(m.tasks[rec[3]]):
                    self.dying[rec[3]] = rec[0]
        elif eid == _OOM_RETURN:
            self.dying.pop(rec[3], None)
        elif self.dying and eid in (_KILL, self._NO_KILLABLE):
            cur = rec[_KILL_CUR] if eid == _KILL else rec[3]
            if cur in self.dying:
                what = f"killed pid {rec[3]} ({rec[_KILL_COMM]})" if eid == _KILL else \
                    'found "no killable processes"'
                raise violation(self.invariant,
                                f"t={rec[0]}: pid {cur} ({m.tasks[cur].comm}) {what} in a memcg OOM it "
                                f"entered while dying (SIGKILLed, an OOM victim or exiting) at "
                                f"t={self.dying[cur]}: its charge should have gone through", rec)
