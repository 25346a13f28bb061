"""``trace stats``: how many events of each kind a trace holds, and where each task's time
went, computed from the events alone.

Task states come from the events that open and close them: in the allocator's slow path (``sim:slowpath_enter`` .. ``sim:slowpath_exit``), in direct reclaim
(``mm_vmscan_direct_reclaim_begin`` .. ``_end``), running the OOM killer
(``sim:out_of_memory_enter`` .. ``_return``), waiting for reclaim IO (``sim:io_wait``'s
jiffies) and throttled (``sim:throttle``'s jiffies); and how often the task was put on a
CPU (``sched_switch``).  Time on a CPU is not given: the model records when a task is put
on a CPU, not when it leaves.  The states nest (direct reclaim is inside the slow path).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .stream import Trace

STATES = ("slow path", "direct reclaim", "oom killer", "io wait", "throttled")
_SPANS = {  # begin event -> (state, end event)
    "sim:slowpath_enter": ("slow path", "sim:slowpath_exit"),
    "vmscan:mm_vmscan_direct_reclaim_begin": ("direct reclaim", "vmscan:mm_vmscan_direct_reclaim_end"),
    "sim:out_of_memory_enter": ("oom killer", "sim:out_of_memory_return"),
}
_WAITS = {"sim:io_wait": "io wait", "sim:throttle": "throttled"}


def trace_stats(trace: Trace) -> dict[str, Any]:
    """``{"events": {kind: count}, "total": n, "seconds": end, "tasks": {pid: {comm,
    dispatches, state: seconds...}}}`` (a state the task never was in is left out)."""
    names, fields, hz = trace.names, trace.fields, trace.hz
    ids = {n: i for i, n in enumerate(names)}
    counts: Counter[int] = Counter()
    begins = {ids[b]: (state, ids.get(e, -1)) for b, (state, e) in _SPANS.items() if b in ids}
    ends = {e: state for state, e in begins.values()}
    waits = {ids[n]: (s, 4 + fields[ids[n]].index("jiffies")) for n, s in _WAITS.items()
             if n in ids and "jiffies" in fields[ids[n]]}
    sw = ids.get("sched:sched_switch", -1)
    sw_next = 4 + fields[sw].index("next_pid") if sw >= 0 else 0
    new = ids.get("sim:task_new", -1)
    new_comm = 4 + fields[new].index("comm") if new >= 0 else 0
    fork = ids.get("sched:sched_process_fork", -1)
    fork_cols = (4 + fields[fork].index("child_pid"), 4 + fields[fork].index("child_comm")) if fork >= 0 else (0, 0)
    comm: dict[int, str] = {}
    spent: dict[int, Counter[str]] = {}
    open_: dict[tuple[int, str], int] = {}
    end = 0
    for rec in trace.records():
        t, eid, cpu, pid = rec[0], rec[1], rec[2], rec[3]
        end = t
        counts[eid] += 1
        if eid == sw:
            spent.setdefault(rec[sw_next], Counter())["dispatches"] += 1
        elif eid in begins:
            open_.setdefault((pid, begins[eid][0]), t)
        elif eid in ends:
            since = open_.pop((pid, ends[eid]), None)
            if since is not None:
                spent.setdefault(pid, Counter())[ends[eid]] += t - since
        elif eid in waits:
            state, col = waits[eid]
            spent.setdefault(pid, Counter())[state] += rec[col]
        elif eid == new:
            comm[pid] = rec[new_comm]
        elif eid == fork:
            comm[rec[fork_cols[0]]] = rec[fork_cols[1]]
    # what is still open at the end counts up to the end (a run cut short, a task on a CPU)
    for (pid, state), since in open_.items():
        spent.setdefault(pid, Counter())[state] += end - since
    tasks = {pid: {"comm": comm.get(pid, "?"), "dispatches": c["dispatches"],
                   **{s: round(c[s] / hz, 6) for s in STATES if c[s]}}
             for pid, c in sorted(spent.items()) if pid > 0}
    return {"events": {names[i]: n for i, n in sorted(counts.items(), key=lambda x: (-x[1], names[x[0]]))},
            "total": sum(counts.values()), "seconds": round(end / hz, 6), "tasks": tasks}
