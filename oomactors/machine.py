"""The simulated machine: nodes, zones, CPUs, swap, tasks and the OOM killer's globals.

It owns page ownership bookkeeping (who holds each page) and the event stream.  Kernel
functions in :mod:`oomactors.kernel` take the machine and the current task as their
first arguments and keep their kernel names.
"""

from __future__ import annotations

from collections import Counter, deque

from typing import Any, Callable

from . import interrupt as _interrupt
from .config import Config
from .errors import SimulationPanic
from .events import EVENT_ID
from .kernel.ratelimit import DEFAULT_RATELIMIT_BURST, DEFAULT_RATELIMIT_INTERVAL_S, RatelimitState
from .kernel import page_alloc
from .kernel.cpuset import build_cpusets
from .kernel.fork import alloc_pid, pid_max_default, set_max_threads
from .kernel.memcontrol import build_memcgs
from .kernel.util import init_overcommit
from .kernel.mmzone import MAX_NR_ZONES, ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, Zone
from .kernel.oom_kill_24 import OomState24
from .kernel.profiles import PROFILES
from .psi import Psi
from .kernel.task import MM, PAGE_SIZE, Task
from .machine_boot import boot_charge, build_memory
from .sched import Sched
from .units import to_jiffies


class IODevice:
    """A disk with a bandwidth: requests queue behind each other."""

    def __init__(self, bandwidth: int, hz: int) -> None:
        self.bandwidth = bandwidth
        self.hz = hz
        self.busy_until = 0

    def submit(self, now: int, pages: int) -> int:
        """Queue ``pages`` of IO; returns the jiffy it completes."""
        start = max(now, self.busy_until)
        duration = max(1, -(-pages * PAGE_SIZE * self.hz // self.bandwidth))
        self.busy_until = start + duration
        return self.busy_until


def _appends_only(sinks: list) -> bool:
    """Every sink is the append of a plain list or deque (a run's kept records): it only
    collects, so a run of identical events may be handed over in one go."""
    for sink in sinks:
        if type(sink) is not _BUILTIN or sink.__name__ != "append" or type(sink.__self__) not in (list, deque):
            return False
    return True


_BUILTIN = type([].append)


def _run_sink(sinks: list) -> Callable[[list, int], None] | None:
    """One call ``run(records, count)`` that hands ``records`` cycled ``count`` times to
    ``sinks`` as as many writes would, when nothing between two of them can observe the
    machine: sinks that only collect into lists or deques (extended at once), or the trace
    writer alone (:class:`~oomactors.trace.stream.TraceWriter`'s ``write.run``: packed
    once).  Else None."""
    if _appends_only(sinks):
        def extend(records: list, count: int) -> None:
            for sink in sinks:
                sink.__self__.extend(records * count)
        return extend
    return getattr(sinks[0], "run", None) if len(sinks) == 1 else None


_SWITCH = "sched:sched_switch"
_SWITCH_ID = EVENT_ID[_SWITCH]


class Machine:
    def __init__(self, cfg: Config, *, backend: str = "trio", policy: Any = None) -> None:
        self.cfg = cfg
        k, mc = cfg.kernel, cfg.machine
        self.hz = k.hz
        # events flow to the sinks as they happen; nothing keeps them unless a sink does
        # (sim.run(keep_records=True) adds a list's append)
        self.sinks: list[Callable[[tuple], None]] = []
        self.nevents = 0
        self.checkers: list[Callable[["Machine", tuple], None]] = []
        # event id -> the checkers that read it (a checker's ``event_ids``, when it has
        # them, names the only events it reads); filled as events come, emptied by
        # checkers_changed()
        self._checks_for: dict[int, tuple[Callable[["Machine", tuple], None], ...]] = {}
        # [kernel.fixes]: the race catalogue's switches (sim.build lays run overrides on top)
        self.fixes: dict[str, bool] = k.fixes.model_dump()
        self.profile = PROFILES[k.profile]
        self.oom24 = OomState24()
        self.panic_on_oom = k.panic_on_oom
        self.oom_kill_allocating_task = k.oom_kill_allocating_task
        self.oom_dump_tasks = k.oom_dump_tasks
        self.pcp_high = k.pcp_high
        self.pcp_batch = k.pcp_batch
        self.percpu_drift = k.percpu_drift
        # cpusets (kernel/cgroup/cpuset.c): declaring any turns the cpusets_enabled key on
        self.cpusets = build_cpusets(cfg)
        self.cpusets_enabled = bool(self.cpusets)
        self.mems_allowed_seq: dict[int, int] = {}  # pid -> task->mems_allowed_seq
        self._build_memory(cfg)
        self.sched = Sched(self.hz, mc.cpus, len(self.zones), to_jiffies(k.time_slice, self.hz),
                           backend, self.emit_on, emit_switch=self.emit_switch)
        # swap and disks
        self.total_swap_pages = mc.swap // PAGE_SIZE
        self.swap_free = self.total_swap_pages
        # vm.overcommit_* sysctls, the reserves and Committed_AS (kernel/util.py)
        init_overcommit(self, k)
        self.swap_io = IODevice(mc.swap_bandwidth, self.hz)
        self.writeback_io = IODevice(mc.writeback_bandwidth, self.hz)
        # memory cgroups: the root and every configured one, by path (kernel/memcontrol.py)
        self.root_mem_cgroup, self.memcgs = build_memcgs(cfg, len(self.zones), self.total_swap_pages)
        # pressure stall information of the system and of every memcg (oomactors/psi.py)
        self.psi = Psi(self.hz, mc.cpus, self.root_mem_cgroup, self.memcgs, self.sched.clock)
        self.sched.psi = self.psi
        # tasks
        self.tasks: dict[int, Task] = {}
        self.proc_list: list[Task] = []
        self.mms: set[MM] = set()
        # pids and the task-count limits (kernel/fork.py): kernel.pid_max, kernel.threads_max
        # and the RLIMIT_NPROC init hands down (max_threads / 2)
        self.next_pid = 1
        self.pids_in_use: set[int] = set()
        self.nr_threads = 0
        self.user_tasks: dict[int, int] = {}
        self.pid_max = pid_max_default(mc.cpus) if k.pid_max == "auto" else k.pid_max
        self.max_threads = (set_max_threads(self.totalram_pages, PAGE_SIZE) if k.threads_max == "auto"
                            else k.threads_max)
        self.nproc_rlimit = self.max_threads // 2
        # the OOM killer's globals
        self.oom_lock_owner: Task | None = None
        self.oom_lock_holders = 0
        self.oom_lock_waiters: list[Any] = []  # mutex_lock_killable sleepers, FIFO
        self.oom_victims = 0
        self.oom_killer_disabled = False
        self.oom_notifiers: list[Callable[["Machine"], int]] = []
        self.oom_reaper_list: list[Task] = []
        self.oom_reaper_wait = self.sched.clock.waiter()
        # DEFINE_RATELIMIT_STATE(oom_rs, 5 s, 10) and warn_alloc's nopage_rs (10 s, 1)
        self.oom_rs = RatelimitState(DEFAULT_RATELIMIT_INTERVAL_S * self.hz, DEFAULT_RATELIMIT_BURST)
        self.nopage_rs = RatelimitState(10 * self.hz, 1)
        # pid -> (OomControl, AllocContext, nr) of the page-allocator OOM that pid is in
        # (set by __alloc_pages_may_oom around out_of_memory; read by invariant checkers)
        self.oom_alloc: dict[int, tuple] = {}
        self.memcg_oom_charge: dict[int, tuple] = {}  # pid -> (memcg, pages) in a memcg OOM
        self.panicked: str | None = None
        self.stopped = False  # set by the runner once the run has ended
        self.interrupted = False  # Ctrl-C (oomactors.interrupt) ended the run
        self.sched.clock.on_interrupt = self._interrupted
        self._clock = self.sched.clock
        self.vmstat: dict[str, int] = dict.fromkeys(
            ("oom_kill", "oom_invocations", "oom_lock_contended", "allocstall", "pgscan", "pgsteal",
             "compact_stall", "compact_success", "compact_fail", "alloc_fail", "warn_alloc_suppressed",
             "oom_scan_ns", "pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct",
             "workingset_refault_file", "pswpout",
             # refaults, swap-in and LRU aging (kernel/workingset.py, lru.py, memory.py)
             "workingset_refault_anon", "workingset_activate_anon", "workingset_activate_file",
             "workingset_restore_anon", "workingset_restore_file", "pswpin", "pgmajfault",
             "pgactivate", "pgdeactivate", "pgscan_direct_throttle"), 0)
        # shadow entries by owner, each node's nonresident_age, memory.stat refaults by memcg
        # (kernel/workingset.py, kernel/lru.py)
        self.workingset_shadows: dict[Any, list[list[int]]] = {}
        self.nonresident_age = [0] * len(self.nodes)
        self.memcg_refaults: dict[Any, list[int]] = {}
        # kernel branches that emit no event of their own, for coverage (oomactors/coverage.py)
        self.branches: Counter[str] = Counter()
        # the allocator's first attempt's struct alloc_context, by preferred node and gfp
        # mask (kernel/page_alloc_slow.py first_attempt)
        self.fast_acs: list[dict[int, Any]] = [{} for _ in self.nodes]
        # set by the runner (oomactors.sim)
        self.seed = 0
        self.rng: Any = None
        self.spawn: Callable[..., None] = lambda *a: None
        self.cpu_node: Callable[[int], int] = lambda cpu: 0
        self.user_procs_alive = 0
        self.finished = False
        if policy is None:
            from policies.linux import Linux
            policy = Linux()
        self.policy = policy
        self.daemon: Any = None  # a userspace OOM killer (policies.api.Daemon), set by the runner

    # --- building (machine_boot.py) ---------------------------------------------------
    _build_memory = build_memory
    _boot_charge = boot_charge

    def node_present_pages(self, nid: int) -> int:
        return sum(z.present for z in self.nodes[nid].zones)

    @staticmethod
    def nodelist(nodes: frozenset[int]) -> str:
        """%*pbl: ranges of node ids."""
        ids = sorted(nodes)
        out, i = [], 0
        while i < len(ids):
            j = i
            while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
                j += 1
            out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
            i = j + 1
        return ",".join(out)

    # --- events --------------------------------------------------------------------
    @property
    def now(self) -> int:
        return self.sched.clock.now

    def emit_on(self, name: str, cpu: int, pid: int, *fields: Any) -> None:
        """Record one event on ``cpu``: every sink gets it, then the checkers that read it.
        :meth:`emit` is the same funnel with the current task's CPU (its body repeats
        this one's few lines: two calls per event were measurable on the hot path)."""
        if (self.panicked is not None or self.stopped or _interrupt._requested) and self._halted(name):
            return
        rec = (self._clock.now, EVENT_ID[name], cpu, pid, *fields)
        self.nevents += 1
        for sink in self.sinks:
            sink(rec)
        if self.checkers and self._checks_for.get(rec[1], True):  # () when none reads it
            self._check(rec)

    def emit(self, name: str, pid: int, *fields: Any) -> None:
        if (self.panicked is not None or self.stopped or _interrupt._requested) and self._halted(name):
            return
        cur = self.sched.current
        rec = (self._clock.now, EVENT_ID[name],
               cur.cpu.id if cur is not None and cur.cpu is not None else -1, pid, *fields)
        self.nevents += 1
        for sink in self.sinks:
            sink(rec)
        if self.checkers and self._checks_for.get(rec[1], True):  # () when none reads it
            self._check(rec)

    def emit_switch(self, cpu: int, prev_pid: int, next_pid: int, comm: str) -> None:
        """``sched:sched_switch`` on ``cpu`` (the commonest event: :meth:`emit_on`'s few lines
        once more, with its fields as arguments instead of a tuple of them)."""
        if (self.panicked is not None or self.stopped or _interrupt._requested) and self._halted(_SWITCH):
            return
        rec = (self._clock.now, _SWITCH_ID, cpu, next_pid, prev_pid, next_pid, comm)
        self.nevents += 1
        for sink in self.sinks:
            sink(rec)
        if self.checkers and self._checks_for.get(_SWITCH_ID, True):  # () when none reads it
            self._check(rec)

    def emit_charged(self, cur: Task, ns: int, n: int, name: str, pid: int, *fields: Any) -> None:
        """``n`` times: charge ``ns`` of CPU to ``cur`` (the current task; the caller made
        sure all ``n`` fit in the jiffy begun) and :meth:`emit` the same event -- one
        frame for a run of identical events (direct reclaim's empty passes), with the same
        time charged and the same state at each event as ``n`` separate calls."""
        now = self.sched.current  # the event's CPU, as emit finds it
        rec = (self._clock.now, EVENT_ID[name],
               now.cpu.id if now is not None and now.cpu is not None else -1, pid, *fields)
        sinks = self.sinks
        checks = self.checkers and self._checks_for.get(rec[1], True)
        run = None if checks or self.panicked is not None or self.stopped or _interrupt._requested \
            else _run_sink(sinks)
        if run is not None:  # nothing can see the state between two of the events
            cur.cpu_ns += n * ns
            cur.cpu_debt_ns += n * ns
            self.nevents += n
            run([rec], n)
            return
        for _ in range(n):
            cur.cpu_ns += ns
            cur.cpu_debt_ns += ns
            if self.panicked is not None or self.stopped or _interrupt._requested:
                self.emit(name, pid, *fields)  # the run is ending: emit's own way
                continue
            self.nevents += 1
            for sink in sinks:
                sink(rec)
            if checks:
                self._check(rec)

    def fast_switches(self) -> None:
        """At a run's start: a sleep's sched_switch records may go straight to the run's
        sink (:attr:`Sched.switch_sink`) when it is the only one and no checker reads them."""
        self.sched.switch_sink = (
            self.sinks[0] if len(self.sinks) == 1 and self.panicked is None and not self.stopped
            and not self._checkers_of(_SWITCH_ID) else None)

    def halt_switches(self) -> None:
        """The machine halts (panic, an invariant broke, Ctrl-C, the run's end): sched_switch
        goes through :meth:`emit_switch` again, and the records the sink took directly
        count among :attr:`nevents`."""
        sched = self.sched
        sched.switch_sink = None
        self.nevents += sched.switches
        sched.switches = 0

    def _halted(self, name: str) -> bool:
        """The machine panicked, the run ended or Ctrl-C was asked for: True if the event
        ``name`` is not recorded (only ``sim:run_end`` still is)."""
        if name == "sim:run_end":
            return False
        if self.panicked is not None:
            # panic() stopped every CPU (smp_send_stop): whatever an actor still does in
            # the same instant never happened.  It unwinds here, at its first event.
            raise SimulationPanic(self.panicked)
        if not self.stopped:  # Ctrl-C was asked for: the run ends now, before this event
            self.sched.clock.interrupt()
        return True  # the run is over: actors unwinding at teardown did nothing simulated

    def _check(self, rec: tuple) -> None:
        checks = self._checks_for.get(rec[1])
        if checks is None:
            checks = self._checks_for[rec[1]] = self._checkers_of(rec[1])
        try:
            for check in checks:
                check(self, rec)
        except BaseException:
            # an invariant broke: the run ends at this event; actors unwinding from here
            # must not advance the clock or record anything more
            self.stopped = True
            self.halt_switches()
            self.sched.clock.ended = "invariant"
            raise

    def _checkers_of(self, event_id: int) -> tuple:
        """The checkers that read events of ``event_id`` (those without ``event_ids`` read all)."""
        return tuple(c for c in self.checkers
                     if (ids := getattr(c, "event_ids", None)) is None or event_id in ids)

    def checkers_changed(self) -> None:
        """Call after changing :attr:`checkers` (sim.run does, before the run starts)."""
        self._checks_for.clear()

    def _interrupted(self) -> None:
        self.interrupted = True
        self.stopped = True
        self.halt_switches()

    def panic(self, message: str, cur: Task | None) -> None:
        self.emit("sim:panic", cur.pid if cur else -1, message)
        self.panicked = message  # from here on the machine is halted (see emit_on)
        self.halt_switches()
        raise SimulationPanic(message)

    # --- page ownership -------------------------------------------------------------
    def charge(self, zone: Zone, kind: str, mm: MM | None, n: int, pt: int = 0) -> None:
        """Pages that just left the free lists now belong to ``kind`` (of ``mm``)."""
        g = zone.gid
        if n:
            zone.nr[kind] += n
            if kind == "anon":
                mm.anon[g] += n
                lru = zone.anon_lru
                lru.pop(mm, None)  # most recently used goes to the tail
                lru[mm] = None
            elif kind == "shmem":
                mm.shmem[g] += n
                lru = zone.shmem_lru
                lru.pop(mm, None)
                lru[mm] = None
            elif kind == "file":
                zone.file_owner[mm] = zone.file_owner.get(mm, 0) + n
                if mm is not None:
                    mm.file[g] += n
                lru = zone.file_lru
                lru.pop(mm, None)
                lru[mm] = None
        if pt:
            zone.nr["pagetables"] += pt
            mm.pgtables[g] += pt

    def uncharge_file(self, zone: Zone, owner: MM | None, k: int) -> None:
        g = zone.gid
        left = zone.file_owner[owner] - k
        zone.nr["file"] -= k
        if owner is not None:
            owner.file[g] -= k
        if left:
            zone.file_owner[owner] = left
        else:
            del zone.file_owner[owner]
            zone.file_lru.pop(owner, None)

    def free_to_buddy(self, cur: Task | None, zone: Zone, n: int) -> None:
        page_alloc.free_pages(self, cur.cpu if cur is not None else None, zone, n)

    def mod_free(self, zone: Zone, cpu: Any, delta: int) -> None:
        """NR_FREE_PAGES moves on a per-CPU counter and is folded past the threshold."""
        if cpu is None:
            zone.vm_free += delta
            return
        g = zone.gid
        d = cpu.vm_diff[g] + delta
        if d > self.percpu_drift or d < -self.percpu_drift:
            zone.vm_free += d
            d = 0
        cpu.vm_diff[g] = d

    def fold_vmstat(self, cpu: Any) -> None:
        """vmstat_update: fold this CPU's drift into the zone counters."""
        for zone in self.zones:
            d = cpu.vm_diff[zone.gid]
            if d:
                zone.vm_free += d
                cpu.vm_diff[zone.gid] = 0

    # --- tasks -----------------------------------------------------------------------
    def processes(self) -> list[Task]:
        """for_each_process: thread-group leaders, in creation order."""
        return self.proc_list

    def alloc_pid(self) -> int:
        """A free pid (kernel/fork.py alloc_pid), or 0 when every number is taken."""
        return alloc_pid(self)

    # --- oom_lock ----------------------------------------------------------------------
    def oom_lock_trylock(self, cur: Task, quiet: bool = False) -> bool:
        if self.oom_lock_owner is None or not self.fixes.get("oom_lock", True):
            self.oom_lock_owner = cur
            self.oom_lock_holders += 1
            self.emit("sim:oom_lock_acquired", cur.pid)
            return True
        if not quiet:
            self.vmstat["oom_lock_contended"] += 1
            self.emit("sim:oom_lock_contended", cur.pid)
        return False

    async def oom_lock_lock(self, cur: Task, point: str = "memcg.oom_lock", *, killable: bool = True) -> bool:
        """mutex_lock_killable(&oom_lock), as mem_cgroup_out_of_memory takes it: sleep until
        the lock is free.  False if a fatal signal ended the wait (-EINTR).  Without
        ``killable``, mutex_lock: a fatal signal neither ends nor wakes the wait.

        An unlock wakes the first sleeper, which then competes for the lock like any
        trylocker (no mutex hand-off is modelled)."""
        contended = False
        while True:
            if self.oom_lock_trylock(cur, quiet=contended):
                return True
            contended = True
            if killable and cur.fatal_signal_pending():
                return False
            w = self.sched.clock.waiter()
            self.oom_lock_waiters.append(w)
            if killable:
                cur.wake_on_signal = w
            try:
                await self.sched.block_on(cur, w, point)
            finally:
                cur.wake_on_signal = None
                if w in self.oom_lock_waiters:
                    self.oom_lock_waiters.remove(w)

    def oom_lock_unlock(self, cur: Task) -> None:
        self.oom_lock_holders -= 1
        if self.oom_lock_holders == 0:
            self.oom_lock_owner = None
        self.emit("sim:oom_lock_released", cur.pid)
        if self.oom_lock_owner is None and self.oom_lock_waiters:
            self.oom_lock_waiters.pop(0).wake()


assert MAX_NR_ZONES > ZONE_NORMAL > ZONE_DMA32 > ZONE_DMA
