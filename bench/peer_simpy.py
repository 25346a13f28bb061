"""A plain SimPy model of bench/pressure.py's workload at oomactors' granularity: the
peer our engine is measured against (issue 9's goal: oomactors >= 1.0x this peer).

Written for this benchmark, with no oomactors import; its constants are the model's
(``oomactors.kernel.params``, 5.10's vmscan and page_alloc) copied into peer_consts.py;
reclaim and kswapd are in peer_vmscan.py, what it shares with the lite peer (the workload,
the OOM table, the timed run) in peer_common.py.  What it does,
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

import msgpack
import simpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peer_common  # noqa: E402
from peer_common import Killed, Task, build_workload, report_lines, report_rows  # noqa: E402
from peer_consts import (  # noqa: E402 - EVENT_NAMES is this peer's (event_kinds reads it)
    CHUNK, CONTENDED, EXIT, FAULT_NS_PER_PAGE, FORK, FORK_NS, HZ, JIFFY_NS, KILL, LOCK,
    MAX_RECLAIM_RETRIES, MIB, OOM_ENTER, OOM_HEADER, OOM_REPORT_LINES, OOM_RETURN,
    OOM_SCAN_NS_PER_TASK, PAGE, PRINTK_NS_PER_LINE, REAPED, RETRY_ZONE, SLICE,
    SLOWPATH_ROUND_NS, SLOW_ENTER, SLOW_EXIT, STEP, SWITCH, TASK_NEW, THROTTLE, UNLOCK,
    VM_ENOUGH, ZAP_BATCH, ZAP_NS_PER_PAGE, EVENT_NAMES, watermarks)
from peer_vmscan import Vmscan  # noqa: E402


class Peer(Vmscan):
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


def bench(duration_s: int = 60, peer=Peer, *, counts: bool = False) -> dict:
    """One timed run of ``peer`` (this peer by default); see peer_common.bench."""
    return peer_common.bench(duration_s, peer, counts=counts)


if __name__ == "__main__":
    r = bench(int(sys.argv[1]) if len(sys.argv) > 1 else 60, counts=True)
    print({k: v for k, v in r.items() if k != "kinds"})
    for k, v in sorted(r["kinds"].items(), key=lambda kv: -kv[1]):
        print(f"{v:10,d}  {k}")
