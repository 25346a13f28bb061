"""A plain SimPy model of bench/pressure.py's workload at oomactors' granularity: the
peer our engine is measured against (issue 9's goal: oomactors >= 1.0x this peer).

Written for this benchmark, with no oomactors import; its constants are the model's
(``oomactors.kernel.params``, 5.10's vmscan and page_alloc) copied here.  What it does,
step for step as the model does it:

* the machine and workload: 64 CPUs, 8 GiB RAM, 1 GiB swap (200 MiB/s), 512 MiB page
  cache of which 64 MiB dirty (written back at 100 MiB/s), HZ=250, integer jiffies; the
  same 1,000 tasks and programs (600 daemons, 300 workers, 90 handlers, 10 leaker parents
  forking a child every 8 s that leaks 48 MiB/s until killed);
* scheduling: a SimPy resource per CPU (its queue is the run queue); a waking task goes
  to its last CPU if idle, else to the lowest idle CPU, else queues on its last CPU
  (select_task_rq as the model does it); a 12 ms time slice preempts a task that runs
  on while others wait; a ``sched_switch`` event on every context switch, to and from
  the idle task as well (prev -> swapper/N -> next); CPU time spent in whole jiffies,
  nanosecond debts carried;
* allocation: an mmap commit check per alloc step, 32-page fault chunks at the step's
  rate, the LOW-watermark fast path; the slow path (``__alloc_pages_slowpath``): wake
  kswapd, try at MIN, then rounds of direct reclaim, ``should_reclaim_retry`` (an event
  per zone considered: one zone here), the ``oom_lock`` trylock with a 1-jiffy back-off
  that counts as progress, the HIGH-watermark last attempt, ALLOC_OOM reserves for a
  victim;
* reclaim (``do_try_to_free_pages``, ``balance_pgdat``): priorities DEF_PRIORITY=12 down
  to 0 (kswapd: to 1), each pass (``shrink_node``) scanning ``lru >> priority`` pages
  split between anon and file by swappiness, costing RECLAIM_BASE_NS + scanned *
  SCAN_NS_PER_PAGE of CPU and emitting one event; direct reclaim stops at
  SWAP_CLUSTER_MAX (32) pages and is bracketed by begin/end events; kswapd stops once
  the node is balanced (HIGH), naps HZ/10 before sleeping, gives up after 16 failed
  rounds until some reclaim succeeds; swap-out and kswapd's writeback wait for their IO;
  ``congestion_wait`` when dirty pages dominate what is reclaimable;
* the OOM killer: walks every process, aborts on a pending victim, else kills the
  largest (rss + swap), printing the task table under the lock (the report's printk time
  charged as in the model); an oom_reaper that unmaps a victim, and exit unmapping a
  dying task, ZAP_BATCH (2048) pages at a time, each batch freed, paid for, then a
  scheduling point (``zap_pages``);
* every event packed as a msgpack tuple into a trace file (tracing on, as in our bench).

It leaves out what issue 9's peer left out: PSI, per-CPU page lists, the second zone
(one zone with the node's summed watermarks: ``should_reclaim_retry`` looks at one zone
where the model looks at up to three), memcg and cpuset hooks, mmap_lock, the policy API
and invariant checkers -- and, besides, LRU aging (one list per type, no active/inactive
lists, no workingset refaults), pfmemalloc throttling (never met in this workload) and
the model's periodic snapshots (meminfo, zoneinfo, rss_stat, oom_score) and the OOM
report's extra events.  It is a model of the same work, not of the same kernel: its
numbers only say how fast a plain discrete-event model of that work runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from math import isqrt

import msgpack
import simpy

HZ = 250
JIFFY_NS = 1_000_000_000 // HZ
SLICE = 3                       # 12 ms time slice, in jiffies
PAGE = 4096
MIB = 1 << 20
CHUNK = 32
# oomactors.kernel.params and mm/vmscan.c, mm/page_alloc.c (5.10)
FAULT_NS_PER_PAGE = 600
SCAN_NS_PER_PAGE = 150
RECLAIM_BASE_NS = 20_000
ZAP_NS_PER_PAGE = 250
ZAP_BATCH = 2048                # pages freed between two scheduling points while zapping
FORK_NS = 40_000
SLOWPATH_ROUND_NS = 5_000
OOM_SCAN_NS_PER_TASK = 300
PRINTK_NS_PER_LINE = 50_000
OOM_REPORT_LINES = 60
MAX_RECLAIM_RETRIES = 16
DEF_PRIORITY = 12
SWAP_CLUSTER_MAX = 32
SWAPPINESS = 60
SWAP_BW = 200 * MIB             # bytes per second
WRITEBACK_BW = 100 * MIB

# event ids (the peer's own table) and the oomactors event each stands for
EVENT_NAMES = (
    ("TASK_NEW", "sim:task_new"), ("SWITCH", "sched:sched_switch"), ("STEP", "sim:step"),
    ("VM_ENOUGH", "sim:vm_enough_memory"), ("SLOW_ENTER", "sim:slowpath_enter"),
    ("SLOW_EXIT", "sim:slowpath_exit"), ("DIRECT_BEGIN", "vmscan:mm_vmscan_direct_reclaim_begin"),
    ("DIRECT_END", "vmscan:mm_vmscan_direct_reclaim_end"), ("RECLAIM", "vmscan:mm_vmscan_node_reclaim"),
    ("IO_WAIT", "sim:io_wait"), ("RETRY_ZONE", "oom:reclaim_retry_zone"), ("THROTTLE", "sim:throttle"),
    ("CONTENDED", "sim:oom_lock_contended"), ("LOCK", "sim:oom_lock_acquired"),
    ("UNLOCK", "sim:oom_lock_released"), ("OOM_ENTER", "sim:out_of_memory_enter"),
    ("OOM_RETURN", "sim:out_of_memory_return"), ("OOM_HEADER", "sim:oom_header"), ("KILL", "sim:oom_kill"),
    ("REAPED", "sim:reaper_reaped"), ("FORK", "sched:sched_process_fork"), ("EXIT", "sched:sched_process_exit"),
    ("WAKEUP_KSWAPD", "vmscan:mm_vmscan_wakeup_kswapd"), ("KSWAPD_WAKE", "vmscan:mm_vmscan_kswapd_wake"),
    ("KSWAPD_SLEEP", "vmscan:mm_vmscan_kswapd_sleep"), ("KSWAPD_FAILURES", "sim:kswapd_failures"),
)
(TASK_NEW, SWITCH, STEP, VM_ENOUGH, SLOW_ENTER, SLOW_EXIT, DIRECT_BEGIN, DIRECT_END, RECLAIM, IO_WAIT,
 RETRY_ZONE, THROTTLE, CONTENDED, LOCK, UNLOCK, OOM_ENTER, OOM_RETURN, OOM_HEADER, KILL, REAPED, FORK,
 EXIT, WAKEUP_KSWAPD, KSWAPD_WAKE, KSWAPD_SLEEP, KSWAPD_FAILURES) = range(len(EVENT_NAMES))


class Killed(Exception):
    pass


class Task:
    __slots__ = ("pid", "comm", "cpu", "rss", "swap", "debt", "killed", "victim", "skip",
                 "proc", "sleeping", "alive")

    def __init__(self, pid: int, comm: str, cpu: int, rss: int) -> None:
        self.pid, self.comm, self.cpu, self.rss = pid, comm, cpu, rss
        self.swap = self.debt = 0
        self.killed = self.victim = self.skip = self.sleeping = False
        self.alive = True
        self.proc = None


def watermarks(managed: int) -> tuple[int, int, int]:
    """init_per_zone_wmark_min and __setup_per_zone_wmarks for one zone: min_free_kbytes =
    4 * sqrt(lowmem KiB) clamped to [128, 262144]; low and high a gap above min, the larger
    of min/4 and watermark_scale_factor (10) / 10000 of the zone."""
    min_free_kbytes = min(max(4 * isqrt(managed * (PAGE // 1024)), 128), 262144)
    wmin = min_free_kbytes // (PAGE // 1024)
    gap = max(wmin >> 2, managed * 10 // 10000)
    return wmin, wmin + gap, wmin + 2 * gap


class Peer:
    def __init__(self, duration_s: int, out) -> None:
        self.env = env = simpy.Environment()
        self.duration = duration_s * HZ
        self.ncpus = 64
        self.cpus = [simpy.Resource(env, 1) for _ in range(self.ncpus)]
        self.idle = (1 << self.ncpus) - 1          # a bit per idle CPU
        self.prev = [0] * self.ncpus               # who left the CPU (0: the idle task)
        self.idle_comm = [f"swapper/{c}" for c in range(self.ncpus)]
        self.slice_end = [0] * self.ncpus
        self.total = 8 * 1024 * MIB // PAGE
        self.min_wmark, self.low, self.high = watermarks(self.total)
        self.file = (512 - 64) * MIB // PAGE      # clean page cache
        self.dirty = 64 * MIB // PAGE
        self.writeback = 0
        self.swap_total = self.swap_free = 1024 * MIB // PAGE
        self.swap_busy = self.wb_busy = 0          # the two disks: busy until this jiffy
        self.free = self.total - self.file - self.dirty
        self.anon = 0                              # anon pages on the LRU
        self.tasks: dict[int, Task] = {}
        self.lru: dict[int, Task] = {}             # anon LRU by mm, oldest first
        self.next_pid = 1
        self.oom_lock: Task | None = None
        self.reaper_q = simpy.Store(env)
        self.kswapd_wake = env.event()
        self.kswapd_sleeping = False
        self.kswapd_failures = 0
        self.packer = msgpack.Packer()
        self.out = out
        self.events = 0
        self.kills = 0
        self.oom_calls = 0

    # --- events -------------------------------------------------------------------------
    def emit(self, eid: int, cpu: int, pid: int, *fields) -> None:
        self.events += 1
        self.out.write(self.packer.pack((self.env.now, eid, cpu, pid, *fields)))

    # --- CPUs and time --------------------------------------------------------------------
    def get_cpu(self, t: Task, cpu: int = -1):
        """Be dispatched: on ``cpu`` (a preempted task requeues there), else on the last
        CPU if idle, else the lowest idle CPU, else queued on the last CPU."""
        c = t.cpu if cpu < 0 else cpu
        res = self.cpus[c]
        if cpu < 0 and (res.count or res.queue) and self.idle:
            idle = self.idle
            c = (idle & -idle).bit_length() - 1
            res = self.cpus[c]
        self.idle &= ~(1 << c)
        req = res.request()
        yield req
        t.cpu = c
        self.slice_end[c] = self.env.now + SLICE
        self.emit(SWITCH, c, t.pid, self.prev[c], t.comm)
        return req

    def put_cpu(self, t: Task, req) -> None:
        c = t.cpu
        res = self.cpus[c]
        if res.queue:
            self.prev[c] = t.pid                   # the next dispatch names it as prev
        else:
            self.prev[c] = 0
            self.idle |= 1 << c
            self.emit(SWITCH, c, 0, t.pid, self.idle_comm[c])
        res.release(req)

    def point(self, t: Task, req):
        """A scheduling point: give the CPU up if the slice is used and others wait."""
        c = t.cpu
        if self.cpus[c].queue and self.env.now >= self.slice_end[c]:
            self.put_cpu(t, req)
            req = yield from self.get_cpu(t, c)
        return req

    def sleep(self, t: Task, req, jiffies: int, interruptible: bool = True):
        """Give the CPU up, sleep, come back on one (a signal cuts an interruptible sleep)."""
        if interruptible and t.killed:
            return req
        self.put_cpu(t, req)
        t.sleeping = interruptible
        try:
            yield self.env.timeout(max(0, jiffies))
        except simpy.Interrupt:
            pass
        t.sleeping = False
        return (yield from self.get_cpu(t))

    def run(self, t: Task, req, ns: int):
        """Spend CPU time: whole jiffies pass, the rest is carried; a task whose slice is
        used up while others wait on its CPU is preempted."""
        debt = t.debt + ns
        if debt < JIFFY_NS:
            t.debt = debt
            return req
        t.debt = debt % JIFFY_NS
        left = debt // JIFFY_NS
        env = self.env
        while left > 0:
            c = t.cpu
            res = self.cpus[c]
            step = max(1, min(left, self.slice_end[c] - env.now)) if res.queue else left
            yield env.timeout(step)
            left -= step
            if res.queue and env.now >= self.slice_end[c]:
                self.put_cpu(t, req)
                req = yield from self.get_cpu(t, c)
        return req

    def io(self, busy: int, pages: int, bw: int) -> int:
        """Queue ``pages`` of IO on a disk busy until ``busy``: the jiffy it completes."""
        return max(self.env.now, busy) + max(1, -(-pages * PAGE * HZ // bw))

    # --- reclaim (mm/vmscan.c) ----------------------------------------------------------------
    def shrink_node(self, t: Task, req, prio: int, kswapd: bool):
        """One pass at ``prio``: scan lru >> prio pages, anon and file by swappiness; clean
        cache is freed, dirty cache written back (kswapd only), anon swapped out, the
        reclaimer waiting for its IO.  Returns (req, scanned, reclaimed)."""
        filesz = self.file + self.dirty
        anon = self.anon if self.swap_free else 0
        size = filesz + anon
        total = max(size >> prio, min(size, SWAP_CLUSTER_MAX)) if size else 0
        anon_scan = file_scan = reclaimed = io_pages = io_j = 0
        if total:
            if anon:
                wa, wf = SWAPPINESS * anon, (200 - SWAPPINESS) * filesz
                anon_scan = total * wa // (wa + wf)
            file_scan = min(total - anon_scan, filesz)
            dirty_scan = file_scan * self.dirty // filesz if filesz else 0
            reclaimed = min(file_scan - dirty_scan, self.file)
            self.file -= reclaimed
            self.free += reclaimed
            wb = dirty_scan if kswapd else 0
            swapped = 0
            want = min(anon_scan, self.swap_free)
            lru = self.lru
            while swapped < want and lru:
                pid, v = next(iter(lru.items()))
                k = min(want - swapped, v.rss)
                v.rss -= k
                v.swap += k
                swapped += k
                if not v.rss:
                    del lru[pid]
            self.anon -= swapped
            self.swap_free -= swapped
            self.dirty -= wb
            self.writeback += wb
            io_pages = swapped + wb
        scanned = anon_scan + file_scan
        req = yield from self.run(t, req, RECLAIM_BASE_NS + scanned * SCAN_NS_PER_PAGE)
        if io_pages:
            done = self.env.now
            if swapped:
                done = self.swap_busy = self.io(self.swap_busy, swapped, SWAP_BW)
            if wb:
                done = max(done, self.io(self.wb_busy, wb, WRITEBACK_BW))
                self.wb_busy = done
            io_j = done - self.env.now
            self.emit(IO_WAIT, t.cpu, t.pid, io_pages, io_j, "reclaim")
            req = yield from self.sleep(t, req, io_j, interruptible=False)
            self.writeback -= wb
            self.free += io_pages
            reclaimed += io_pages
        if reclaimed:
            self.kswapd_failures = 0               # any success revives a hopeless kswapd
        self.emit(RECLAIM, t.cpu, t.pid, 0, scanned, reclaimed, io_pages, io_j)
        return req, scanned, reclaimed

    def try_to_free_pages(self, t: Task, req):
        """Direct reclaim: every priority from DEF_PRIORITY down to 0 until
        SWAP_CLUSTER_MAX pages came back.  Returns (req, reclaimed)."""
        self.emit(DIRECT_BEGIN, t.cpu, t.pid, 0)
        got = 0
        for prio in range(DEF_PRIORITY, -1, -1):
            req, _, k = yield from self.shrink_node(t, req, prio, False)
            got += k
            if got >= SWAP_CLUSTER_MAX:
                break
        self.emit(DIRECT_END, t.cpu, t.pid, got)
        return req, got

    def wake_kswapd(self, t: Task) -> None:
        """wakeup_kswapd: only a sleeping kswapd of a node neither hopeless nor balanced."""
        if self.kswapd_sleeping and self.kswapd_failures < MAX_RECLAIM_RETRIES \
                and self.free < self.high and not self.kswapd_wake.triggered:
            self.emit(WAKEUP_KSWAPD, t.cpu, t.pid, 0)
            self.kswapd_wake.succeed()

    def kswapd(self):
        t = self.new_task("kswapd0", 0, kthread=True)
        req = yield from self.get_cpu(t)
        env = self.env
        while True:
            # kswapd_try_to_sleep: a HZ/10 nap, then sleep until woken if still balanced
            if self.kswapd_failures >= MAX_RECLAIM_RETRIES or self.free >= self.high:
                self.put_cpu(t, req)
                self.kswapd_sleeping = True
                wake = self.kswapd_wake
                yield env.any_of((env.timeout(HZ // 10), wake))
                self.kswapd_sleeping = False
                premature = wake.triggered
                if premature:
                    self.kswapd_wake = env.event()
                req = yield from self.get_cpu(t)
                if not premature and (self.kswapd_failures >= MAX_RECLAIM_RETRIES
                                      or self.free >= self.high):
                    self.emit(KSWAPD_SLEEP, t.cpu, t.pid, 0)
                    self.put_cpu(t, req)
                    self.kswapd_sleeping = True
                    yield self.kswapd_wake
                    self.kswapd_sleeping = False
                    self.kswapd_wake = env.event()
                    req = yield from self.get_cpu(t)
            self.emit(KSWAPD_WAKE, t.cpu, t.pid, 0)
            req = yield from self.balance_pgdat(t, req)

    def balance_pgdat(self, t: Task, req):
        """Raise the priority from DEF_PRIORITY to 1 until the node is balanced (HIGH)."""
        prio, passes, got, balanced = DEF_PRIORITY, 0, 0, False
        nr_to_reclaim = max(self.high, SWAP_CLUSTER_MAX)
        while prio >= 1:
            if self.free >= self.high:
                if not passes:                     # "goto out" still costs the checks
                    req = yield from self.run(t, req, RECLAIM_BASE_NS)
                balanced = True
                break
            passes += 1
            req, scanned, k = yield from self.shrink_node(t, req, prio, True)
            got += k
            if scanned < nr_to_reclaim or not k:
                prio -= 1
            req = yield from self.point(t, req)
        if not balanced and not got:
            self.kswapd_failures += 1
            self.emit(KSWAPD_FAILURES, t.cpu, t.pid, 0, self.kswapd_failures)
        return req

    # --- the allocator (mm/page_alloc.c) -------------------------------------------------------
    def should_reclaim_retry(self, t: Task, req, nr: int, progress: bool, state: list):
        """The OOM detector for the one zone.  Returns (req, retry)."""
        state[0] = 0 if progress else state[0] + 1
        if state[0] > MAX_RECLAIM_RETRIES:
            return req, False
        reclaimable = self.file + self.dirty + self.writeback + (self.anon if self.swap_free else 0)
        available = reclaimable + self.free
        ok = available - nr >= self.min_wmark
        self.emit(RETRY_ZONE, t.cpu, t.pid, 0, "Normal", reclaimable, available, self.min_wmark,
                  state[0], int(ok))
        if ok and not progress and 2 * (self.dirty + self.writeback) > reclaimable:
            self.emit(THROTTLE, t.cpu, t.pid, "congestion_wait", HZ // 10)
            req = yield from self.sleep(t, req, HZ // 10, interruptible=False)
            return req, True
        req = yield from self.point(t, req)
        return req, ok

    def alloc_slow(self, t: Task, req, nr: int):
        """__alloc_pages_slowpath for one chunk; returns (ok, req)."""
        self.emit(SLOW_ENTER, t.cpu, t.pid, 0)
        self.wake_kswapd(t)
        loops = 0
        state = [0]                                # no_progress_loops
        while True:
            mark = self.min_wmark // 2 if t.victim else self.min_wmark   # ALLOC_OOM
            if self.free - nr >= mark:
                self.free -= nr
                self.emit(SLOW_EXIT, t.cpu, t.pid, 0, "ok", loops)
                return True, req
            if loops and t.victim:                 # a victim whose reserves ran out fails
                self.emit(SLOW_EXIT, t.cpu, t.pid, 0, "fail", loops)
                return False, req
            loops += 1
            req = yield from self.run(t, req, SLOWPATH_ROUND_NS)
            self.wake_kswapd(t)
            if self.free - nr >= mark:
                continue
            if t.killed:                           # throttle_direct_reclaim: fatal signal
                progress = 1
            else:
                req = yield from self.point(t, req)
                req, progress = yield from self.try_to_free_pages(t, req)
                req = yield from self.point(t, req)
                if progress and self.free - nr >= mark:
                    continue
            req, retry = yield from self.should_reclaim_retry(t, req, nr, progress > 0, state)
            if retry:
                continue
            # __alloc_pages_may_oom: trylock, or back off one jiffy (which counts as progress)
            if self.oom_lock is not None:
                self.emit(CONTENDED, t.cpu, t.pid)
                req = yield from self.sleep(t, req, 1, interruptible=False)
                state[0] = 0
                continue
            self.oom_lock = t
            self.emit(LOCK, t.cpu, t.pid)
            req = yield from self.point(t, req)
            if self.free - nr >= self.high:        # a parallel kill may have freed enough
                self.free -= nr
                self.oom_lock = None
                self.emit(UNLOCK, t.cpu, t.pid)
                self.emit(SLOW_EXIT, t.cpu, t.pid, 0, "ok", loops)
                return True, req
            req, progress = yield from self.out_of_memory(t, req)
            self.oom_lock = None
            self.emit(UNLOCK, t.cpu, t.pid)
            if not progress:
                self.emit(SLOW_EXIT, t.cpu, t.pid, 0, "fail", loops)
                return False, req
            state[0] = 0

    def out_of_memory(self, cur: Task, req):
        """Returns (req, progress): a kill, a pending victim, or current dying."""
        self.oom_calls += 1
        self.emit(OOM_ENTER, cur.cpu, cur.pid, 0)
        if cur.killed:                             # task_will_free_mem(current)
            cur.victim = True
            self.emit(OOM_RETURN, cur.cpu, cur.pid, 1, "current_exiting")
            return req, True
        chosen, points = None, -1
        users = list(self.tasks.values())
        req = yield from self.run(cur, req, OOM_SCAN_NS_PER_TASK * len(users))
        for t in users:
            if t.victim and not t.skip:            # a victim is pending: abort, let it exit
                self.emit(OOM_RETURN, cur.cpu, cur.pid, 1, "victim_pending")
                return req, True
            p = t.rss + t.swap
            if p > points:
                chosen, points = t, p
        rows = report_rows(users)
        self.emit(OOM_HEADER, cur.cpu, cur.pid, cur.comm, rows)
        req = yield from self.run(cur, req, PRINTK_NS_PER_LINE * (len(report_lines(rows)) + OOM_REPORT_LINES))
        if chosen is None:
            self.emit(OOM_RETURN, cur.cpu, cur.pid, 0, "no_victim")
            return req, False
        chosen.killed = chosen.victim = True
        self.kills += 1
        self.emit(KILL, cur.cpu, chosen.pid, chosen.comm, chosen.rss)
        if chosen.sleeping:
            chosen.proc.interrupt()
        self.reaper_q.put(chosen)
        self.emit(OOM_RETURN, cur.cpu, cur.pid, 1, "killed")
        return req, True

    def oom_reaper(self):
        t = self.new_task("oom_reaper", 0, kthread=True)
        while True:
            victim = yield self.reaper_q.get()
            req = yield from self.get_cpu(t)
            if victim.alive and not victim.skip:
                req = yield from self.zap(t, req, victim)
                self.emit(REAPED, t.cpu, victim.pid, victim.comm)
            victim.skip = True
            self.put_cpu(t, req)

    def zap(self, t: Task, req, mm: Task):
        """Unmap ``mm``'s memory ZAP_BATCH pages at a time, resident pages then swap
        entries, each batch freed, then paid for, then a scheduling point (zap_pages)."""
        while True:
            k = min(mm.rss, ZAP_BATCH)
            s = min(mm.swap, ZAP_BATCH - k)
            if not k + s:
                return req
            mm.rss -= k
            mm.swap -= s
            self.anon -= k
            self.free += k
            self.swap_free += s
            if not mm.rss:
                self.lru.pop(mm.pid, None)
            req = yield from self.run(t, req, (k + s) * ZAP_NS_PER_PAGE)
            req = yield from self.point(t, req)

    # --- tasks ----------------------------------------------------------------------------
    def new_task(self, comm: str, rss: int, kthread: bool = False) -> Task:
        pid = self.next_pid
        self.next_pid += 1
        t = Task(pid, comm, pid % self.ncpus, rss)
        if not kthread:
            self.tasks[pid] = t
            if rss:
                self.lru[pid] = t
                self.anon += rss
        self.emit(TASK_NEW, -1, pid, comm, int(kthread))
        return t

    def spawn(self, t: Task, program, delay: int = 0) -> None:
        t.proc = self.env.process(self.task(t, program, delay))

    def task(self, t: Task, program, delay: int):
        if delay:
            yield self.env.timeout(delay)
        req = yield from self.get_cpu(t)
        try:
            while True:                            # every program is a repeat loop
                for step in program:
                    req = yield from step(t, req)
                    if t.killed:
                        raise Killed
                req = yield from self.run(t, req, SLOWPATH_ROUND_NS)
        except Killed:
            pass
        req = yield from self.zap(t, req, t)        # exit_mmap
        t.alive = False
        t.skip = True
        del self.tasks[t.pid]
        self.emit(EXIT, t.cpu, t.pid, t.comm, "killed")
        self.put_cpu(t, req)

    # program steps: generators taking (task, cpu request) and returning the request
    def sleep_step(self, jiffies: int):
        def step(t: Task, req):
            return (yield from self.sleep(t, req, jiffies))
        return step

    def compute_step(self, ms: int):
        def step(t: Task, req):
            return (yield from self.run(t, req, ms * 1_000_000))
        return step

    def alloc_step(self, size: int, rate: int = 0):
        pages = size // PAGE

        def step(t: Task, req):
            self.emit(STEP, t.cpu, t.pid, "alloc", pages)
            # mmap's commit check (heuristic overcommit: anything below RAM + swap)
            self.emit(VM_ENOUGH, t.cpu, t.pid, pages, int(pages <= self.total + self.swap_total))
            done, start = 0, self.env.now
            lru = self.lru
            while done < pages:
                nr = min(CHUNK, pages - done)
                if self.free - nr >= self.low:     # the fast path at the LOW watermark
                    self.free -= nr
                else:
                    ok, req = yield from self.alloc_slow(t, req, nr)
                    if t.killed:
                        return req
                    if not ok:                     # VM_FAULT_OOM: back to user space, retry
                        req = yield from self.run(t, req, SLOWPATH_ROUND_NS)
                        continue
                done += nr
                t.rss += nr
                self.anon += nr
                lru.pop(t.pid, None)
                lru[t.pid] = t
                req = yield from self.run(t, req, nr * FAULT_NS_PER_PAGE)
                if t.killed:
                    return req
                if rate:
                    due = start + done * PAGE * HZ // rate
                    if due > self.env.now:
                        req = yield from self.sleep(t, req, due - self.env.now)
                        if t.killed:
                            return req
            return req
        return step

    def free_step(self, size: int):
        pages = size // PAGE

        def step(t: Task, req):
            self.emit(STEP, t.cpu, t.pid, "free", pages)
            k = min(pages, t.rss)                  # resident pages first, then swap entries
            s = min(pages - k, t.swap)
            t.rss -= k
            t.swap -= s
            self.anon -= k
            self.free += k
            self.swap_free += s
            if not t.rss:
                self.lru.pop(t.pid, None)
            return (yield from self.run(t, req, (k + s) * ZAP_NS_PER_PAGE))
        return step

    def fork_step(self, child_program):
        def step(t: Task, req):
            child = self.new_task("leakchild", 0)
            self.emit(FORK, t.cpu, t.pid, t.comm, child.pid, child.comm)
            self.spawn(child, child_program)
            return (yield from self.run(t, req, FORK_NS))
        return step

    def build(self) -> None:
        build_workload(self)

    def go(self) -> None:
        self.build()
        self.env.run(until=self.duration)


def report_rows(users) -> list[tuple]:
    """The OOM report's task table (dump_tasks): a row per process."""
    return [(t.pid, 0, t.pid, t.rss + t.swap, t.rss, 0, t.swap, 0, t.comm) for t in users]


def report_lines(rows: list[tuple]) -> list[str]:
    """The task table as printk formats it (the text is made: its time is charged)."""
    return [f"[{r[0]:7d}] {r[1]:5d} {r[2]:5d} {r[3]:8d} {r[4]:8d} {r[5]:8d} {r[6]:8d}"
            f"         {r[7]:5d} {r[8]}" for r in rows]


def build_workload(peer) -> None:
    """The workload of bench/pressure.py on a peer (either peer: the same step factories),
    with kswapd and the oom_reaper."""
    j = lambda ms: -(-ms * HZ // 1000)   # noqa: E731 - ms to jiffies, rounded up
    peer.env.process(peer.kswapd())
    peer.env.process(peer.oom_reaper())
    groups = [
        ("daemon", 600, 2, 1, [peer.sleep_step(j(500)), peer.compute_step(1)], 0),
        ("worker", 300, 4, 3, [peer.compute_step(4), peer.sleep_step(j(100))], 0),
        ("handler", 90, 8, 10, [peer.sleep_step(j(250)), peer.alloc_step(256 * 1024),
                                peer.compute_step(2), peer.free_step(256 * 1024)], 0),
        ("leaker", 10, 0, 500, [peer.fork_step([peer.alloc_step(16 * MIB, 48 * MIB)]),
                                peer.sleep_step(j(8000))], j(1000)),
    ]
    for comm, count, rss_mib, stagger_ms, program, start in groups:
        for i in range(count):
            rss = rss_mib * MIB // PAGE
            peer.free -= rss
            t = peer.new_task(comm, rss)
            peer.spawn(t, program, start + j(i * stagger_ms) if stagger_ms else start)


def bench(duration_s: int = 60, peer=Peer, *, counts: bool = False) -> dict:
    """One run timed in CPU time, its msgpack trace written to a temporary file;
    ``counts``: also the events per kind, read back from the trace after the timing."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "peer.trace")
        with open(path, "wb") as out:
            t0 = time.process_time()
            p = peer(duration_s, out)
            p.go()
            cpu = time.process_time() - t0
        r = {"sim_s": duration_s, "cpu": cpu, "sim_per_cpu": duration_s / cpu, "events": p.events,
             "oom_kills": p.kills, "oom_invocations": p.oom_calls, "tasks": p.next_pid - 1}
        if counts:
            r["kinds"] = kinds(path, sys.modules[peer.__module__])
    return r


def kinds(path: str, module) -> dict[str, int]:
    """Events per kind in a peer's trace, by the oomactors event name each stands for
    (the module's EVENT_NAMES)."""
    names = module.EVENT_NAMES
    n: dict[str, int] = {}
    with open(path, "rb") as f:
        for rec in msgpack.Unpacker(f, use_list=False):
            k = names[rec[1]][1]
            n[k] = n.get(k, 0) + 1
    return n


if __name__ == "__main__":
    r = bench(int(sys.argv[1]) if len(sys.argv) > 1 else 60, counts=True)
    print({k: v for k, v in r.items() if k != "kinds"})
    for k, v in sorted(r["kinds"].items(), key=lambda kv: -kv[1]):
        print(f"{v:10,d}  {k}")
