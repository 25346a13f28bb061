"""``trace show --format ftrace``: a trace as trace-cmd / ``trace_pipe`` lines.

    leaker-9       [001]    12.724000: mark_victim: pid=9
    <idle>-0       [002]     0.100000: sched_switch: prev_comm=swapper/2 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=kswapd0 next_pid=2 next_prio=120

Each line is ``comm-pid [cpu] seconds: event: fields``, where comm-pid is the task running
on that CPU when the event happened (as ftrace prints ``current``), the event is the
tracepoint's name without its system for kernel tracepoints and ``sim_*``/``userspace_*``
for the model's own events, and the fields are the tracepoint's ``TP_printk`` text.

``sched_switch`` carries prev_comm, prev_pid, prev_prio, prev_state, next_comm, next_pid and
next_prio as include/trace/events/sched.h prints them.  The model records only dispatches
(a task put on a CPU), so the previous task is reconstructed: the task that was last put on
that CPU, if it has not run elsewhere since and is not the one coming back (else the idle
task, ``swapper/N``).  Its state comes from its own last events: exited (Z for a process, X
for a thread), D after an IO wait, an mmap_lock wait, a throttle or the oom_lock back-off,
S otherwise; priorities are 120 (nice is not traced).  Events with no CPU (samples,
task creation) show ``[---]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TextIO

from .render import _compiled, _pairs, write_batched
from .stream import Trace

_KERNEL_SYSTEMS = ("oom", "vmscan", "compaction", "sched", "signal")
# events after which a task that leaves its CPU is in uninterruptible sleep
_D_STATE = frozenset(("sim:io_wait", "sim:throttle", "sim:oom_lock_contended", "sim:mmap_lock"))


def _event_name(name: str) -> str:
    system, _, event = name.partition(":")
    return event if system in _KERNEL_SYSTEMS else f"{system}_{event}"


def _mark_victim_pid_only(profile: Any) -> bool:
    from ..kernel.profiles import DEFAULT_PROFILE, PROFILES
    prof = PROFILES.get(profile or DEFAULT_PROFILE) or PROFILES[DEFAULT_PROFILE]
    return prof.mark_victim_pid_only


def render_ftrace(trace: Trace, out: TextIO) -> None:
    write_batched(_ftrace_lines(trace), out)


def _ftrace_lines(trace: Trace) -> Iterator[str]:
    names, fields, hz = trace.names, trace.fields, trace.hz
    fmts = _compiled(names, fields)
    short = [_event_name(n) for n in names]
    ids = {n: i for i, n in enumerate(names)}
    sw = ids.get("sched:sched_switch", -1)
    new, fork, exit_ = (ids.get("sim:task_new", -1), ids.get("sched:sched_process_fork", -1),
                        ids.get("sched:sched_process_exit", -1))
    d_ids = frozenset(ids[n] for n in _D_STATE if n in ids)
    # oom:mark_victim prints only its pid before 6.9 (the record keeps every field)
    start, mark = ids.get("sim:run_start", -1), ids.get("oom:mark_victim", -1)
    pid_only = _mark_victim_pid_only(None)
    col = {eid: {f: 4 + i for i, f in enumerate(fields[eid])} for eid in (sw, new, fork) if eid >= 0}
    comm: dict[int, str] = {0: "<idle>"}
    leader: dict[int, bool] = {}
    running: dict[int, int] = {}    # cpu -> the pid last put on it
    where: dict[int, int] = {}      # pid -> the cpu it was last put on
    state: dict[int, str] = {}      # pid -> the state it leaves its CPU in
    last_t = None
    stamp = ""
    for rec in trace.records():
        t, eid, cpu, pid = rec[0], rec[1], rec[2], rec[3]
        if t != last_t:
            last_t = t
            stamp = f"{round(t / hz, 6):12.6f}"
        if eid == sw:
            c = col[sw]
            nxt, nxt_comm = rec[c["next_pid"]], rec[c["next_comm"]]
            prev = running.get(cpu, 0)
            if prev == nxt or where.get(prev) != cpu:
                prev = 0
            prev_comm = comm.get(prev, "?") if prev else f"swapper/{cpu}"
            prev_state = state.get(prev, "S") if prev else "R"
            head = f"{comm.get(prev, '?') if prev else '<idle>'}-{prev}"
            msg = (f"prev_comm={prev_comm} prev_pid={prev} prev_prio=120 prev_state={prev_state} ==> "
                   f"next_comm={nxt_comm} next_pid={nxt} next_prio=120")
            running[cpu] = nxt
            where[nxt] = cpu
            state.pop(nxt, None)
            comm[nxt] = nxt_comm
        else:
            if eid == new:
                comm[pid] = rec[col[new]["comm"]]
                leader[pid] = rec[col[new]["tgid"]] == pid
            elif eid == fork:
                comm[rec[col[fork]["child_pid"]]] = rec[col[fork]["child_comm"]]
            elif eid == exit_:
                state[pid] = "Z" if leader.get(pid, True) else "X"
            elif eid in d_ids and pid >= 0 and state.get(pid) not in ("Z", "X"):
                state[pid] = "D"
            elif eid == start:
                pid_only = _mark_victim_pid_only(dict(zip(fields[eid], rec[4:])).get("profile"))
            cur = running.get(cpu, 0) if cpu >= 0 else -1
            head = "<...>-0" if cur < 0 else (f"{comm.get(cur, '?')}-{cur}" if cur else "<idle>-0")
            fmt = fmts[eid] if not (eid == mark and pid_only) else "pid={}".format
            try:
                msg: Any = fmt(*rec[3:]) if fmt is not None else None
            except (IndexError, ValueError, TypeError, KeyError, AttributeError):
                msg = None
            if msg is None:
                msg = _pairs(fields[eid], rec)
        cpu_col = f"[{cpu:03d}]" if cpu >= 0 else "[---]"
        yield f"{head:>22} {cpu_col} {stamp}: {short[eid]}: {msg}"
