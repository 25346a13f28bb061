"""Figure 2: a 64-CPU, 1,000-task machine under steady memory pressure, 60 simulated seconds.

990 services (small rss; sleep/compute loops, some allocate and free a little) and 10
leaker parents.  Each leaker parent forks a child every few seconds that allocates
anonymous memory until it is killed, so the OOM killer fires again and again through
the whole run instead of running out of victims after the first few kills.
"""

from __future__ import annotations

import os
import tempfile
import time

import anyio

from oomactors.config import parse_config
from oomactors.sim import run
from oomactors.trace.stream import TraceWriter

DURATION_S = 60


def config_text(duration_s: int = DURATION_S, seed: int = 1, *, cpus: int = 64, tasks: int = 1000) -> str:
    """The workload; ``cpus`` and ``tasks`` scale it (bench/scaling.py): the four groups keep
    their shares of ``tasks`` (60/30/9/1 %, at least one of each) and memory grows
    past 8 GiB with them (8 MiB a task)."""
    daemons, workers, handlers = (max(1, tasks * k // 100) for k in (60, 30, 9))
    leakers = max(1, tasks - daemons - workers - handlers)
    memory = max(8, -(-tasks * 8 // 1000))   # GiB: room for the tasks' boot rss
    return f"""
[machine]
cpus = {cpus}
memory = "{memory}GiB"
swap = "1GiB"
page_cache = "512MiB"
dirty = "64MiB"

[kernel]
hz = 250

[run]
duration = "{duration_s}s"
seed = {seed}
stop_when_idle = false

# 600 mostly idle daemons
[[tasks]]
name = "daemon"
count = {daemons}
rss = "2MiB"
stagger = "1ms"
program = [ {{ op = "repeat", steps = [
    {{ op = "sleep", time = "500ms" }},
    {{ op = "compute", time = "1ms" }},
] }} ]

# 300 busier workers
[[tasks]]
name = "worker"
count = {workers}
rss = "4MiB"
stagger = "3ms"
program = [ {{ op = "repeat", steps = [
    {{ op = "compute", time = "4ms" }},
    {{ op = "sleep", time = "100ms" }},
] }} ]

# 90 request handlers that allocate and free a little memory
[[tasks]]
name = "handler"
count = {handlers}
rss = "8MiB"
stagger = "10ms"
program = [ {{ op = "repeat", steps = [
    {{ op = "sleep", time = "250ms" }},
    {{ op = "alloc", size = "256KiB" }},
    {{ op = "compute", time = "2ms" }},
    {{ op = "free", size = "256KiB" }},
] }} ]

# 10 leaker parents: a new leaking child every 8s, each leaking 48MiB/s until killed
[[tasks]]
name = "leaker"
count = {leakers}
start = "1s"
stagger = "500ms"
program = [ {{ op = "repeat", steps = [
    {{ op = "fork", comm = "leakchild", program = [
        {{ op = "repeat", steps = [ {{ op = "alloc", size = "16MiB", rate = "48MiB/s" }} ] }},
    ] }},
    {{ op = "sleep", time = "8s" }},
] }} ]
"""


async def _nothing() -> None:
    pass


def warm_imports() -> None:
    """Import the event loop before the clock starts: anyio imports trio (and ~130 modules
    with it: ssl, subprocess, attrs, ...) at the process's first ``anyio.run``, ~0.1 s of
    CPU once per process, not per simulation; the peer (bench/peer_simpy.py) imports
    simpy before its clock starts too."""
    anyio.run(_nothing, backend="trio")


def bench(duration_s: int = DURATION_S, *, trace: bool = True, seed: int = 1) -> dict:
    """One run, timed in CPU time (time.process_time), with the msgpack trace written to a
    temporary file (``trace=False``: no sink at all).  The process's one-time imports are
    done first (:func:`warm_imports`)."""
    cfg = parse_config(config_text(duration_s, seed), "<bench pressure>")
    warm_imports()
    with tempfile.TemporaryDirectory() as tmp:
        writer = TraceWriter(os.path.join(tmp, "p.trace"), seed=seed, hz=cfg.kernel.hz,
                             config=cfg.as_dict()) if trace else None
        t0 = time.process_time()
        r = run(cfg, sinks=[writer.write] if writer is not None else None)
        cpu = time.process_time() - t0
        if writer is not None:
            writer.close()
    m = r.machine
    sim_s = r.end_jiffies / m.hz
    sleeps = m.sched.clock.sleeps
    return {
        "reason": r.reason, "sim_s": sim_s, "cpu": cpu, "sim_per_cpu": sim_s / cpu,
        "events": r.events, "oom_kills": m.vmstat["oom_kill"],
        "oom_invocations": m.vmstat["oom_invocations"],
        "tasks": len(m.tasks), "cpus": len(m.sched.cpus),
        "sleeps": sleeps, "sleeps_per_jiffy": sleeps / max(1, r.end_jiffies),
        "decisions": r.decisions,
    }


if __name__ == "__main__":
    import sys
    print(bench(int(sys.argv[1]) if len(sys.argv) > 1 else DURATION_S))
