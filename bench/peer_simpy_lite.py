"""The *lite* SimPy peer of bench/pressure.py's workload, kept for transparency.

This is the peer of sessions 1-2: coarser than oomactors (one reclaim pass per slow-path
round, one switch event per CPU acquisition, each task pinned to one CPU, page cache
never reclaimed below an eighth).  bench/peer_simpy.py is the peer at the model's
granularity, the yardstick of issue 9's goal; bench/README.md compares the two.

What it models:

* the same machine: 64 CPUs, 8 GiB RAM, 1 GiB swap, 512 MiB page cache, HZ=250, time in
  integer jiffies; the same 1,000 tasks and programs (600 daemons, 300 workers, 90
  handlers, 10 leaker parents forking a child every 8 s that leaks 48 MiB/s);
* a task runs only while it holds its CPU (a SimPy resource per CPU, FIFO: a run queue),
  gives it up to sleep, and spends CPU time in whole jiffies (nanosecond debts carried the
  way ``Sched.run`` does, with the same cost constants as ``oomactors.kernel.params``);
* anonymous memory faulted in 32-page chunks at the step's rate, the LOW-watermark fast
  path, a slow path that wakes kswapd, reclaims directly (page cache first, then anon to
  swap) and retries up to 16 rounds without progress, then an ``oom_lock`` trylock with a
  1-jiffy back-off; the OOM killer walks every process, aborts on a pending victim, else
  kills the largest (rss + swap), printing the task table under the lock (the report's
  printk time is charged as in the model); an oom_reaper that unmaps a victim; kswapd
  reclaiming from LOW to HIGH;
* every event packed as a msgpack tuple into a trace file (tracing on, as in our bench).

It leaves out what the issue's peer left out: PSI, per-CPU page lists, the second zone,
memcg and cpuset hooks, mmap_lock, the policy API and invariant checkers.  It is a model
of the same work, not of the same kernel: its numbers only say how fast a plain
discrete-event model of that work runs.
"""

from __future__ import annotations

import os
import sys

import msgpack
import simpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peer_common import Killed, Task, bench, build_workload, report_lines, report_rows  # noqa: E402

# the same constants as the granular peer (oomactors.kernel.params' values)
from peer_consts import (CHUNK, FAULT_NS_PER_PAGE, HZ, JIFFY_NS, MAX_RECLAIM_RETRIES, MIB,  # noqa: E402
                         OOM_REPORT_LINES, OOM_SCAN_NS_PER_TASK, PAGE, PRINTK_NS_PER_LINE, RECLAIM_BASE_NS,
                         SCAN_NS_PER_PAGE, SLOWPATH_ROUND_NS, ZAP_NS_PER_PAGE)

# event ids (the peer's own small table)
(TASK_NEW, SWITCH, STEP, SLOW_ENTER, SLOW_EXIT, LOCK, UNLOCK, OOM_ENTER, OOM_HEADER, KILL,
 REAPED, EXIT, KSWAPD_WAKE, RECLAIM) = range(14)
# the oomactors event each id stands for (bench/peer_simpy.py's per-kind table); RECLAIM is
# one reclaim round of the slow path or of kswapd, SWITCH one CPU acquisition
EVENT_NAMES = tuple(zip(
    ("TASK_NEW", "SWITCH", "STEP", "SLOW_ENTER", "SLOW_EXIT", "LOCK", "UNLOCK", "OOM_ENTER", "OOM_HEADER",
     "KILL", "REAPED", "EXIT", "KSWAPD_WAKE", "RECLAIM"),
    ("sim:task_new", "sched:sched_switch", "sim:step", "sim:slowpath_enter", "sim:slowpath_exit",
     "sim:oom_lock_acquired", "sim:oom_lock_released", "sim:out_of_memory_enter", "sim:oom_header",
     "sim:oom_kill", "sim:reaper_reaped", "sched:sched_process_exit", "vmscan:mm_vmscan_kswapd_wake",
     "vmscan:mm_vmscan_node_reclaim")))


class Peer:
    def __init__(self, duration_s: int, out) -> None:
        self.env = env = simpy.Environment()
        self.duration = duration_s * HZ
        self.ncpus = 64
        self.cpus = [simpy.Resource(env, 1) for _ in range(self.ncpus)]
        total = 8 * 1024 * MIB // PAGE
        self.min_wmark = 16384 * 1024 // PAGE // 1  # min_free_kbytes ~16 MiB on 8 GiB
        self.low = self.min_wmark * 5 // 4
        self.high = self.min_wmark * 3 // 2
        self.file = 512 * MIB // PAGE
        self.file_floor = self.file // 8
        self.swap_free = 1024 * MIB // PAGE
        self.free = total - self.file - 64 * MIB // PAGE
        self.tasks: dict[int, Task] = {}
        self.lru: dict[int, Task] = {}     # anon LRU by pid, oldest first
        self.next_pid = 1
        self.oom_lock: Task | None = None
        self.reaper_q = simpy.Store(env)
        self.kswapd_wake = env.event()
        self.kswapd_running = False
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
    def get_cpu(self, t: Task):
        req = self.cpus[t.cpu].request()
        yield req
        self.emit(SWITCH, t.cpu, t.pid, t.comm)
        return req

    def sleep(self, t: Task, req, jiffies: int, interruptible: bool = True):
        """Give the CPU up, sleep, come back on it (a signal cuts an interruptible sleep)."""
        self.cpus[t.cpu].release(req)
        if interruptible and t.killed:
            return (yield from self.get_cpu(t))
        t.sleeping = interruptible
        try:
            yield self.env.timeout(max(0, jiffies))
        except simpy.Interrupt:
            pass
        t.sleeping = False
        return (yield from self.get_cpu(t))

    def run(self, t: Task, ns: int):
        """Spend CPU time: whole jiffies pass, the rest is carried."""
        debt = t.debt + ns
        if debt < JIFFY_NS:
            t.debt = debt
            return
        t.debt = debt % JIFFY_NS
        yield self.env.timeout(debt // JIFFY_NS)

    # --- memory ---------------------------------------------------------------------------
    def reclaim(self, want: int) -> tuple[int, int]:
        """shrink_node, simply: page cache above its floor first, then anon to swap,
        oldest mm first.  Returns (reclaimed, scanned)."""
        got = min(want, max(0, self.file - self.file_floor))
        self.file -= got
        scanned = got
        while got < want and self.swap_free and self.lru:
            pid, t = next(iter(self.lru.items()))
            k = min(want - got, t.rss, self.swap_free)
            t.rss -= k
            t.swap += k
            self.swap_free -= k
            got += k
            scanned += k
            if not t.rss:
                del self.lru[pid]
        self.free += got
        return got, scanned + want

    def wake_kswapd(self) -> None:
        if not self.kswapd_running and not self.kswapd_wake.triggered:
            self.kswapd_wake.succeed()

    def kswapd(self):
        t = self.new_task("kswapd0", 0, kthread=True)
        while True:
            yield self.kswapd_wake
            self.kswapd_wake = self.env.event()
            self.kswapd_running = True
            req = yield from self.get_cpu(t)
            self.emit(KSWAPD_WAKE, t.cpu, t.pid, 0)
            while self.free < self.high:
                got, scanned = self.reclaim(CHUNK)
                yield from self.run(t, RECLAIM_BASE_NS + scanned * SCAN_NS_PER_PAGE)
                if not got:
                    break
            self.cpus[t.cpu].release(req)
            self.kswapd_running = False

    def alloc_chunk(self, t: Task, req, nr: int):
        """__alloc_pages for one chunk; returns (ok, req)."""
        if self.free - nr >= self.low:       # fast path at the LOW watermark
            self.free -= nr
            return True, req
        self.wake_kswapd()
        self.emit(SLOW_ENTER, t.cpu, t.pid, 0)
        no_progress = loops = 0
        while True:
            loops += 1
            if self.free - nr >= self.min_wmark:
                self.free -= nr
                self.emit(SLOW_EXIT, t.cpu, t.pid, "ok", loops)
                return True, req
            if t.killed:
                self.emit(SLOW_EXIT, t.cpu, t.pid, "fail", loops)
                return False, req
            got, scanned = self.reclaim(CHUNK)
            self.emit(RECLAIM, t.cpu, t.pid, got)
            yield from self.run(t, RECLAIM_BASE_NS + scanned * SCAN_NS_PER_PAGE)
            if self.free - nr >= self.min_wmark:
                continue
            no_progress = 0 if got else no_progress + 1
            if no_progress <= MAX_RECLAIM_RETRIES:
                yield from self.run(t, SLOWPATH_ROUND_NS)
                continue
            # __alloc_pages_may_oom: trylock, or back off one jiffy
            if self.oom_lock is not None:
                req = yield from self.sleep(t, req, 1, interruptible=False)
                continue
            self.oom_lock = t
            self.emit(LOCK, t.cpu, t.pid)
            if self.free - nr >= self.high:
                self.free -= nr
                self.oom_lock = None
                self.emit(UNLOCK, t.cpu, t.pid)
                return True, req
            yield from self.out_of_memory(t)
            self.oom_lock = None
            self.emit(UNLOCK, t.cpu, t.pid)
            no_progress = 0
            yield from self.run(t, SLOWPATH_ROUND_NS)

    def out_of_memory(self, cur: Task):
        self.oom_calls += 1
        self.emit(OOM_ENTER, cur.cpu, cur.pid)
        if cur.killed:
            return
        chosen, points = None, -1
        users = [t for t in self.tasks.values() if t.comm != "kswapd0" and t.comm != "oom_reaper"]
        for t in users:
            if t.victim and not t.skip:      # a victim is pending: abort, let it exit
                yield from self.run(cur, OOM_SCAN_NS_PER_TASK * len(users))
                return
            p = t.rss + t.swap
            if p > points:
                chosen, points = t, p
        yield from self.run(cur, OOM_SCAN_NS_PER_TASK * len(users))
        rows = report_rows(users)
        self.emit(OOM_HEADER, cur.cpu, cur.pid, cur.comm, rows)
        yield from self.run(cur, PRINTK_NS_PER_LINE * (len(report_lines(rows)) + OOM_REPORT_LINES))
        if chosen is None:
            return
        chosen.killed = chosen.victim = True
        self.kills += 1
        self.emit(KILL, cur.cpu, chosen.pid, chosen.comm, chosen.rss)
        if chosen.sleeping:
            chosen.proc.interrupt()
        self.reaper_q.put(chosen)

    def oom_reaper(self):
        t = self.new_task("oom_reaper", 0, kthread=True)
        while True:
            victim = yield self.reaper_q.get()
            req = yield from self.get_cpu(t)
            if victim.alive and not victim.skip:
                k = victim.rss
                self.free_task_memory(victim)
                yield from self.run(t, k * ZAP_NS_PER_PAGE)
                self.emit(REAPED, t.cpu, victim.pid, victim.comm)
            victim.skip = True
            self.cpus[t.cpu].release(req)

    def free_task_memory(self, t: Task) -> None:
        self.free += t.rss
        self.swap_free += t.swap
        t.rss = t.swap = 0
        self.lru.pop(t.pid, None)

    # --- tasks ----------------------------------------------------------------------------
    def new_task(self, comm: str, rss: int, kthread: bool = False) -> Task:
        pid = self.next_pid
        self.next_pid += 1
        t = Task(pid, comm, pid % self.ncpus, rss)
        if not kthread:
            self.tasks[pid] = t
            if rss:
                self.lru[pid] = t
        self.emit(TASK_NEW, -1, pid, comm, int(kthread))
        return t

    def spawn(self, t: Task, program, delay: int = 0) -> None:
        t.proc = self.env.process(self.task(t, program, delay))

    def task(self, t: Task, program, delay: int):
        if delay:
            yield self.env.timeout(delay)
        req = yield from self.get_cpu(t)
        try:
            while True:                      # every program is a repeat loop
                for step in program:
                    req = yield from step(t, req)
                    if t.killed:
                        raise Killed
                yield from self.run(t, SLOWPATH_ROUND_NS)
        except Killed:
            pass
        k = t.rss
        self.free_task_memory(t)
        yield from self.run(t, k * ZAP_NS_PER_PAGE)
        t.alive = False
        t.skip = True
        del self.tasks[t.pid]
        self.emit(EXIT, t.cpu, t.pid, t.comm, "killed")
        self.cpus[t.cpu].release(req)

    # program steps: generators taking (task, cpu request) and returning the request
    def sleep_step(self, jiffies: int):
        def step(t: Task, req):
            return (yield from self.sleep(t, req, jiffies))
        return step

    def compute_step(self, ms: int):
        def step(t: Task, req):
            yield from self.run(t, ms * 1_000_000)
            return req
        return step

    def alloc_step(self, size: int, rate: int = 0):
        pages = size // PAGE

        def step(t: Task, req):
            self.emit(STEP, t.cpu, t.pid, "alloc", pages)
            done, start = 0, self.env.now
            while done < pages:
                nr = min(CHUNK, pages - done)
                ok, req = yield from self.alloc_chunk(t, req, nr)
                if t.killed:
                    return req
                if not ok:
                    yield from self.run(t, SLOWPATH_ROUND_NS)
                    continue
                done += nr
                t.rss += nr
                self.lru.pop(t.pid, None)
                self.lru[t.pid] = t
                yield from self.run(t, nr * FAULT_NS_PER_PAGE)
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
            k = min(pages, t.rss)
            t.rss -= k
            self.free += k
            yield from self.run(t, k * ZAP_NS_PER_PAGE)
            return req
        return step

    def fork_step(self, child_program):
        def step(t: Task, req):
            child = self.new_task("leakchild", 0)
            self.spawn(child, child_program)
            yield from self.run(t, 0)
            return req
        return step

    def build(self) -> None:
        build_workload(self)

    def go(self) -> None:
        self.build()
        self.env.run(until=self.duration)


if __name__ == "__main__":
    print(bench(int(sys.argv[1]) if len(sys.argv) > 1 else 60, Peer))
