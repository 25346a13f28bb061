"""What the two SimPy peers share (bench/peer_simpy.py, bench/peer_simpy_lite.py): the task
record, the workload of bench/pressure.py, the OOM report's table, the timed run and the
per-kind event count.  Neither model's logic lives here."""

from __future__ import annotations

import os
import sys
import tempfile
import time

import msgpack

HZ = 250
PAGE = 4096
MIB = 1 << 20


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


def bench(duration_s: int, peer, *, counts: bool = False) -> dict:
    """One run of ``peer`` (a Peer class) timed in CPU time, its msgpack trace written to a temporary file;
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
